// What a QEMU build can do for a migration, read from its schema alone. Pure.
import { detectDialect, tapPermitOption, type DialectName } from './dialects';
import type { QapiSchema } from './qapi-schema';

export const strategyNames = ['backend-transfer', 'cpr-transfer', 'cpr-exec', 'plain'] as const;
export type Strategy = (typeof strategyNames)[number];

export interface BuildFeatures {
  dialect: DialectName;
  /** Values of the migration `mode` parameter (`normal`, `cpr-reboot`, `cpr-transfer`, `cpr-exec`). */
  migrationModes: string[];
  /** The tap option permitting local migration, in the `local` dialect. */
  tapPermitOption?: string;
  /** The `x-ignore-shared` capability exists (shared RAM left in place by a plain migration). */
  ignoreShared: boolean;
}

export function buildFeatures(schema: QapiSchema): BuildFeatures {
  const dialect = detectDialect(schema);
  const modes = schema.enumValues(schema.commandArgType('migrate-set-parameters', 'mode'));
  const capabilityList = schema.commandArgType('migrate-set-capabilities', 'capabilities');
  const capabilityEntry = capabilityList ? schema.elementType(capabilityList) : undefined;
  const capability = capabilityEntry ? schema.memberType(capabilityEntry, 'capability') : undefined;
  const option = tapPermitOption(schema, dialect);
  return {
    dialect: dialect.name,
    migrationModes: modes,
    ...(option ? { tapPermitOption: option } : {}),
    ignoreShared: schema.enumValues(capability).includes('x-ignore-shared'),
  };
}

export interface GuestMemory {
  /** QOM type of the RAM backend, e.g. `memory-backend-memfd`; null for anonymous RAM. */
  backend: string | null;
  shared: boolean;
  /** The machine's `aux-ram-share`; null where the build has no such property. */
  auxRamShare: boolean | null;
}

/** RAM that survives into a new process by fd: memfd or file, shared, and aux RAM shared too. */
export function memoryAllowsCpr(memory: GuestMemory): boolean {
  const fdBacked = memory.backend === 'memory-backend-memfd' || memory.backend === 'memory-backend-file';
  return fdBacked && memory.shared && memory.auxRamShare === true;
}

/** The strategies a VM on this build can use, in preference order. */
export function vmStrategies(features: BuildFeatures, memory: GuestMemory): Strategy[] {
  const out: Strategy[] = [];
  if (features.dialect !== 'none') out.push('backend-transfer');
  if (features.migrationModes.includes('cpr-transfer') && memoryAllowsCpr(memory)) out.push('cpr-transfer');
  if (features.migrationModes.includes('cpr-exec') && memoryAllowsCpr(memory)) out.push('cpr-exec');
  out.push('plain');
  return out;
}
