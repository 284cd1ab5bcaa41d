// The orchestrator worker: every workflow, task queue `fleet-upgrade`, no activities of its own.
import path from 'node:path';
import { Worker, type WorkerOptions } from '@temporalio/worker';
import { connectWorker, type TemporalSettings } from './temporal-connection';
import { createFleetActivities } from '../activities/fleet/task-queues';
import { fleetSinks } from '../activities/fleet/telemetry';

export const orchestratorTaskQueue = 'fleet-upgrade';

/**
 * The workflow code: compiled JavaScript next to this file, or the TypeScript sources under tests. The entry
 * (workflow-bundle.ts) is workflows/ plus fleetInventory.
 */
export function workflowsPath(): string {
  return require.resolve(path.join(__dirname, 'workflow-bundle'));
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
    // fleet: rollout preflight asks Temporal who polls each host queue; workflow metrics leave by sink.
    activities: createFleetActivities(connection.workflowService, settings.namespace),
    sinks: fleetSinks(),
  });
}
