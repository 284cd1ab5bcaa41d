// Real QEMU 7.2 → 10.0.2, one VM at a time: the full upgradeVm through Temporal against a raw baseline that
// performs the same QMP steps with no orchestration, alternated in the same run, with guest RAM copied and
// shared. The guest is the Linux test guest, booted and idle before each upgrade (one-vm-guest.ts). Beside
// them, the floor: a workflow of the saga's shape whose activities do nothing (floor-workflow.ts).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { probeBinary } from '../../activities/capabilities/binary-probe';
import { queryGuestMemory } from '../../activities/capabilities/probe';
import { parseHostConfig, resolveBinary, type HostConfig, type ResolvedBinary } from '../../activities/host/config';
import { ramMemfdOf } from '../../activities/host/fd-handover';
import { socketPath } from '../../activities/host/paths';
import { killQemu, launchQemu } from '../../activities/host/qemu-launcher';
import { buildQemuArgs, type Handover } from '../../activities/host/vm-spec';
import type { VmRecord } from '../../activities/host/vm-record';
import { QmpClient } from '../../activities/qmp/client';
import type { RamMode } from '../../workflows/decisions/plan';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { searchAttributeTypes, upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import { createHostWorker } from '../../workers/host-worker';
import { createOrchestratorWorker, orchestratorTaskQueue, workflowsPath } from '../../workers/orchestrator-worker';
import { connectClient } from '../../workers/temporal-connection';
import { startDevServer } from '../devserver';
import { createFloorWorkers, startEmptyUpgrade, type FloorShape } from './floor-workers';
import { activityLatencies, type ActivityLatency } from './history-latency';
import { bootOneVmGuest, ONE_VM_GUEST_MIB } from './one-vm-guest';
import { qemu10, qemu72, requireQemu } from '../real-parts';

export interface RealQemuRun {
  kind: 'saga' | 'raw';
  /** Guest RAM copied through the stream or shared by both QEMUs (`x-ignore-shared`). */
  ram: RamMode;
  wallMs: number;
  downtimeMs: number | null;
  guestPauseMs: number | null;
  switchoverGapMs: number | null;
  /** What the migration stream carried (the source's `ram.transferred`). */
  streamedBytes: number | null;
  /** QEMU's own `total-time` of the migration. */
  migrationMs: number | null;
  phases?: Record<string, number>;
  activities?: ActivityLatency[];
}

/** Per activity type, the medians of its dispatch, execute and decide (history-latency.ts). */
export type ActivityLatencyMedians = Record<string, { dispatchMs: number; executeMs: number; decideMs: number | null }>;

/** Medians of one RAM mode: the saga against the raw QMP sequence of the same strategy and RAM mode. */
export interface RealQemuModeFigures {
  ram: RamMode;
  sagaWallMsP50: number;
  rawWallMsP50: number;
  /** sagaWallMsP50 / rawWallMsP50; the goal is at most ONE_VM_GOAL_RATIO. */
  overheadRatio: number;
  switchoverGapMsP50: number | null;
  rawSwitchoverGapMsP50: number | null;
  downtimeMsP50: number | null;
  rawDowntimeMsP50: number | null;
  guestPauseMsP50: number | null;
  rawGuestPauseMsP50: number | null;
  streamedBytesP50: number | null;
  rawStreamedBytesP50: number | null;
  /** Median milliseconds of each saga phase (as the workflow's result names them): where its time goes. */
  sagaPhasesMsP50: Record<string, number>;
  /** Median milliseconds of the raw baseline's steps: start-destination, migrate (to the source's `completed`), finalize. */
  rawPhasesMsP50: Record<string, number>;
  /** Median dispatch / execute / decide milliseconds per activity type, from the histories. */
  activityLatencyMsP50: ActivityLatencyMedians;
}

/**
 * The floor: the same start, patch marker, search-attribute upserts and three activities as the saga, through
 * the same service and the same kind of workers, with activities that return at once.
 */
export interface FloorFigures {
  wallMsP50: number;
  /** History events of one run, against the saga's (median of each). */
  eventsP50: number;
  sagaEventsP50: number;
  activityLatencyMsP50: ActivityLatencyMedians;
  /** The on-host shape (floor-workflow.ts): the workflow on the host's queue, its steps local activities. */
  onHost: { wallMsP50: number; eventsP50: number };
}

/**
 * The top-level figures are those of copied RAM (the fields earlier runs reported); `modes` has both modes
 * side by side, each measured in the same run, alternated with its raw baseline.
 */
export interface RealQemuFigures extends Omit<RealQemuModeFigures, 'ram'> {
  /** Saga runs and raw runs, each, per RAM mode. */
  runs: number;
  guest: {
    kind: 'linux';
    memoryMiB: number;
    /** Launch → booted and idle, median. */
    bootMsP50: number;
    /** Share of one CPU an idle guest's QEMU used just before its upgrade, median. */
    idleCpuShareP50: number;
  };
  modes: Record<RamMode, RealQemuModeFigures>;
  floor: FloorFigures;
  /** Every mode's ratio is within ONE_VM_GOAL_RATIO. */
  goalMet: boolean;
  samples: RealQemuRun[];
}

/** One VM: the saga's wall time at most this many times the raw QMP sequence's, in each RAM mode. */
export const ONE_VM_GOAL_RATIO = 1.5;

export const ONE_VM_RAM_MODES: readonly RamMode[] = ['copied', 'shared'];

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const medianOrNull = (xs: (number | null)[]) => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? median(v) : null;
};

interface RawTarget {
  binary: ResolvedBinary;
  /** The saga starts its destination under QEMU's sandbox when the build has one; so does the baseline. */
  sandbox: boolean;
}

/**
 * The same QMP steps the saga performs for a plain migration in the given RAM mode, back to back, with no
 * orchestration and no checks between them. With shared RAM the destination maps the source's own memfd
 * (through `/proc/<pid>/fd/<n>`, as start-destination.ts hands it over) and both sides set `x-ignore-shared`.
 */
async function rawUpgrade(config: HostConfig, source: VmRecord, ram: RamMode, target: RawTarget): Promise<RealQemuRun> {
  const started = performance.now();
  // Its own steps, named like the saga's phases they match (the saga's also hold its Temporal round trips).
  const phases: Record<string, number> = {};
  let last = started;
  const step = (name: string) => {
    const now = performance.now();
    phases[name] = now - last;
    last = now;
  };
  const generation = source.generation + 1;
  const qmpSocket = socketPath(config.runtimeDir, source.id, generation, 'qmp');
  const mig = socketPath(config.runtimeDir, source.id, generation, 'mig');
  const src = await QmpClient.connect(source.qmpSocket);
  let dst: QmpClient | undefined;
  let destPid: number | undefined;
  try {
    const memory = await queryGuestMemory(src);
    const handover: Handover = { tapFds: {} };
    if (ram === 'shared') {
      const fd = ramMemfdOf(source.pid, source.spec.memoryMiB * 1024 * 1024);
      if (fd === undefined) throw new Error(`raw baseline: no guest RAM memfd among the fds of pid ${source.pid}`);
      handover.ramPath = `/proc/${source.pid}/fd/${fd}`;
    }
    const args = buildQemuArgs(source.spec, {
      mode: 'destination',
      qmpSocket,
      dataDirs: target.binary.dataDirs,
      auxRamShare: memory.auxRamShare === true,
      machineType: source.machineType!,
      incoming: { kind: 'defer' },
      paused: true,
      transferBackends: [],
      dialect: 'none',
      handover,
    });
    const dest = await launchQemu({
      binary: target.binary,
      args,
      runtimeDir: config.runtimeDir,
      vmId: source.id,
      role: 'destination',
      generation,
      env: target.binary.env,
      sandbox: target.sandbox,
    });
    destPid = dest.pid;
    dst = await QmpClient.connect(dest.qmpSocket);
    step('start-destination');
    let stopAt: number | undefined;
    src.onEvent((e) => {
      if (e.event === 'STOP') stopAt ??= e.timestampMs;
    });
    const events = { capability: 'events', state: true };
    const shared = ram === 'shared' ? [{ capability: 'x-ignore-shared', state: true }] : [];
    await Promise.all([
      dst.execute('migrate-set-capabilities', { capabilities: [events, ...shared] }),
      src.execute('migrate-set-capabilities', {
        capabilities: [events, { capability: 'auto-converge', state: false }, ...shared],
      }),
      src.execute('migrate-set-parameters', { 'downtime-limit': 300, 'max-bandwidth': 1024 ** 4 }),
    ]);
    await dst.execute('migrate-incoming', { uri: `unix:${mig}` });
    const completed = dst.waitForEvent((e) => e.event === 'MIGRATION' && e.data.status === 'completed', {
      timeoutMs: 120_000,
    });
    await src.execute('migrate', { uri: `unix:${mig}` });
    const done = await completed;
    const resumed = dst.waitForEvent((e) => e.event === 'RESUME', { timeoutMs: 10_000 });
    await dst.execute('query-status');
    await dst.execute('cont');
    const resume = await resumed;
    // The destination may resume before the source has marked its side completed and kept the downtime.
    let info: MigrateInfo = {};
    for (let i = 0; i < 100; i++) {
      info = (await src.execute('query-migrate')) as MigrateInfo;
      if (info.status === 'completed' || info.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    if (info.status !== 'completed') throw new Error(`raw baseline: the source reports ${info.status ?? 'nothing'}`);
    step('migrate');
    await src.execute('quit').catch(() => undefined);
    await killQemu(source.pid, { graceMs: 5000 });
    step('finalize');
    const wallMs = performance.now() - started;
    return {
      kind: 'raw',
      ram,
      wallMs,
      downtimeMs: info.downtime ?? null,
      guestPauseMs: stopAt === undefined ? null : resume.timestampMs - stopAt,
      switchoverGapMs: resume.timestampMs - done.timestampMs,
      streamedBytes: info.ram?.transferred ?? null,
      migrationMs: info['total-time'] ?? null,
      phases,
    };
  } finally {
    await Promise.allSettled([src.close(), dst?.close()]);
    if (destPid !== undefined) await killQemu(destPid, { graceMs: 0 });
  }
}

interface MigrateInfo {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  ram?: { transferred?: number };
}

/** The upgrades of one run, in order: a warm-up saga per RAM mode, then rounds that alternate saga and raw. */
export function oneVmSchedule(
  runs: number,
  modes: readonly RamMode[] = ONE_VM_RAM_MODES,
): { kind: 'saga' | 'raw'; ram: RamMode; warmUp: boolean }[] {
  const out: { kind: 'saga' | 'raw'; ram: RamMode; warmUp: boolean }[] = modes.map((ram) => ({
    kind: 'saga',
    ram,
    warmUp: true,
  }));
  for (let round = 0; round < runs; round++) {
    // Which of the two goes first swaps each round, so neither always follows the other.
    const kinds = round % 2 ? (['saga', 'raw'] as const) : (['raw', 'saga'] as const);
    for (const ram of modes) for (const kind of kinds) out.push({ kind, ram, warmUp: false });
  }
  return out;
}

export async function runRealQemuBench(runs = 5, say: (s: string) => void = () => undefined): Promise<RealQemuFigures> {
  requireQemu(qemu72);
  requireQemu(qemu10);
  try {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
  } catch {
    /* installed already by the caller */
  }
  const base = mkdtempSync('/tmp/fu-bench-');
  // QEMU runs detached (its own session): an interrupted bench must stop its VMs itself.
  const onSignal = (signal: NodeJS.Signals) => {
    killAllWith(base);
    rmSync(base, { recursive: true, force: true });
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const workers: { w: Worker; done: Promise<void> }[] = [];
  let server: Awaited<ReturnType<typeof startDevServer>> | undefined;
  let connection: Awaited<ReturnType<typeof connectClient>> | undefined;
  let floorConnection: NativeConnection | undefined;
  try {
    server = await startDevServer({
      headless: true,
      searchAttributes: searchAttributeTypes,
      dbFile: path.join(base, 't.db'),
    });
    const settings = { address: server.address, namespace: server.namespace };
    const config = realQemuHost(base, 'bench');
    const targetBinary = resolveBinary(config, '10.0.2');
    const target: RawTarget = {
      binary: targetBinary,
      sandbox:
        (await probeBinary(targetBinary, path.join(config.runtimeDir, 'cache'), config.limits.launchTimeoutMs))
          .sandbox === true,
    };
    connection = await connectClient(settings);
    const bundle = await bundleWorkflowCode({ workflowsPath: workflowsPath(), logger: silent });
    // The floor's workers poll queues of their own, as the orchestrator and host workers do theirs.
    floorConnection = await NativeConnection.connect({ address: settings.address });
    for (const w of [
      await createOrchestratorWorker(settings, bundle),
      await createHostWorker(config, settings),
      ...(await createFloorWorkers(floorConnection, settings.namespace, 1, silent)),
    ]) {
      workers.push({ w, done: w.run() });
    }
    const client = new Client({ connection, namespace: settings.namespace });
    const samples: RealQemuRun[] = [];
    const floors: { wallMs: number; events: number; activities: ActivityLatency[] }[] = [];
    const onHostFloors: { wallMs: number; events: number }[] = [];
    const sagaEvents: number[] = [];
    const boots: { bootMs: number; idleCpuShare: number }[] = [];
    const schedule = oneVmSchedule(runs);
    for (const [i, step] of schedule.entries()) {
      const id = `one-${i}`;
      const guest = await bootOneVmGuest(config, { id, binary: '7.2', dir: config.runtimeDir, ram: step.ram });
      boots.push({ bootMs: guest.bootMs, idleCpuShare: guest.idleCpuShare });
      let run: RealQemuRun;
      if (step.kind === 'raw') {
        run = await rawUpgrade(config, guest.record, step.ram, target);
      } else {
        const t0 = performance.now();
        // Started as `vm upgrade` and upgradeHost start it: with its search attributes.
        const handle = await client.workflow.start('upgradeVm', {
          taskQueue: orchestratorTaskQueue,
          workflowId: `bench/${id}`,
          args: [{ hostId: config.hostId, vmId: id, target: '10.0.2' }],
          typedSearchAttributes: upgradeVmSearchAttributes({ hostId: config.hostId, vmId: id, target: '10.0.2' }),
        });
        const r = (await handle.result()) as UpgradeVmResult;
        const wallMs = performance.now() - t0;
        const history = await handle.fetchHistory();
        if (!step.warmUp) sagaEvents.push(history.events?.length ?? 0);
        if (r.outcome !== 'upgraded') throw new Error(`bench upgrade of ${id}: ${r.outcome} ${r.reason ?? ''}`);
        // The baseline is a plain migration in the mode the guest was given: the saga must have done the same.
        if (r.strategy !== 'plain' || r.ram !== step.ram) {
          throw new Error(
            `bench upgrade of ${id}: ${r.strategy ?? '?'} with ${r.ram ?? '?'} RAM, meant to be plain with ${step.ram}`,
          );
        }
        run = {
          kind: 'saga',
          ram: step.ram,
          wallMs,
          downtimeMs: r.migration?.downtimeMs ?? null,
          guestPauseMs: r.migration?.guestPauseMs ?? null,
          switchoverGapMs: r.migration?.switchoverGapMs ?? null,
          streamedBytes: r.migration?.transferredBytes ?? null,
          migrationMs: r.migration?.totalTimeMs ?? null,
          phases: Object.fromEntries(r.phases.map((p) => [p.phase, p.ms])),
          activities: activityLatencies(history),
        };
      }
      // The upgraded guest is not needed again: its QEMU goes, so no idle VM adds to the next one's figures.
      killAllWith(`guest=${id}\0`, base);
      // The floor beside each saga run, in the same conditions: a few runs, as it is short.
      if (step.kind === 'saga') {
        const these = [];
        const onHost = [];
        for (let k = 0; k < FLOORS_PER_SAGA; k++) {
          these.push(await emptyUpgrade(client, `bench/floor-${i}-${k}`));
          onHost.push(await emptyUpgrade(client, `bench/floor-on-host-${i}-${k}`, 'on-host'));
        }
        if (!step.warmUp) floors.push(...these);
        if (!step.warmUp) onHostFloors.push(...onHost);
        const ms = (xs: { wallMs: number }[]) => xs.map((x) => x.wallMs.toFixed(0)).join(', ');
        say(`${step.warmUp ? '(warm-up) ' : ''}floor ${ms(these)} ms; on-host shape ${ms(onHost)} ms`);
      }
      if (!step.warmUp) samples.push(run);
      say(
        `${step.warmUp ? '(warm-up) ' : ''}${run.ram} ${run.kind} ${run.wallMs.toFixed(0)} ms ` +
          `(booted in ${(guest.bootMs / 1000).toFixed(1)} s, idle at ${(guest.idleCpuShare * 100).toFixed(0)} % CPU)`,
      );
    }
    const modes = Object.fromEntries(ONE_VM_RAM_MODES.map((ram) => [ram, modeFigures(ram, samples)])) as Record<
      RamMode,
      RealQemuModeFigures
    >;
    const { ram: _copied, ...copied } = modes.copied;
    return {
      runs,
      ...copied,
      guest: {
        kind: 'linux',
        memoryMiB: ONE_VM_GUEST_MIB,
        bootMsP50: median(boots.map((b) => b.bootMs)),
        idleCpuShareP50: median(boots.map((b) => b.idleCpuShare)),
      },
      modes,
      floor: {
        wallMsP50: median(floors.map((x) => x.wallMs)),
        eventsP50: median(floors.map((x) => x.events)),
        sagaEventsP50: median(sagaEvents),
        activityLatencyMsP50: latencyMedians(floors.flatMap((x) => x.activities)),
        onHost: {
          wallMsP50: median(onHostFloors.map((x) => x.wallMs)),
          eventsP50: median(onHostFloors.map((x) => x.events)),
        },
      },
      goalMet: Object.values(modes).every((m) => m.overheadRatio <= ONE_VM_GOAL_RATIO),
      samples,
    };
  } finally {
    for (const { w } of workers) w.shutdown();
    await Promise.allSettled(workers.map((x) => x.done));
    await connection?.close().catch(() => undefined);
    await floorConnection?.close().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    killAllWith(base);
    rmSync(base, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const FLOORS_PER_SAGA = 3;

/** One run of the floor workflow, started as the saga is. */
async function emptyUpgrade(
  client: Client,
  workflowId: string,
  shape: FloorShape = 'orchestrator',
): Promise<{ wallMs: number; events: number; activities: ActivityLatency[] }> {
  const t0 = performance.now();
  const handle = await startEmptyUpgrade(client, workflowId, 0, shape);
  await handle.result();
  const wallMs = performance.now() - t0;
  const history = await handle.fetchHistory();
  return { wallMs, events: history.events?.length ?? 0, activities: activityLatencies(history) };
}

function modeFigures(ram: RamMode, samples: RealQemuRun[]): RealQemuModeFigures {
  const saga = samples.filter((s) => s.kind === 'saga' && s.ram === ram);
  const raw = samples.filter((s) => s.kind === 'raw' && s.ram === ram);
  const phaseMedians = (runs: RealQemuRun[]) => {
    const names = [...new Set(runs.flatMap((s) => Object.keys(s.phases ?? {})))];
    return Object.fromEntries(names.map((p) => [p, median(runs.map((s) => s.phases?.[p] ?? 0))]));
  };
  const sagaWallMsP50 = median(saga.map((s) => s.wallMs));
  const rawWallMsP50 = median(raw.map((s) => s.wallMs));
  return {
    ram,
    sagaWallMsP50,
    rawWallMsP50,
    overheadRatio: sagaWallMsP50 / rawWallMsP50,
    switchoverGapMsP50: medianOrNull(saga.map((s) => s.switchoverGapMs)),
    rawSwitchoverGapMsP50: medianOrNull(raw.map((s) => s.switchoverGapMs)),
    downtimeMsP50: medianOrNull(saga.map((s) => s.downtimeMs)),
    rawDowntimeMsP50: medianOrNull(raw.map((s) => s.downtimeMs)),
    guestPauseMsP50: medianOrNull(saga.map((s) => s.guestPauseMs)),
    rawGuestPauseMsP50: medianOrNull(raw.map((s) => s.guestPauseMs)),
    streamedBytesP50: medianOrNull(saga.map((s) => s.streamedBytes)),
    rawStreamedBytesP50: medianOrNull(raw.map((s) => s.streamedBytes)),
    sagaPhasesMsP50: phaseMedians(saga),
    rawPhasesMsP50: phaseMedians(raw),
    activityLatencyMsP50: latencyMedians(saga.flatMap((s) => s.activities ?? [])),
  };
}

function latencyMedians(all: ActivityLatency[]): ActivityLatencyMedians {
  const names = [...new Set(all.map((a) => a.activity))];
  return Object.fromEntries(
    names.map((n) => {
      const of = all.filter((a) => a.activity === n);
      return [
        n,
        {
          dispatchMs: median(of.map((a) => a.dispatchMs)),
          executeMs: median(of.map((a) => a.executeMs)),
          decideMs: medianOrNull(of.map((a) => a.decideMs)),
        },
      ];
    }),
  );
}

/** A host config allow-listing this machine's QEMU 7.2 and 10.0.2, under `<base>/rt` (made, 0700). */
export function realQemuHost(base: string, hostId: string): HostConfig {
  const config = parseHostConfig({
    hostId,
    runtimeDir: path.join(base, 'rt'),
    binaries: {
      '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
      '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
    },
  });
  mkdirSync(config.runtimeDir, { recursive: true, mode: 0o700 });
  return config;
}

/** SIGKILL every process but this one whose command line contains all the given strings. */
export function killAllWith(...parts: string[]): void {
  const { readdirSync, readFileSync } = require('node:fs') as typeof import('node:fs');
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${e}/cmdline`, 'utf8');
      if (parts.every((p) => cmdline.includes(p))) process.kill(Number(e), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

export const silent = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};
