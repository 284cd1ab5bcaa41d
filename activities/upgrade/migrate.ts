// Steps 5–6 of the saga: configure both sides in the plan's dialect, migrate, and switch over inside the
// same activity. The destination's MIGRATION `completed` event triggers the check of the paused destination
// and its `cont`, so no Temporal round trip lengthens the guest's pause. Before anything, the activity
// reconciles with what QEMU reports: a migration already running is awaited, one already completed is not
// repeated, a destination already resumed is only measured.
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { failureTypes } from '../../workflows/failures';
import { completionTimeoutSec } from '../../workflows/decisions/policy';
import { dialectByName } from '../capabilities/dialects';
import { queryStatus } from '../capabilities/probe';
import type { HostConfig } from '../host/config';
import { socketPath } from '../host/paths';
import type { QmpClient } from '../qmp/client';
import { QmpTimeoutError } from '../qmp/errors';
import type { QmpEvent } from '../qmp/messages';
import type { HostActivities, MigrationOutcome, MigrationProgress } from './api';
import { cancelMigration, outgoingMigration, queryMigrate, type MigrateInfo } from './migration-state';
import { destinationMayHaveRun, markResumed } from './resume-marker';
import {
  connect,
  isAlive,
  refuseGenerations,
  refuseUnsafeInput,
  requireLiveProcess,
  requireRecord,
  type VmProcess,
} from './processes';

type MigrateInput = Parameters<HostActivities['migrate']>[0];

export interface ActivitySide {
  heartbeat(progress: MigrationProgress): void;
  /** Rejects when the activity is cancelled. */
  cancelled: Promise<never>;
  /** Sends progress to the workflow (rate-limited by the caller's interval). */
  signalProgress?(progress: MigrationProgress): Promise<void>;
  progressSignalIntervalMs?: number;
  pollIntervalMs?: number;
  /** On cancellation, leave QEMU's migration running (the worker stops; a retry awaits the migration). */
  keepMigrationOnCancel?: () => boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function progressOf(info: MigrateInfo): MigrationProgress {
  return {
    status: info.status ?? 'none',
    transferredBytes: info.ram?.transferred ?? 0,
    remainingBytes: info.ram?.remaining ?? 0,
    totalBytes: info.ram?.total ?? 0,
  };
}

function fail(type: string, message: string, destinationRan = false): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true, details: [{ destinationRan }] });
}

/** The destination process died during the migration (explain() says what that means for the guest). */
class DestinationGone extends Error {
  constructor(pid: number) {
    super(`destination QEMU (pid ${pid}) exited during the migration`);
  }
}

/**
 * The source's figures once it reports `completed`: the destination may finish loading (and be resumed)
 * before the source has marked its side completed and recorded the downtime.
 */
async function settledInfo(src: QmpClient, fallback: MigrateInfo): Promise<MigrateInfo> {
  for (let i = 0; i < 100; i++) {
    const info = await queryMigrate(src).catch(() => undefined);
    if (!info) return fallback;
    if (info.status !== 'active' && info.status !== 'device' && info.status !== 'pre-switchover') return info;
    await sleep(20);
  }
  return fallback;
}

/** Records what both QEMUs say with their own timestamps. */
class EventTimeline {
  sourceStop?: number;
  destinationCompleted?: number;
  destinationResume?: number;
  private readonly offs: (() => void)[] = [];

  watchSource(qmp: QmpClient): void {
    this.offs.push(
      qmp.onEvent((e) => {
        if (e.event === 'STOP') this.sourceStop ??= e.timestampMs;
      }),
    );
  }

  watchDestination(qmp: QmpClient): void {
    this.offs.push(
      qmp.onEvent((e) => {
        if (e.event === 'MIGRATION' && e.data.status === 'completed') this.destinationCompleted ??= e.timestampMs;
        if (e.event === 'RESUME') this.destinationResume ??= e.timestampMs;
      }),
    );
  }

  stop(): void {
    for (const off of this.offs) off();
  }
}

export async function migrate(config: HostConfig, input: MigrateInput, side: ActivitySide): Promise<MigrationOutcome> {
  const { vmId, plan } = input;
  refuseUnsafeInput(vmId, input.source, input.destination);
  refuseGenerations(input.source, input.destination);
  const started = Date.now();
  const record = await requireRecord(config, vmId);
  const source = await requireLiveProcess(config, vmId, input.source, 'source', record);
  const destination = await requireLiveProcess(config, vmId, input.destination, 'destination', record);
  const migSocket = socketPath(config.runtimeDir, vmId, input.destination.generation, 'mig');
  const cprSocket = socketPath(config.runtimeDir, vmId, input.destination.generation, 'cpr');
  const timeline = new EventTimeline();
  const src = await connect(config, source);
  let dst: QmpClient | undefined;
  try {
    timeline.watchSource(src);
    const { info: before, begun } = await outgoingMigration(src);
    let reconciled = false;
    if (begun) {
      // An earlier attempt started it: await it, never issue it again.
      reconciled = true;
      dst = await connect(config, destination);
      timeline.watchDestination(dst);
    } else {
      dst = await startMigration(config, src, destination, input, { migSocket, cprSocket }, timeline);
    }

    const switched = switchOverWhenComplete(dst, () => markResumed(config, vmId, input.destination.generation));
    await monitor(src, destination, input, side, switched, started);
    await switched.done;

    const final = await settledInfo(src, before);
    const gap = (a?: number, b?: number) => (a !== undefined && b !== undefined ? Math.max(0, b - a) : null);
    return {
      strategy: plan.strategy,
      transferredBackends: plan.transferBackends,
      // QEMU reports 0 when the figure was not kept (e.g. a status read while it settles).
      totalTimeMs: final['total-time'] || Date.now() - started,
      downtimeMs: final.downtime ?? null,
      guestPauseMs: gap(timeline.sourceStop, timeline.destinationResume),
      switchoverGapMs: gap(timeline.destinationCompleted, timeline.destinationResume),
      transferredBytes: final.ram?.transferred ?? 0,
      reconciled: reconciled || switched.wasAlreadyRunning(),
    };
  } catch (err) {
    throw await explain(err, config, input, source, destination);
  } finally {
    timeline.stop();
    await Promise.allSettled([src.close(), dst?.close()]);
  }
}

/** Configures both sides and issues `migrate`; returns the destination's monitor. */
async function startMigration(
  config: HostConfig,
  src: QmpClient,
  destination: VmProcess,
  input: MigrateInput,
  sockets: { migSocket: string; cprSocket: string },
  timeline: EventTimeline,
): Promise<QmpClient> {
  const { plan, policy } = input;
  const dialect = dialectByName(plan.dialect);
  const transferParams = plan.strategy === 'backend-transfer' ? dialect.migrationParameters(plan.transferBackends) : {};
  const events = { capability: 'events', state: true };
  // Shared RAM stays where it is: both sides must skip it, or the stream would write into the pages the
  // running source uses. So it is set on both sides, and never with copied RAM nor with cpr-transfer (whose
  // destination maps the RAM from the fds it is handed).
  const ignoreShared = {
    capability: 'x-ignore-shared',
    state: plan.ram === 'shared' && plan.strategy !== 'cpr-transfer',
  };
  const sharedRam = ignoreShared.state ? [ignoreShared] : [];
  // The source's capabilities and parameters go out together (QEMU answers in order on one connection);
  // either failing fails the step before anything is migrated. A capability outlives a migration in QEMU: an
  // x-ignore-shared that an earlier migration left on is turned off, or the destination refuses the stream.
  const configureSource = async () => {
    const now = (await src.execute('query-migrate-capabilities')) as { capability: string; state: boolean }[];
    const stale = now.some((c) => c.capability === ignoreShared.capability && c.state !== ignoreShared.state);
    const sourceRam = sharedRam.length ? sharedRam : stale ? [ignoreShared] : [];
    await Promise.all([
      src.execute('migrate-set-capabilities', {
        capabilities: [events, { capability: 'auto-converge', state: policy.autoConverge }, ...sourceRam],
      }),
      src.execute('migrate-set-parameters', {
        'downtime-limit': policy.downtimeLimitMs,
        // A local migration copies memory to memory: with no limit set, lift QEMU's WAN-minded 128 MiB/s default.
        'max-bandwidth': Math.round(
          (policy.bandwidthLimitMiBps > 0 ? policy.bandwidthLimitMiBps : 1024 * 1024) * 1024 * 1024,
        ),
        ...(plan.strategy === 'cpr-transfer' ? { mode: 'cpr-transfer' } : {}),
        ...transferParams,
      }),
    ]);
  };
  // In a per-device dialect the devices were launched with the property set; nothing to set here.
  const unix = (p: string) => ({ transport: 'socket', type: 'unix', path: p });

  if (plan.strategy === 'cpr-transfer') {
    await configureSource();
    // The destination's monitor answers only once the source has sent the CPR state.
    await src.execute('migrate', {
      channels: [
        { 'channel-type': 'main', addr: unix(sockets.migSocket) },
        { 'channel-type': 'cpr', addr: unix(sockets.cprSocket) },
      ],
    });
    const dst = await connectWhenUp(config, destination);
    timeline.watchDestination(dst);
    await dst.execute('migrate-set-capabilities', { capabilities: [events] }).catch(() => undefined);
    return dst;
  }

  // The source is configured while the destination's monitor is reached and checked (two monitors, two
  // conversations); both are done before the destination listens and the source migrates.
  const sourceConfigured = configureSource();
  sourceConfigured.catch(() => undefined);
  let dst: QmpClient | undefined;
  try {
    dst = await connect(config, destination);
    timeline.watchDestination(dst);
    const state = await queryStatus(dst);
    if (state.status !== 'inmigrate') {
      throw fail(failureTypes.migrationFailed, `destination is not waiting for a migration (status ${state.status})`);
    }
    await dst.execute('migrate-set-capabilities', { capabilities: [events, ...sharedRam] });
    if (Object.keys(transferParams).length) await dst.execute('migrate-set-parameters', transferParams);
    await sourceConfigured;
    await dst.execute('migrate-incoming', { uri: `unix:${sockets.migSocket}` });
    await src.execute('migrate', { uri: `unix:${sockets.migSocket}` });
    return dst;
  } catch (err) {
    // The source's answers are awaited before the step fails, so none arrives after its monitor moved on.
    await sourceConfigured.catch(() => undefined);
    // QEMU serves one client per monitor: a connection left open would lock every retry and the rollback out.
    await dst?.close().catch(() => undefined);
    throw err;
  }
}

async function connectWhenUp(config: HostConfig, p: VmProcess): Promise<QmpClient> {
  const deadline = Date.now() + config.limits.launchTimeoutMs;
  for (;;) {
    try {
      return await connect(config, p, Math.min(config.limits.qmpTimeoutMs, 2_000));
    } catch (err) {
      if (Date.now() > deadline || !isAlive(p)) throw err;
      await sleep(10);
    }
  }
}

/**
 * Arms the switchover: as soon as the destination reports the migration completed, check that it is paused
 * and `cont` it. Also reachable by polling (`check`) for a destination whose events came up late.
 */
function switchOverWhenComplete(dst: QmpClient, markResumed: () => void) {
  let alreadyRunning = false;
  let resolveDone!: () => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  let started = false;
  const go = async () => {
    if (started) return;
    started = true;
    try {
      const state = await queryStatus(dst);
      if (state.running) {
        alreadyRunning = true;
        return resolveDone();
      }
      if (state.status !== 'paused' && state.status !== 'postmigrate') {
        throw fail(failureTypes.migrationFailed, `destination is ${state.status} after the migration, not paused`);
      }
      const resumed = dst.waitForEvent((e) => e.event === 'RESUME', { timeoutMs: 10_000, description: 'RESUME' });
      // Awaited only once `cont` succeeded; when `cont` fails (the destination died or hangs) nobody awaits
      // it, and its rejection must not go unhandled: Node ends the host worker's process on one.
      resumed.catch(() => undefined);
      markResumed();
      await dst.execute('cont');
      await resumed;
      resolveDone();
    } catch (err) {
      rejectDone(err);
    }
  };
  const off = dst.onEvent((e: QmpEvent) => {
    if (e.event === 'MIGRATION' && e.data.status === 'completed') void go();
  });
  done.finally(off).catch(() => undefined);
  /** For a migration that completed before we were listening (a retry, or CPR's late monitor). */
  const check = async () => {
    if (started) return;
    try {
      const [info, state] = await Promise.all([queryMigrate(dst), queryStatus(dst)]);
      if (state.running || info.status === 'completed') await go();
    } catch {
      /* the event path or the monitor loop reports failures */
    }
  };
  void check();
  return { done, wasAlreadyRunning: () => alreadyRunning, check };
}

/** Polls the source for progress and failure until the switchover is done; enforces the timeouts. */
async function monitor(
  src: QmpClient,
  destination: VmProcess,
  input: MigrateInput,
  side: ActivitySide,
  switchover: ReturnType<typeof switchOverWhenComplete>,
  started: number,
): Promise<void> {
  const switched = switchover.done;
  const pollMs = side.pollIntervalMs ?? 200;
  const deadline = started + completionTimeoutSec(input.policy, input.ramMiB) * 1000;
  const stallMs = input.policy.progressTimeoutSec * 1000;
  let finished = false;
  switched.then(
    () => (finished = true),
    () => (finished = true),
  );
  let lastBytes = -1;
  let lastMove = Date.now();
  // The first progress signal comes one interval into the migration: one that ends sooner costs its workflow
  // no signal (a history event and a workflow task each); heartbeats carry the progress all along.
  let lastSignal = started;
  while (!finished) {
    await Promise.race([sleep(pollMs), switched.catch(() => undefined), side.cancelled]).catch(async (err) => {
      if (finished) return;
      if (!side.keepMigrationOnCancel?.()) await cancelMigration(src);
      throw err;
    });
    if (finished) return;
    const info = await queryMigrate(src);
    const progress = progressOf(info);
    side.heartbeat(progress);
    if (side.signalProgress && Date.now() - lastSignal >= (side.progressSignalIntervalMs ?? 5_000)) {
      lastSignal = Date.now();
      void side.signalProgress(progress).catch(() => undefined);
    }
    if (info.status === 'failed' || info.status === 'cancelled') {
      const why = info['error-desc'] ?? info.status;
      const gone = !isAlive(destination) ? ' (destination QEMU exited)' : '';
      throw fail(failureTypes.migrationFailed, `migration ${info.status}: ${why}${gone}`);
    }
    if (!isAlive(destination)) {
      // Noticed within one poll: once the source has sent everything, the guest stays paused until then.
      if (info.status !== 'completed') await cancelMigration(src);
      throw new DestinationGone(destination.pid);
    }
    if (info.status === 'completed' && Date.now() <= deadline) {
      // The source is done; the destination's completion (and our cont) follows within moments.
      await switchover.check();
      continue;
    }
    // Checked for a completed source too, so a destination that never completes cannot hold the activity
    // until its start-to-close timeout.
    if (Date.now() > deadline) {
      if (info.status !== 'completed') await cancelMigration(src);
      throw fail(
        failureTypes.completionTimeout,
        `not complete after ${completionTimeoutSec(input.policy, input.ramMiB)} s${info.status === 'completed' ? ' (the destination never resumed)' : '; migration cancelled'}`,
      );
    }
    if (progress.transferredBytes !== lastBytes) {
      lastBytes = progress.transferredBytes;
      lastMove = Date.now();
    } else if (Date.now() - lastMove > stallMs) {
      await cancelMigration(src);
      throw fail(
        failureTypes.progressStalled,
        `no progress for ${input.policy.progressTimeoutSec} s; migration cancelled`,
      );
    }
  }
}

/** Turns a low-level failure into one that says what happened to which process. */
async function explain(
  err: unknown,
  config: HostConfig,
  input: MigrateInput,
  source: VmProcess,
  destination: VmProcess,
): Promise<unknown> {
  if (err instanceof ApplicationFailure || err instanceof CancelledFailure) return err;
  const ran = destinationMayHaveRun(config, input.vmId, input.destination.generation);
  // The source first: when it dies, the destination's load fails and it exits too, so a dead destination
  // next to a dead source says nothing about what happened first; a dead source alone always matters.
  if (!isAlive(source)) {
    return fail(failureTypes.processLost, `source QEMU (pid ${source.pid}) exited during the migration`, ran);
  }
  if (!isAlive(destination)) {
    return fail(failureTypes.processLost, `destination QEMU (pid ${destination.pid}) exited during the migration`, ran);
  }
  // A source whose monitor stopped answering: retrying the step would wait out the same timeout again (five
  // times); the rollback (or, once the destination may have run, verify) reconciles instead.
  if (err instanceof QmpTimeoutError && err.peer === source.qmpSocket) {
    return fail(failureTypes.monitorUnresponsive, err.message, ran);
  }
  // Anything else (a lost connection, the destination's monitor late) is transient: a retry reconciles with
  // what QEMU reports.
  return err;
}
