// The floor's workers and one run of it (floor-workflow.ts), for the one-VM bench and the fleet bench: its
// workflow on a queue of its own, its activities on one queue per host, as the orchestrator and host workers;
// and, for the on-host shape, one worker per host that runs the workflow and its local activities together.
import type { Client, WorkflowHandle } from '@temporalio/client';
import { bundleWorkflowCode, Worker, type NativeConnection, type WorkerOptions } from '@temporalio/worker';
import { upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import type { FloorActivities } from './floor-workflow';

const FLOOR_WORKFLOWS = 'bench-floor';

/** Where the floor's workflow runs and its steps go. */
export type FloorShape = 'orchestrator' | 'on-host';

/** The activity queue of the floor's host `h`. */
const floorHostQueue = (h: number) => `bench-floor-host-${h}`;
/** The queue of the floor's host `h` in the on-host shape: its workflow and its local steps. */
const floorOnHostQueue = (h: number) => `bench-floor-on-host-${h}`;

/** The floor's workers for `hosts` hosts, in both shapes (not yet running). */
export async function createFloorWorkers(
  connection: NativeConnection,
  namespace: string,
  hosts: number,
  bundleLogger: NonNullable<Parameters<typeof bundleWorkflowCode>[0]['logger']>,
): Promise<Worker[]> {
  const workflowBundle: WorkerOptions['workflowBundle'] = await bundleWorkflowCode({
    workflowsPath: require.resolve('./floor-workflow'),
    logger: bundleLogger,
  });
  const activities: FloorActivities = { step: async (name) => name };
  const each = (queue: (h: number) => string, o: Partial<WorkerOptions>) =>
    Array.from({ length: hosts }, (_, h) => Worker.create({ connection, namespace, taskQueue: queue(h), ...o }));
  return [
    await Worker.create({ connection, namespace, taskQueue: FLOOR_WORKFLOWS, workflowBundle }),
    ...(await Promise.all(each(floorHostQueue, { activities }))),
    ...(await Promise.all(each(floorOnHostQueue, { activities, workflowBundle }))),
  ];
}

/** Starts one empty upgrade of host `h` as the saga is started: with its search attributes. */
export function startEmptyUpgrade(
  client: Client,
  workflowId: string,
  h: number,
  shape: FloorShape = 'orchestrator',
): Promise<WorkflowHandle> {
  const hostId = `floor-${h}`;
  const typedSearchAttributes = upgradeVmSearchAttributes({ hostId, vmId: workflowId, target: 'floor' });
  return shape === 'orchestrator'
    ? client.workflow.start('emptyUpgrade', {
        taskQueue: FLOOR_WORKFLOWS,
        workflowId,
        args: [floorHostQueue(h)],
        typedSearchAttributes,
      })
    : client.workflow.start('emptyUpgradeOnHost', {
        taskQueue: floorOnHostQueue(h),
        workflowId,
        args: [],
        typedSearchAttributes,
      });
}
