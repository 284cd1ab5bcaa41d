// The floor's workers and one run of it (floor-workflow.ts), for the one-VM bench and the fleet bench: its
// workflow on a queue of its own, its activities on one queue per host, as the orchestrator and host workers.
import type { Client, WorkflowHandle } from '@temporalio/client';
import { bundleWorkflowCode, Worker, type NativeConnection, type WorkerOptions } from '@temporalio/worker';
import { upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import type { FloorActivities } from './floor-workflow';

const FLOOR_WORKFLOWS = 'bench-floor';

/** The activity queue of the floor's host `h`. */
export const floorHostQueue = (h: number) => `bench-floor-host-${h}`;

/** One worker for the floor's workflow and one per host queue for its activities (not yet running). */
export async function createFloorWorkers(
  connection: NativeConnection,
  namespace: string,
  hostQueues: string[],
  bundleLogger: NonNullable<Parameters<typeof bundleWorkflowCode>[0]['logger']>,
): Promise<Worker[]> {
  const workflowBundle: WorkerOptions['workflowBundle'] = await bundleWorkflowCode({
    workflowsPath: require.resolve('./floor-workflow'),
    logger: bundleLogger,
  });
  const activities: FloorActivities = { step: async (name) => name };
  return [
    await Worker.create({ connection, namespace, taskQueue: FLOOR_WORKFLOWS, workflowBundle }),
    ...(await Promise.all(
      hostQueues.map((taskQueue) => Worker.create({ connection, namespace, taskQueue, activities })),
    )),
  ];
}

/** Starts one empty upgrade as the saga is started: with its search attributes. */
export function startEmptyUpgrade(client: Client, workflowId: string, hostQueue: string): Promise<WorkflowHandle> {
  return client.workflow.start('emptyUpgrade', {
    taskQueue: FLOOR_WORKFLOWS,
    workflowId,
    args: [hostQueue],
    typedSearchAttributes: upgradeVmSearchAttributes({ hostId: hostQueue, vmId: workflowId, target: 'floor' }),
  });
}
