// The fleet commands' registration: `rollout …`, `schedule …`, `hosts`, `inventory`. Only commander and
// light helpers load with it; each action imports its command's module (./rollout, ./schedule, ./hosts,
// ./inventory: the Temporal client, the plan schema) when it runs, so `fleet-upgrade --help` stays quick.
import type { Command } from 'commander';
import { BadInputError, ExitCode } from '../cli-errors';
import {
  SAFE_ID,
  SAFE_LABEL,
  SCHEDULE_PREFIX,
  settingsOf,
  temporalFlags,
  withClient,
  type TemporalFlags,
} from './common';

const out = (text: string) => process.stdout.write(`${text}\n`);

/** `rollout …`, `schedule …` and `hosts`. */
export function registerFleetCommands(program: Command): void {
  const r = program.command('rollout').description('fleet rollouts: waves, windows, budget, approvals');

  temporalFlags(
    r
      .command('start')
      .description('start a rollout from a plan (workflow rollout, id rollout/<name>)')
      .requiredOption('--plan <file>', 'the rollout plan (YAML; see infra/examples/plan.yaml)')
      .option('--wait', 'follow it to the end; exit 1 unless every VM is upgraded')
      .option('--json', 'with --wait: end with one JSON object'),
  ).action(async (opts: TemporalFlags & { plan: string; wait?: boolean; json?: boolean }) => {
    const [{ loadPlan }, m] = await Promise.all([import('./plan-file'), import('./rollout')]);
    const plan = await loadPlan(opts.plan); // exit 2 here, before any connection
    await withClient(opts, async (client) => {
      const handle = await m.startRollout(client, plan);
      process.stderr.write(`started ${handle.workflowId} (run ${handle.firstExecutionRunId})\n`);
      if (!opts.wait) {
        out(`started ${handle.workflowId}`);
        return;
      }
      const result = await m.waitForResult(handle, (line) => process.stderr.write(`${line}\n`));
      out(opts.json ? JSON.stringify(result) : m.describeProgress(result, result.outcome));
      process.exitCode = m.exitCodeOfRollout(result);
    });
  });

  temporalFlags(
    r
      .command('status')
      .description('progress of a rollout: counts by state, hosts, failures, wave, window')
      .argument('<id>', 'rollout name or workflow id')
      .option('--json', 'print one JSON object'),
  ).action(async (id: string, opts: TemporalFlags & { json?: boolean }) => {
    const m = await import('./rollout');
    m.rolloutIdOf(id);
    out(await withClient(opts, (c) => m.rolloutStatus(c, id, opts.json === true)));
  });

  temporalFlags(
    r.command('list').description('rollouts known to Temporal').option('--json', 'print one JSON array'),
  ).action(async (opts: TemporalFlags & { json?: boolean }) => {
    const m = await import('./rollout');
    out(await withClient(opts, (c) => m.listRollouts(c, opts.json === true)));
  });

  temporalFlags(
    r
      .command('pause')
      .description('no new VM starts; VMs in flight finish')
      .argument('<id>', 'rollout name or workflow id')
      .option('--reason <text>', 'why, for the record'),
  ).action(async (id: string, opts: TemporalFlags & { reason?: string }) => {
    const m = await import('./rollout');
    m.rolloutIdOf(id);
    const ack = await withClient(opts, (c) => m.update(c, id, 'pause', opts.reason ? { reason: opts.reason } : {}));
    out(ack.message);
  });

  temporalFlags(
    r
      .command('resume')
      .description('resume a paused rollout (also resets the failure budget)')
      .argument('<id>', 'rollout name or workflow id'),
  ).action(async (id: string, opts: TemporalFlags) => {
    const m = await import('./rollout');
    m.rolloutIdOf(id);
    out((await withClient(opts, (c) => m.update(c, id, 'resume', {}))).message);
  });

  temporalFlags(
    r
      .command('abort')
      .description('start nothing new; VMs in flight finish (or, with --roll-back-in-flight, roll back)')
      .argument('<id>', 'rollout name or workflow id')
      .option('--reason <text>', 'why, for the record')
      .option('--roll-back-in-flight', 'cancel the VMs in flight: each rolls back unless it already switched over'),
  ).action(async (id: string, opts: TemporalFlags & { reason?: string; rollBackInFlight?: boolean }) => {
    const m = await import('./rollout');
    m.rolloutIdOf(id);
    const arg = { ...(opts.reason ? { reason: opts.reason } : {}), rollBackInFlight: opts.rollBackInFlight === true };
    out((await withClient(opts, (c) => m.update(c, id, 'abort', arg))).message);
  });

  temporalFlags(
    r
      .command('approve')
      .description('let the next wave start')
      .argument('<id>', 'rollout name or workflow id')
      .option('--wave <n>', 'the wave (0-based) expected to be next; refused if another one is', (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0) throw new BadInputError('--wave: must be a wave index (0, 1, ...)');
        return n;
      }),
  ).action(async (id: string, opts: TemporalFlags & { wave?: number }) => {
    const m = await import('./rollout');
    m.rolloutIdOf(id);
    out(
      (await withClient(opts, (c) => m.update(c, id, 'approve', opts.wave !== undefined ? { wave: opts.wave } : {})))
        .message,
    );
  });

  temporalFlags(
    r
      .command('retry')
      .description('upgrade failed VMs again (all, or those named)')
      .argument('<id>', 'rollout name or workflow id')
      .option(
        '--vm <host/vm>',
        'a failed VM (repeatable); a bare host id retries the whole host',
        (v: string, prev: string[] = []) => [...prev, v],
      ),
  ).action(async (id: string, opts: TemporalFlags & { vm?: string[] }) => {
    const m = await import('./rollout');
    m.rolloutIdOf(id);
    out(await withClient(opts, (c) => m.rolloutRetry(c, id, opts.vm)));
  });

  registerScheduleCommands(program);
  registerHostsCommand(program);
}

function registerScheduleCommands(program: Command): void {
  const s = program.command('schedule').description('recurring maintenance windows (Temporal Schedules)');

  temporalFlags(
    s
      .command('create')
      .description("start the plan's rollout at each of its maintenance windows")
      .requiredOption('--plan <file>', 'the rollout plan (YAML); its windows make the schedule')
      .option('--id <name>', `schedule id (default ${SCHEDULE_PREFIX}<plan name>)`)
      .option('--paused', 'create it paused'),
  ).action(async (opts: TemporalFlags & { plan: string; id?: string; paused?: boolean }) => {
    const [{ loadPlan }, m] = await Promise.all([import('./plan-file'), import('./schedule')]);
    const plan = await loadPlan(opts.plan);
    m.scheduleSpecOf(plan, opts.plan); // exit 2 before any connection
    const id = await withClient(opts, (c) =>
      m.createSchedule(c, plan, { id: opts.id, paused: opts.paused, source: opts.plan }),
    );
    process.stdout.write(`created schedule ${id}\n`);
  });

  temporalFlags(
    s
      .command('list')
      .description('schedules of rollouts, their next windows and recent rollouts')
      .option('--json', 'one JSON array'),
  ).action(async (opts: TemporalFlags & { json?: boolean }) => {
    const m = await import('./schedule');
    const rows = await withClient(opts, m.listSchedules);
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
    const m = await import('./schedule');
    const scheduleId = m.scheduleIdOf(id);
    await withClient(opts, (c) => m.deleteSchedule(c, scheduleId));
    process.stdout.write(`deleted schedule ${scheduleId}\n`);
  });
}

function registerHostsCommand(program: Command): void {
  temporalFlags(
    program
      .command('hosts')
      .description('live host workers (per Temporal task-queue pollers) and the QEMU labels they allow')
      .option('--host <id>', 'also check this host id (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
      .option('--timeout <sec>', 'how long each worker has to answer', (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1 || n > 600) throw new BadInputError('--timeout: 1 to 600 seconds');
        return n;
      })
      .option('--json', 'print one JSON array'),
  ).action(async (opts: TemporalFlags & { host?: string[]; timeout?: number; json?: boolean }) => {
    for (const h of opts.host ?? []) {
      if (!SAFE_ID.test(h)) throw new BadInputError(`--host: ${JSON.stringify(h)} is not a host id`);
    }
    const m = await import('./hosts');
    const namespace = settingsOf(opts).namespace;
    const rows = await withClient(opts, (c) =>
      m.listHosts(c, namespace, { hosts: opts.host, timeoutSec: opts.timeout ?? 10 }),
    );
    process.stdout.write(`${opts.json ? JSON.stringify(rows) : m.describeHosts(rows)}\n`);
  });
}

/** `inventory`. */
export function registerInventoryCommand(program: Command): void {
  temporalFlags(
    program
      .command('inventory')
      .description('every VM of the live host workers: QEMU label and version, machine type, state, last upgrade')
      .option(
        '--host <id>',
        'only this host (repeatable; listed even when its worker is down)',
        (v: string, prev: string[] = []) => [...prev, v],
      )
      .option('--target <label>', 'also count the VMs left to upgrade to this label')
      .option('--timeout <sec>', 'how long each host worker has to answer (default 10)')
      .option('--json', 'print one JSON object'),
  ).action(async (opts: TemporalFlags & { host?: string[]; target?: string; timeout?: string; json?: boolean }) => {
    for (const h of opts.host ?? [])
      if (!SAFE_ID.test(h)) throw new BadInputError(`--host: ${JSON.stringify(h)} is not a host id`);
    if (opts.target !== undefined && !SAFE_LABEL.test(opts.target))
      throw new BadInputError(`--target: ${JSON.stringify(opts.target)} is not a version label`);
    const timeoutSec = opts.timeout === undefined ? 10 : Number(opts.timeout);
    if (!Number.isInteger(timeoutSec) || timeoutSec < 1 || timeoutSec > 600)
      throw new BadInputError(`--timeout: ${JSON.stringify(opts.timeout)} is not 1 to 600 seconds`);
    const m = await import('./inventory');
    const namespace = settingsOf(opts).namespace;
    const view = await withClient(opts, (c) =>
      m.inventory(c, namespace, {
        ...(opts.host ? { hosts: opts.host } : {}),
        ...(opts.target ? { target: opts.target } : {}),
        timeoutSec,
      }),
    );
    process.stdout.write(`${opts.json ? JSON.stringify(view) : m.describeInventory(view)}\n`);
    // An inventory with hosts missing is incomplete: a peer did not answer.
    process.exitCode = view.summary.hostsNotAnswering.length ? ExitCode.peer : ExitCode.ok;
  });
}
