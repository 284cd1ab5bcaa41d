// Where a workflow's wall time goes, read from its history's own timestamps: for each activity, the wait
// until a worker picked it up (dispatch), its execution, and the workflow task that decided the next step.
import type { temporal } from '@temporalio/proto';

type History = temporal.api.history.v1.IHistory;

const SCHEDULED = 10;
const STARTED = 11;
const COMPLETED = 12;
const WORKFLOW_TASK_SCHEDULED = 5;

export interface ActivityLatency {
  activity: string;
  /** Scheduled → started: the Temporal service handing the task to a polling worker. */
  dispatchMs: number;
  /** Started → completed: the activity's own work. */
  executeMs: number;
  /** Completed → the next activity scheduled: a workflow task round trip through the orchestrator worker. */
  decideMs: number | null;
}

function ms(t: temporal.api.history.v1.IHistoryEvent['eventTime']): number {
  if (!t) return NaN;
  return Number(t.seconds ?? 0) * 1000 + (t.nanos ?? 0) / 1e6;
}

export function activityLatencies(history: History): ActivityLatency[] {
  const events = history.events ?? [];
  const scheduled = new Map<number, { name: string; at: number }>();
  const started = new Map<number, number>();
  const out: (ActivityLatency & { completedAt: number })[] = [];
  let lastCompleted: (ActivityLatency & { completedAt: number }) | undefined;
  for (const e of events) {
    const type = Number(e.eventType);
    const id = Number(e.eventId);
    if (type === SCHEDULED) {
      const name = e.activityTaskScheduledEventAttributes?.activityType?.name ?? '?';
      scheduled.set(id, { name, at: ms(e.eventTime) });
      if (lastCompleted && lastCompleted.decideMs === null)
        lastCompleted.decideMs = ms(e.eventTime) - lastCompleted.completedAt;
    } else if (type === STARTED) {
      started.set(Number(e.activityTaskStartedEventAttributes?.scheduledEventId), ms(e.eventTime));
    } else if (type === COMPLETED) {
      const sid = Number(e.activityTaskCompletedEventAttributes?.scheduledEventId);
      const s = scheduled.get(sid);
      const st = started.get(sid);
      if (!s || st === undefined) continue;
      const done = ms(e.eventTime);
      lastCompleted = {
        activity: s.name,
        dispatchMs: st - s.at,
        executeMs: done - st,
        decideMs: null,
        completedAt: done,
      };
      out.push(lastCompleted);
    } else if (type === WORKFLOW_TASK_SCHEDULED) {
      /* part of decideMs */
    }
  }
  return out.map(({ completedAt: _c, ...rest }) => rest);
}
