// Who polls a task queue, as Temporal itself reports it (DescribeTaskQueue): the liveness of host workers
// comes from the service, not from a registry of ours. Used by the orchestrator worker's activities
// (rollout preflight) and by `fleet-upgrade hosts`.
import { temporal } from '@temporalio/proto';

export interface Poller {
  identity: string;
  /** How long ago the service last saw a poll from it, ms (a long poll lasts up to about a minute). */
  ageMs: number | null;
}

export { LIVE_POLLER_MS } from '../../workflows/names';

/** The part of a workflow service both `Connection` and `NativeConnection` expose. */
export interface TaskQueueService {
  describeTaskQueue(
    req: temporal.api.workflowservice.v1.IDescribeTaskQueueRequest,
  ): Promise<temporal.api.workflowservice.v1.IDescribeTaskQueueResponse>;
}

type PollerInfo = NonNullable<temporal.api.workflowservice.v1.IDescribeTaskQueueResponse['pollers']>[number];

function toPollers(list: PollerInfo[]): Poller[] {
  const now = Date.now();
  return list.map((p) => {
    const t = p.lastAccessTime;
    const ms = t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : null;
    return { identity: p.identity ?? '', ageMs: ms === null ? null : Math.max(0, now - ms) };
  });
}

/** One poller per identity, the most recent sighting. */
function merge(lists: Poller[][]): Poller[] {
  const by = new Map<string, Poller>();
  for (const p of lists.flat()) {
    const seen = by.get(p.identity);
    if (!seen || (p.ageMs !== null && (seen.ageMs === null || p.ageMs < seen.ageMs))) by.set(p.identity, p);
  }
  return [...by.values()].sort((a, b) => a.identity.localeCompare(b.identity));
}

/**
 * The activity pollers of each queue. Both views the service offers are read and merged: the classic one
 * (the root partition) and the enhanced one (all partitions, by build id), where the server supports it.
 */
export async function activityPollers(
  service: TaskQueueService,
  namespace: string,
  queues: string[],
): Promise<Record<string, Poller[]>> {
  const out: Record<string, Poller[]> = {};
  const activity = temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY;
  await Promise.all(
    queues.map(async (name) => {
      const taskQueue = { name, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL };
      const classic = service.describeTaskQueue({ namespace, taskQueue, taskQueueType: activity });
      const enhanced = service
        .describeTaskQueue({
          namespace,
          taskQueue,
          apiMode: temporal.api.enums.v1.DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED,
          taskQueueTypes: [activity],
          reportPollers: true,
          versions: { unversioned: true, allActive: true },
        })
        .catch(() => undefined);
      const lists: Poller[][] = [toPollers((await classic).pollers ?? [])];
      const e = await enhanced;
      for (const v of Object.values(e?.versionsInfo ?? {})) {
        for (const t of Object.values(v.typesInfo ?? {})) lists.push(toPollers(t.pollers ?? []));
      }
      out[name] = merge(lists);
    }),
  );
  return out;
}

/** The orchestrator worker's activities; they talk to Temporal only. */
export interface FleetActivities {
  taskQueuePollers(input: { queues: string[] }): Promise<Record<string, Poller[]>>;
}

export function createFleetActivities(service: TaskQueueService, namespace: string): FleetActivities {
  return {
    taskQueuePollers: ({ queues }) => activityPollers(service, namespace, queues),
  };
}
