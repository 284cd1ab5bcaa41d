// The host worker's own config file: its host id, runtime folder, the allow-list of QEMU binaries by
// version label, limits, and how to reach Temporal. This file is the trust boundary: nothing arriving
// through Temporal names a path or a binary, only version labels resolved here.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { SIMULATOR_PATH_PREFIX, SimulatorSchema, simulatorPath, type SimulatorSpec } from './simulator-spec';
import { absPath, ConfigError, parseYamlText, safeId, safeLabel, validate } from './validate';
import { VmSpecSchema } from './vm-spec';
import { hostTaskQueue as hostQueueOf } from '../../workflows/names';

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');

export { SimulatorSchema, type SimulatorSpec } from './simulator-spec';

/**
 * A binary as resolved. A simulator's `path` is only what it is shown as (simulatorPath): the launcher that
 * runs a binary is chosen from this entry (launcherFor in qemu-launcher.ts), never from its path.
 */
export interface BinaryEntry {
  path: string;
  dataDirs: string[];
  env: Record<string, string>;
  simulator?: SimulatorSpec;
}

/** Exactly one of `path` (a qemu-system-* executable) or `simulator` (VMs inside the host worker's process). */
export const BinarySchema = z
  .strictObject({
    /** The qemu-system-* executable. */
    path: absPath
      .refine((p) => !p.startsWith(SIMULATOR_PATH_PREFIX), `${SIMULATOR_PATH_PREFIX} is reserved for simulators`)
      .optional(),
    /** Instead of path: simulated QEMUs run inside the host worker and die with it. */
    simulator: SimulatorSchema.optional(),
    /** Firmware/data folders, passed as `-L` in order. */
    dataDirs: z.array(absPath).default([]),
    /** Extra environment for the QEMU process (it otherwise gets only PATH). */
    env: z.record(envName, z.string()).default({}),
  })
  .superRefine((b, ctx) => {
    if (b.path === undefined && b.simulator === undefined)
      ctx.addIssue({ code: 'custom', path: ['path'], message: 'is required (or give simulator)' });
    if (b.path !== undefined && b.simulator !== undefined)
      ctx.addIssue({ code: 'custom', path: ['simulator'], message: 'give path or simulator, not both' });
    if (b.simulator && b.dataDirs.length)
      ctx.addIssue({ code: 'custom', path: ['dataDirs'], message: 'only with path' });
    if (b.simulator && Object.keys(b.env).length)
      ctx.addIssue({ code: 'custom', path: ['env'], message: 'only with path' });
  })
  .transform((b): BinaryEntry =>
    b.simulator
      ? { path: simulatorPath(b.simulator), dataDirs: [], env: {}, simulator: b.simulator }
      : { path: b.path!, dataDirs: b.dataDirs, env: b.env },
  );

export const LimitsSchema = z.strictObject({
  maxConcurrentMigrations: z.int().min(1).max(64).default(1),
  qmpTimeoutMs: z.int().min(100).max(600_000).default(10_000),
  /** How long a launched QEMU may take until its QMP socket accepts a connection. */
  launchTimeoutMs: z.int().min(100).max(600_000).default(30_000),
  /** Grace between SIGTERM and SIGKILL when a QEMU process is stopped. */
  killGraceMs: z.int().min(0).max(600_000).default(5_000),
  /**
   * How long a stopping host worker (SIGTERM) lets running activities finish — a migration and its switchover
   * among them — before it leaves them; a migration left running is picked up by the next worker's retry.
   * The systemd unit's TimeoutStopSec must be longer.
   */
  shutdownGraceMs: z.int().min(0).max(3_600_000).default(120_000),
});

export const TlsSchema = z
  .strictObject({
    serverName: z.string().min(1).optional(),
    serverRootCACertFile: absPath.optional(),
    clientCertFile: absPath.optional(),
    clientKeyFile: absPath.optional(),
  })
  .refine((t) => !t.clientCertFile === !t.clientKeyFile, {
    message: 'clientCertFile and clientKeyFile must be given together',
    path: ['clientCertFile'],
  });

export const TemporalSchema = z
  .strictObject({
    address: z
      .string()
      .regex(/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/, 'must be host:port')
      .default('127.0.0.1:7233'),
    namespace: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/, 'must be a namespace name')
      .default('default'),
    tls: TlsSchema.optional(),
    /** Inline API key (prefer apiKeyEnv). */
    apiKey: z.string().min(1).optional(),
    /** Name of the environment variable holding the API key. */
    apiKeyEnv: envName.optional(),
  })
  .refine((t) => !(t.apiKey && t.apiKeyEnv), { message: 'give apiKey or apiKeyEnv, not both', path: ['apiKey'] });

/**
 * The runtime folder: absolute, named without `..` (normalizing one away would silently put the folder
 * elsewhere than the config reads), and not `/`, which the worker would otherwise make owner-only (0700).
 */
export const RuntimeDirSchema = z
  .string()
  .refine((p) => !p.split('/').includes('..'), "must not contain '..'")
  .pipe(absPath)
  .refine((p) => p !== '/', 'must not be the filesystem root');

export const HostConfigSchema = z
  .strictObject({
    hostId: safeId,
    runtimeDir: RuntimeDirSchema,
    binaries: z
      .record(safeLabel, BinarySchema)
      .refine((b) => Object.keys(b).length > 0, 'must allow at least one QEMU binary'),
    limits: LimitsSchema.prefault({}),
    /**
     * The network namespace this host's QEMUs start in (`ip netns exec`), where the taps of its VMs live.
     * For hosts that keep VM networking apart from the host's own; most hypervisors leave it out.
     */
    /**
     * Where the RAM files of VMs with `memoryBackend: file` live (default `<runtimeDir>/mem`): a tmpfs such as
     * /dev/shm, or a hugetlbfs mount such as /dev/hugepages for huge pages. Both processes of an upgrade map
     * the same file, so an upgrade never copies that RAM.
     */
    memoryDir: absPath.optional(),
    netns: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be a network namespace name')
      .optional(),
    temporal: TemporalSchema.prefault({}),
    /**
     * VMs the host worker launches when it starts (`fleet-upgrade host-worker`), skipping any whose record
     * names a live process. Meant for simulator binaries, whose VMs live only as long as the worker.
     */
    launchAtStart: z.array(VmSpecSchema).max(100_000).optional(),
  })
  .superRefine((c, ctx) => {
    const ids = new Set<string>();
    c.launchAtStart?.forEach((spec, i) => {
      if (!Object.hasOwn(c.binaries, spec.binary))
        ctx.addIssue({
          code: 'custom',
          path: ['launchAtStart', i, 'binary'],
          message: `no binary ${spec.binary} in binaries`,
        });
      if (ids.has(spec.id))
        ctx.addIssue({ code: 'custom', path: ['launchAtStart', i, 'id'], message: `duplicate VM id ${spec.id}` });
      ids.add(spec.id);
    });
  });

export type HostConfig = z.output<typeof HostConfigSchema>;
export type ResolvedBinary = BinaryEntry & { label: string };

/** Validates already-parsed data (e.g. from a test) as a host config. */
export function parseHostConfig(data: unknown, source?: string): HostConfig {
  return validate(HostConfigSchema, data, source);
}

export function parseHostConfigYaml(text: string, source?: string): HostConfig {
  return parseHostConfig(parseYamlText(text, source), source);
}

export async function loadHostConfig(file: string): Promise<HostConfig> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read host config: ${(err as Error).message}`, abs);
  }
  return parseHostConfigYaml(text, abs);
}

/** The allow-listed binary for a version label; anything else is refused with a ConfigError on `field`. */
export function resolveBinary(config: HostConfig, label: string, field = 'binary'): ResolvedBinary {
  const entry = Object.hasOwn(config.binaries, label) ? config.binaries[label] : undefined;
  if (!entry) {
    throw new ConfigError(
      field,
      `version label ${JSON.stringify(label)} is not allowed on host ${config.hostId} (allowed: ${Object.keys(config.binaries).join(', ')})`,
    );
  }
  return { label, ...entry };
}

/**
 * The folder of this host's RAM files in its memoryDir (`fleet-upgrade-<hostId>`, owner-only, made by the
 * worker; the mount itself is left as it is), or undefined for the runtime folder's `mem/`.
 */
export function ramDir(config: Pick<HostConfig, 'hostId' | 'memoryDir'>): string | undefined {
  return config.memoryDir ? path.join(config.memoryDir, `fleet-upgrade-${config.hostId}`) : undefined;
}

/** The host worker's task queue. */
export function hostTaskQueue(config: Pick<HostConfig, 'hostId'>): string {
  return hostQueueOf(config.hostId);
}

/** The API key, from the config or the environment variable it names. */
export function temporalApiKey(config: HostConfig, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const t = config.temporal;
  if (t.apiKey) return t.apiKey;
  if (!t.apiKeyEnv) return undefined;
  const v = env[t.apiKeyEnv];
  if (!v) throw new ConfigError('temporal.apiKeyEnv', `environment variable ${t.apiKeyEnv} is not set`);
  return v;
}
