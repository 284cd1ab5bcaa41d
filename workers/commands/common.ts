// What every command's registration and the client-only commands share, kept light: no Temporal SDK, no zod,
// no koffi at load, so `fleet-upgrade --help` and `vm status` load only what they use (workers/cli.ts imports
// each command's module when that command runs). The constants mirror their owners' (test/integration/
// json-output.test.ts checks they agree): the orchestrator's task queue (workers/orchestrator-worker.ts,
// which loads @temporalio/worker) and the id and label patterns (activities/host/validate.ts, which loads zod).
import type { Command } from 'commander';

/** The orchestrator worker's task queue: workers/orchestrator-worker.ts `orchestratorTaskQueue`. */
export const orchestratorTaskQueue = 'fleet-upgrade';

/** activities/host/validate.ts `SAFE_ID`: host and VM ids. */
export const SAFE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** activities/host/validate.ts `SAFE_LABEL`: QEMU version labels. */
export const SAFE_LABEL = /^[a-z0-9][a-z0-9._-]{0,31}$/;

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
