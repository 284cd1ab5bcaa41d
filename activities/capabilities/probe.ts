// The capability probe: what a running VM's QEMU is and can do, asked over QMP.
import { z } from 'zod';
import type { QmpClient } from '../qmp/client';
import { QmpError } from '../qmp/errors';
import { dialectByName, type DialectName } from './dialects';
import { buildFeatures, vmStrategies, type BuildFeatures, type GuestMemory, type Strategy } from './features';
import { QapiSchema } from './qapi-schema';

export interface VmCapabilities {
  qemuVersion: string;
  package: string;
  status: string;
  /** The concrete machine type, e.g. `pc-i440fx-7.2` (never an alias such as `pc`). */
  machine: string;
  strategies: Strategy[];
  backendTransfer: {
    dialect: DialectName;
    /** Device ids or QOM paths the peer reports transferable; null where the dialect cannot tell. */
    transferable: string[] | null;
  };
  memory: GuestMemory;
  features: BuildFeatures;
}

const versionSchema = z.object({
  qemu: z.object({ major: z.number(), minor: z.number(), micro: z.number() }),
  package: z.string(),
});
const statusSchema = z.object({ status: z.string(), running: z.boolean() });
const qomListSchema = z.array(z.object({ name: z.string(), type: z.string() }));
const transferSupportSchema = z.array(z.object({ path: z.string() }));

/** Reads QEMU's version string as `major.minor.micro`. */
export async function queryVersion(qmp: QmpClient): Promise<{ version: string; package: string }> {
  const v = versionSchema.parse(await qmp.execute('query-version'));
  return { version: `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro}`, package: v.package.trim() };
}

/** QEMU's run state (`query-status`). */
export async function queryStatus(qmp: QmpClient): Promise<{ status: string; running: boolean }> {
  return statusSchema.parse(await qmp.execute('query-status'));
}

export async function querySchema(qmp: QmpClient): Promise<QapiSchema> {
  return QapiSchema.parse(await qmp.execute('query-qmp-schema'));
}

/** `pc-i440fx-7.2-machine` → `pc-i440fx-7.2`. */
export function machineFromQomType(qomType: string): string {
  return qomType.replace(/-machine$/, '');
}

/**
 * Probes a running VM. `known` are the schema-derived features of its binary when a cached binary probe
 * already has them (the schema is a few hundred KiB to fetch and read).
 */
export async function probeVm(qmp: QmpClient, known?: BuildFeatures): Promise<VmCapabilities> {
  // Independent questions go out together; QEMU answers them in order on one connection.
  const [version, status, machineType, features, memory] = await Promise.all([
    queryVersion(qmp),
    queryStatus(qmp),
    qmp.execute('qom-get', { path: '/machine', property: 'type' }).then((t) => z.string().parse(t)),
    known ?? querySchema(qmp).then(buildFeatures),
    queryGuestMemory(qmp),
  ]);
  return {
    qemuVersion: version.version,
    package: version.package,
    status: status.status,
    machine: machineFromQomType(machineType),
    strategies: vmStrategies(features, memory),
    backendTransfer: { dialect: features.dialect, transferable: await queryTransferable(qmp, features.dialect) },
    memory,
    features,
  };
}

/** The machine's RAM backend (type, share) and `aux-ram-share`, as QOM reports them. */
export async function queryGuestMemory(qmp: QmpClient): Promise<GuestMemory> {
  const [backendPath, auxRamShare] = await Promise.all([
    optionalProperty(qmp, '/machine', 'memory-backend', z.string()),
    optionalProperty(qmp, '/machine', 'aux-ram-share', z.boolean()),
  ]);
  if (!backendPath) return { backend: null, shared: false, auxRamShare };
  const [backend, shared] = await Promise.all([
    optionalProperty(qmp, backendPath, 'type', z.string()),
    optionalProperty(qmp, backendPath, 'share', z.boolean()),
  ]);
  return { backend, shared: shared === true, auxRamShare };
}

/** The machine's `aux-ram-share` alone (null where the build has no such property): one question. */
export async function queryAuxRamShare(qmp: QmpClient): Promise<boolean | null> {
  return optionalProperty(qmp, '/machine', 'aux-ram-share', z.boolean());
}

/** The backends this peer says it can hand over now, in its dialect's own way. */
export async function queryTransferable(qmp: QmpClient, dialectName: DialectName): Promise<string[] | null> {
  const dialect = dialectByName(dialectName);
  if (dialect.name === 'none') return [];
  if (dialect.transferableQuery) {
    return transferSupportSchema.parse(await qmp.execute(dialect.transferableQuery)).map((e) => e.path);
  }
  if (dialect.deviceProperty) {
    const property = dialect.deviceProperty;
    const children = qomListSchema
      .parse(await qmp.execute('qom-list', { path: '/machine/peripheral' }))
      .filter((c) => c.type.startsWith('child<'));
    // Devices whose per-device property is on (it defaults to off on older machine types).
    const withProperty = await Promise.all(
      children.map(async (c) =>
        (await optionalProperty(qmp, `/machine/peripheral/${c.name}`, property, z.boolean())) ? c.name : undefined,
      ),
    );
    return withProperty.filter((id): id is string => id !== undefined);
  }
  return null;
}

/** A QOM property, or null where the object or property does not exist on this build. */
async function optionalProperty<T>(qmp: QmpClient, path: string, property: string, schema: z.ZodType<T>) {
  try {
    return schema.parse(await qmp.execute('qom-get', { path, property }));
  } catch (err) {
    if (err instanceof QmpError) return null;
    throw err;
  }
}
