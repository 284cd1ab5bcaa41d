// `fleet-upgrade schedule create|list|delete`: recurring maintenance windows through Temporal Schedules.
// A schedule starts the plan's rollout at the start of each of its windows (Temporal calendars built from
// the windows' cron fields, in their time zone); the rollout itself keeps to the windows, so it stops
// starting VMs when one closes and, if unfinished, goes on in the next. Overlap policy SKIP: while a
// rollout of the plan still runs (paused, waiting for approval, or between windows), no second one starts.
import { ScheduleNotFoundError, type CalendarSpec, type Client, type DayOfWeek, type Month } from '@temporalio/client';
import type { Command } from 'commander';
import { loadPlan } from '../../activities/fleet/plan-file';
import { ConfigError } from '../../activities/host/validate';
import type { RolloutPlan } from '../../workflows/decisions/rollout-plan';
import { parseCron, type CronSpec } from '../../workflows/decisions/windows';
import { BadInputError, CliError, ExitCode } from '../cli-errors';
import { rolloutStartOptions, temporalFlags, withFleetClient, type TemporalFlags } from './rollout';

export const SCHEDULE_PREFIX = 'rollout-schedule.';

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

export function registerScheduleCommands(program: Command): void {
  const s = program.command('schedule').description('recurring maintenance windows (Temporal Schedules)');

  temporalFlags(
    s
      .command('create')
      .description("start the plan's rollout at each of its maintenance windows")
      .requiredOption('--plan <file>', 'the rollout plan (YAML); its windows make the schedule')
      .option('--id <name>', `schedule id (default ${SCHEDULE_PREFIX}<plan name>)`)
      .option('--paused', 'create it paused'),
  ).action(async (opts: TemporalFlags & { plan: string; id?: string; paused?: boolean }) => {
    const plan = await loadPlan(opts.plan);
    scheduleSpecOf(plan, opts.plan); // exit 2 before any connection
    const id = await withFleetClient(opts, (c) =>
      createSchedule(c, plan, { id: opts.id, paused: opts.paused, source: opts.plan }),
    );
    process.stdout.write(`created schedule ${id}\n`);
  });

  temporalFlags(
    s
      .command('list')
      .description('schedules of rollouts, their next windows and recent rollouts')
      .option('--json', 'one JSON array'),
  ).action(async (opts: TemporalFlags & { json?: boolean }) => {
    const rows = await withFleetClient(opts, listSchedules);
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(rows)}\n`);
      return;
    }
    if (rows.length === 0) process.stdout.write('no rollout schedules\n');
    for (const r of rows) {
      process.stdout.write(
        `${r.scheduleId}${r.paused ? ' (paused)' : ''}: next ${r.nextActionTimes.join(', ') || '-'}; recent ${r.recentRollouts.join(', ') || '-'}\n`,
      );
    }
  });

  temporalFlags(
    s
      .command('delete')
      .description('delete a rollout schedule (running rollouts go on)')
      .argument('<id>', 'schedule id or plan name'),
  ).action(async (id: string, opts: TemporalFlags) => {
    const scheduleId = scheduleIdOf(id);
    await withFleetClient(opts, async (c) => {
      try {
        await c.schedule.getHandle(scheduleId).delete();
      } catch (err) {
        if (err instanceof ScheduleNotFoundError) throw new CliError(`no schedule ${scheduleId}`, ExitCode.failed);
        throw err;
      }
    });
    process.stdout.write(`deleted schedule ${scheduleId}\n`);
  });
}
