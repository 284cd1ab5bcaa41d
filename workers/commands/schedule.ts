// `fleet-upgrade schedule create|list|delete`: recurring maintenance windows through Temporal Schedules.
// A schedule starts the plan's rollout at the start of each of its windows (Temporal calendars built from
// the windows' cron fields, in their time zone); the rollout itself keeps to the windows, so it stops
// starting VMs when one closes and, if unfinished, goes on in the next. Overlap policy SKIP: while a
// rollout of the plan still runs (paused, waiting for approval, or between windows), no second one starts.
import { ScheduleNotFoundError, type CalendarSpec, type Client, type DayOfWeek, type Month } from '@temporalio/client';
import { ConfigError } from '../../activities/host/validate';
import type { RolloutPlan } from '../../workflows/decisions/rollout-plan';
import { parseCron, type CronSpec } from '../../workflows/decisions/windows';
import { BadInputError, CliError, ExitCode } from '../cli-errors';
import { SCHEDULE_PREFIX } from './common';
import { rolloutStartOptions } from './rollout';

export { SCHEDULE_PREFIX };

const MONTHS: Month[] = [
  'JANUARY',
  'FEBRUARY',
  'MARCH',
  'APRIL',
  'MAY',
  'JUNE',
  'JULY',
  'AUGUST',
  'SEPTEMBER',
  'OCTOBER',
  'NOVEMBER',
  'DECEMBER',
];
const DAYS: DayOfWeek[] = ['SUNDAY', 'MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY'];

/** Sorted values → as few ranges as possible. */
function ranges(values: number[]): Array<{ start: number; end: number }> {
  const out: Array<{ start: number; end: number }> = [];
  for (const v of values) {
    const last = out[out.length - 1];
    if (last && last.end === v - 1) last.end = v;
    else out.push({ start: v, end: v });
  }
  return out;
}

/**
 * A parsed cron start → Temporal calendar specs (which AND every field). Cron's rule that a restricted
 * day-of-month and a restricted day-of-week match either way becomes two calendars.
 */
export function calendarsOf(spec: CronSpec): CalendarSpec[] {
  const base: CalendarSpec = {
    second: ranges(spec.seconds),
    minute: ranges(spec.minutes),
    hour: ranges(spec.hours),
    month: ranges(spec.months).map((r) => ({ start: MONTHS[r.start - 1]!, end: MONTHS[r.end - 1]! })),
  };
  const dom = { dayOfMonth: ranges(spec.days) };
  const dow = { dayOfWeek: ranges(spec.weekdays).map((r) => ({ start: DAYS[r.start]!, end: DAYS[r.end]! })) };
  if (spec.domRestricted && spec.dowRestricted)
    return [
      { ...base, ...dom },
      { ...base, ...dow },
    ];
  return [{ ...base, ...dom, ...dow }];
}

export function scheduleIdOf(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/.test(name))
    throw new BadInputError(`${JSON.stringify(name)} is not a schedule id`);
  return name.startsWith(SCHEDULE_PREFIX) ? name : `${SCHEDULE_PREFIX}${name}`;
}

/** The plan's windows as a schedule spec: one time zone per schedule. */
export function scheduleSpecOf(plan: RolloutPlan, source?: string): { calendars: CalendarSpec[]; timezone: string } {
  if (plan.windows.length === 0) {
    throw new ConfigError('windows', 'a schedule needs at least one maintenance window', source);
  }
  const timezone = plan.windows[0]!.timezone;
  plan.windows.forEach((w, i) => {
    if (w.timezone !== timezone) {
      throw new ConfigError(
        `windows[${i}].timezone`,
        `a schedule has one time zone: windows[0] uses ${timezone}, this one ${w.timezone}; make one plan per zone`,
        source,
      );
    }
  });
  return { calendars: plan.windows.flatMap((w) => calendarsOf(parseCron(w.start))), timezone };
}

export async function createSchedule(
  client: Client,
  plan: RolloutPlan,
  opts: { id?: string; paused?: boolean; source?: string },
): Promise<string> {
  const scheduleId = scheduleIdOf(opts.id ?? plan.name);
  const spec = scheduleSpecOf(plan, opts.source);
  const start = rolloutStartOptions(plan, { plan });
  await client.schedule.create({
    scheduleId,
    spec,
    action: {
      type: 'startWorkflow',
      workflowType: 'rollout',
      taskQueue: start.taskQueue,
      workflowId: start.workflowId,
      args: start.args,
      typedSearchAttributes: start.typedSearchAttributes,
    },
    policies: { overlap: 'SKIP', catchupWindow: '10 minutes' },
    state: { paused: opts.paused === true, note: `rollout ${plan.name} → ${plan.target} at each maintenance window` },
  });
  return scheduleId;
}

export interface ScheduleRow {
  scheduleId: string;
  paused: boolean;
  note?: string;
  nextActionTimes: string[];
  recentRollouts: string[];
}

export async function listSchedules(client: Client): Promise<ScheduleRow[]> {
  const rows: ScheduleRow[] = [];
  for await (const s of client.schedule.list()) {
    if (!s.scheduleId.startsWith(SCHEDULE_PREFIX)) continue;
    const d = await client.schedule.getHandle(s.scheduleId).describe();
    rows.push({
      scheduleId: s.scheduleId,
      paused: d.state.paused,
      ...(d.state.note ? { note: d.state.note } : {}),
      nextActionTimes: d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()),
      recentRollouts: d.info.recentActions.map((a) => a.action.workflow.workflowId),
    });
  }
  return rows.sort((a, b) => a.scheduleId.localeCompare(b.scheduleId));
}

export async function deleteSchedule(client: Client, scheduleId: string): Promise<void> {
  try {
    await client.schedule.getHandle(scheduleId).delete();
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) throw new CliError(`no schedule ${scheduleId}`, ExitCode.failed);
    throw err;
  }
}
