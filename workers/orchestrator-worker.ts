// The orchestrator worker: every workflow, task queue `fleet-upgrade`, no activities of its own.
import path from 'node:path';
import { Worker, type WorkerOptions } from '@temporalio/worker';
import { connectWorker, type TemporalSettings } from './temporal-connection';
import { createFleetActivities } from '../activities/fleet/task-queues';
import { fleetSinks } from './telemetry';

import { orchestratorTaskQueue } from '../workflows/names';

export { orchestratorTaskQueue };

/**
 * The workflow code: workflows/index.ts, every workflow the orchestrator runs (compiled JavaScript in dist/,
 * or the TypeScript sources under tests).
 */
export function workflowsPath(): string {
  return require.resolve(path.join(__dirname, '..', 'workflows'));
}

export async function createOrchestratorWorker(
  settings: TemporalSettings,
  bundle?: WorkerOptions['workflowBundle'],
): Promise<Worker> {
  const connection = await connectWorker(settings);
  return Worker.create({
    connection,
    namespace: settings.namespace,
    taskQueue: orchestratorTaskQueue,
    ...(bundle ? { workflowBundle: bundle } : { workflowsPath: workflowsPath() }),
    identity: `orchestrator/${process.pid}`,
    // The rollout's preflight asks Temporal who polls each host queue; workflow metrics leave by sink.
    activities: createFleetActivities(connection.workflowService, settings.namespace),
    sinks: fleetSinks(),
  });
}
