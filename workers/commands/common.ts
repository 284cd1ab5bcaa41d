// What every command's registration and the client-only commands share, kept light: no Temporal SDK, no zod,
// no koffi at load, so `fleet-upgrade --help` and `vm status` load only what they use (workers/cli.ts imports
// each command's module when that command runs). The shared names come from workflows/names.ts, which is
// pure and loads nothing.
import type { Command } from 'commander';

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
