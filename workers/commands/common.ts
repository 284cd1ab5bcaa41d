// What every command's registration and the client-only commands share, kept light: no Temporal SDK, no zod,
// no koffi at load, so `fleet-upgrade --help` and `vm status` load only what they use (workers/cli.ts imports
// each command's module when that command runs). The shared names come from workflows/names.ts, which is
// pure and loads nothing.
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import { PeerError } from '../cli-errors';
import { connectClient, settingsFromEnv, type TemporalSettings } from '../temporal-connection';

export { orchestratorTaskQueue, SAFE_ID, SAFE_LABEL } from '../../workflows/names';

/** workers/commands/schedule.ts: the ids of the rollout schedules. */
export const SCHEDULE_PREFIX = 'rollout-schedule.';

export interface TemporalFlags {
  address?: string;
  namespace?: string;
}

export function temporalFlags(c: Command): Command {
  return c
    .option('--address <host:port>', 'Temporal frontend (env TEMPORAL_ADDRESS; default 127.0.0.1:7233)')
    .option('--namespace <name>', 'Temporal namespace (env TEMPORAL_NAMESPACE; default "default")');
}

/** The flags that override the environment's Temporal settings (a host config's `temporal` comes last). */
export function flagOverrides(f: TemporalFlags): Partial<TemporalSettings> {
  return { ...(f.address ? { address: f.address } : {}), ...(f.namespace ? { namespace: f.namespace } : {}) };
}

export function settingsOf(f: TemporalFlags): TemporalSettings {
  return { ...settingsFromEnv(), ...flagOverrides(f) };
}

/** Runs `use` with a client of the Temporal the flags and environment name; a service that cannot be reached is the peer's failure. */
export async function withClient<T>(flags: TemporalFlags, use: (client: Client) => Promise<T>): Promise<T> {
  const settings = settingsOf(flags);
  const { Client } = await import('@temporalio/client');
  let connection;
  try {
    connection = await connectClient(settings);
  } catch (err) {
    throw new PeerError(`cannot reach Temporal at ${settings.address}: ${(err as Error).message}`);
  }
  try {
    return await use(new Client({ connection, namespace: settings.namespace }));
  } finally {
    await connection.close();
  }
}
