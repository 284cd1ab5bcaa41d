// The backend-transfer dialects, as data. Each stage of the (unmerged) backend-transfer interface is one
// entry: how to recognise it from schema shapes and how to speak it. Detection never looks at versions.
// The next API change is one more entry here.
import type { QapiSchema } from './qapi-schema';

export const dialectNames = ['none', 'backend-transfer-bool', 'backend-transfer-list', 'local'] as const;
export type DialectName = (typeof dialectNames)[number];

/** A shape the schema must have: an argument of a command with a given described type. */
export interface ArgumentShape {
  command: string;
  member: string;
  type: string;
}

export interface Dialect {
  name: DialectName;
  /** All must hold for the schema to speak this dialect. */
  requires: ArgumentShape[];
  /** A command that lists the transferable backends as `[{path}]`, where the dialect has one. */
  transferableQuery?: string;
  /** A per-device QOM property that marks a device's backend for transfer, where the dialect has one. */
  deviceProperty?: string;
  /** Tap netdev options that permit a local migration to take the tap (newest name first). */
  tapPermitOptions?: string[];
  /** The `migrate-set-parameters` arguments enabling transfer of these backends, on either side. */
  migrationParameters(backends: string[]): Record<string, unknown>;
}

/** Most specific first: the first entry whose shapes all hold wins; `none` always holds. */
export const dialectTable: readonly Dialect[] = [
  {
    name: 'local',
    requires: [{ command: 'migrate-set-parameters', member: 'local', type: 'bool' }],
    tapPermitOptions: ['x-permit-local-migration', 'local-migration-supported'],
    migrationParameters: () => ({ local: true }),
  },
  {
    name: 'backend-transfer-list',
    requires: [{ command: 'migrate-set-parameters', member: 'backend-transfer', type: '[str]' }],
    transferableQuery: 'query-backend-transfer-support',
    migrationParameters: (backends) => ({ 'backend-transfer': backends }),
  },
  {
    name: 'backend-transfer-bool',
    requires: [{ command: 'migrate-set-parameters', member: 'backend-transfer', type: 'bool' }],
    deviceProperty: 'backend-transfer',
    migrationParameters: (backends) => ({ 'backend-transfer': backends.length > 0 }),
  },
  { name: 'none', requires: [], migrationParameters: () => ({}) },
];

export function dialectByName(name: DialectName): Dialect {
  const d = dialectTable.find((x) => x.name === name);
  if (!d) throw new Error(`unknown dialect ${name}`);
  return d;
}

export function detectDialect(schema: QapiSchema): Dialect {
  for (const d of dialectTable) {
    if (d.requires.every((s) => schema.describe(schema.commandArgType(s.command, s.member)) === s.type)) return d;
  }
  return dialectByName('none');
}

/** Which tap option, of those the dialect knows, this build accepts. */
export function tapPermitOption(schema: QapiSchema, dialect: Dialect): string | undefined {
  const tap = schema.variantOfCommandArg('netdev_add', 'tap');
  if (!tap) return undefined;
  return dialect.tapPermitOptions?.find((o) => schema.memberType(tap, o) !== undefined);
}
