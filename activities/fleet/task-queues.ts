// Who polls a task queue, as Temporal itself reports it (DescribeTaskQueue): the liveness of host workers
// comes from the service, not from a registry of ours. Used by the orchestrator worker's activities
// (rollout preflight) and by `fleet-upgrade hosts`.
import { temporal } from '@temporalio/proto';

export interface Poller {
  identity: string;
  /** How long ago the service last saw a poll from it, ms (a long poll lasts up to about a minute). */
  ageMs: number | null;
}

/** A poller seen this recently counts as live: long polls last about a minute, then are renewed. */
export const LIVE_POLLER_MS = 90_000;

/** The part of a workflow service both `Connection` and `NativeConnection` expose. */
export interface TaskQueueService {
  describeTaskQueue(
    req: temporal.api.workflowservice.v1.IDescribeTaskQueueRequest,
  ): Promise<temporal.api.workflowservice.v1.IDescribeTaskQueueResponse>;
}

function toMs(ts: temporal.api.workflowservice.v1.IDescribeTaskQueueResponse['pollers']): Poller[] {
  const now = Date.now();
  return (ts ?? []).map((p) => {
    const t = p.lastAccessTime;
    const ms = t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : null;
    return { identity: p.identity ?? '', ageMs: ms === null ? null : Math.max(0, now - ms) };
  });
}

/** The activity pollers of each queue. */
export async function activityPollers(
  service: TaskQueueService,
  namespace: string,
  queues: string[],
): Promise<Record<string, Poller[]>> {
  const out: Record<string, Poller[]> = {};
  await Promise.all(
    queues.map(async (name) => {
      const res = await service.describeTaskQueue({
        namespace,
        taskQueue: { name, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
        taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
      });
      out[name] = toMs(res.pollers);
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
