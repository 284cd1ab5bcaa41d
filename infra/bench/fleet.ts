// Fleet benchmark: simulated hosts × VMs upgraded through upgradeVm on a real Temporal dev server, each
// worker its own process as in production: `fleet-upgrade orchestrator-worker` and one
// `fleet-upgrade host-worker --config <file>` per host, whose binaries are in-process simulators
// (activities/host/sim-launcher.ts) and whose VMs the worker launches itself at start (`launchAtStart` in its
// host config). A client starts the upgrades with bounded concurrency, the VMs of all hosts interleaved.
//
// Figures per fleet size: VM upgrades per second (first start → last result), history events per VM (and
// per event type), peak RSS (VmHWM) of each host worker and of the orchestrator worker, CPU seconds of every
// process while the upgrades ran, and where the time goes, read from the histories: per activity type,
// scheduled → started (dispatch) and started → completed (execution); workflow tasks likewise; and each
// VM's wall time split into waiting for dispatch, executing activities, and deciding (workflow tasks).
// Afterwards every VM is checked from outside the workers: its record names generation 2 on the new
// label, and its monitor answers `running` on the new version.
//
// A faulty size (`faultyShare`, `--sizes 4x250@5%`) arms a fault over QMP in that share of the VMs once the
// host workers launched them (the faults of the rollout's scale test, infra/simulator/source-faults.ts; seeded:
// FLEET_BENCH_FAULT_SEED=N replays), and gives every upgradeVm the scale test's policy (a stall is given up
// after 5 s). A faulty VM may end upgraded, rolled back, failed or needing an operator; the healthy ones must
// all be upgraded and verified. Its figures: the whole run's rate and the healthy VMs' rate, each against
// the fault-free run of the same size in the same bench run, and the faulty VMs that held the tail.
//
// Setup choices (each an option): the dev server's SQLite file lives on tmpfs (/dev/shm) when there is
// one, as its default in-memory mode would (on disk, fsyncs cost a third of the throughput here); host
// workers alternate between the launch a user gets (`fleet-upgrade host-worker`, which applies its memory
// settings itself: V8's young generation capped, its old generation's growth bounded, fewer glibc heaps;
// bin/fleet-upgrade.js) and Node's own defaults (FLEET_UPGRADE_NODE_TUNING=0), so each run compares both
// under the same load. The CLI applies its settings by execve, so the pid spawned is the worker's: its
// VmHWM is the worker's peak.
//
// Run alone: `npm run build && node dist/infra/bench/fleet.js [--json] [--sizes 2x50,4x100,4x250@5%,4x250]
// [--concurrency N] [--markdown]`; infra/bench/main.ts calls runFleetBench (and fleetBenchmarksMarkdown).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { listVmRecords } from '../../activities/host/vm-record';
import { QmpClient } from '../../activities/qmp/client';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { searchAttributeTypes, upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import { startDevServer, type DevServer } from '../devserver';
import { SOURCE_FAULTS, seededRandom, sourceFaultArgs, type SourceFault } from '../simulator/source-faults';
import { pool, startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../worker-processes';

export interface FleetSize {
  hosts: number;
  vmsPerHost: number;
  /** Share of the VMs with a fault armed before the upgrades start, e.g. 0.05. Default 0: fault-free. */
  faultyShare?: number;
}

export interface FleetBenchOptions {
  /** Default: defaultFleetSizes (2×50, 4×100, 4×250 with 5 % of the VMs faulty, 4×250). */
  sizes?: FleetSize[];
  /** Seed of the faulty sizes' choice of VMs and faults. Default: env FLEET_BENCH_FAULT_SEED, else the clock. */
  faultSeed?: number;
  /** upgradeVm workflows in flight at once, all hosts together. Default 64. */
  concurrency?: number;
  /** Per host: `limits.maxConcurrentMigrations` (the host worker runs 6× as many activities). Default 8. */
  maxConcurrentMigrations?: number;
  /** Guest RAM of each simulated VM. Default 16 MiB. */
  memoryMiB?: number;
  /** The simulator's RAM transfer rate. Default 8000 Mbit/s. */
  ramRateMbps?: number;
  /**
   * How host worker h runs: `hostVariants[h % length]`. Default: defaultHostVariant (what a user gets) and
   * nodeDefaultsHostVariant (so every run compares both under the same load).
   */
  hostVariants?: HostVariant[];
  /** Node flags of every worker process, e.g. `--cpu-prof --cpu-prof-dir=DIR` (env FLEET_BENCH_NODE_ARGS). */
  nodeArgs?: string[];
  /** Folder of the dev server's SQLite file. Default /dev/shm when present (env FLEET_BENCH_DB_DIR). */
  dbDir?: string;
  /** Dev server dynamic config values. */
  devServerDynamicConfig?: Record<string, unknown>;
  /** Progress lines. */
  say?: (line: string) => void;
}

export interface HostVariant {
  /** Node flags before the script. */
  nodeArgs: string[];
  /** Extra environment. */
  env?: Record<string, string>;
}

/** A variant's name in the figures: its flags and environment, or `defaults`. */
export function variantName(v: HostVariant): string {
  const parts = [...v.nodeArgs, ...Object.entries(v.env ?? {}).map(([k, x]) => `${k}=${x}`)];
  return parts.length ? parts.join(' ') : 'defaults';
}

/**
 * `fleet-upgrade host-worker` as a user starts it, with nothing set: the CLI applies the same as
 * tunedHostVariant itself (bin/fleet-upgrade.js).
 */
export const defaultHostVariant: HostVariant = { nodeArgs: [] };

/** Node's own memory defaults: the CLI told not to apply its settings. */
export const nodeDefaultsHostVariant: HostVariant = { nodeArgs: [], env: { FLEET_UPGRADE_NODE_TUNING: '0' } };

/**
 * What the CLI applies to a host worker, given explicitly: young generation capped at 1 MiB semispaces (Node
 * grows them to 16 under load), the old generation's growth bounded (an idle in-process VM holds about 16 KiB
 * of heap, so 96 MiB serves thousands; raise it beyond), fewer glibc per-thread heaps for the core SDK's threads.
 */
export const tunedHostVariant: HostVariant = {
  nodeArgs: ['--max-semi-space-size=1', '--max-old-space-size=96'],
  env: { MALLOC_ARENA_MAX: '2' },
};

export interface Distribution {
  n: number;
  mean: number;
  p50: number;
  p95: number;
  max: number;
}

export interface HostWorkerFigures {
  hostId: string;
  /** How it ran (variantName). */
  variant: string;
  /** VmHWM, MiB. */
  peakRssMiB: number;
  /** VmRSS at the end, MiB. */
  endRssMiB: number;
  /** CPU seconds while the upgrades ran. */
  cpuSec: number;
  /** VmRSS sampled every 5 s while the upgrades ran, MiB (a leak climbs, a steady state levels off). */
  rssMiBOverTime: number[];
}

/** A faulty size's own figures. */
export interface FaultyFigures {
  /** Seed of the choice of faulty VMs and of their faults (FLEET_BENCH_FAULT_SEED=seed replays it). */
  seed: number;
  /** VMs with a fault armed. */
  vms: number;
  /** Fault (`phase:action`) → VMs armed with it. */
  faultsArmed: Record<string, number>;
  /** The policy every VM's upgradeVm was given (the faulty and the healthy ones). */
  policy: Partial<MigrationPolicy>;
  /** Outcome → faulty VMs. */
  outcomes: Record<string, number>;
  /** `outcome: what its monitor said afterwards` → faulty VMs, e.g. `rolled-back: running 10.0.50`. */
  checked: Record<string, number>;
  /** All VMs / wall: the same as upgradesPerSec. */
  vmsPerSec: number;
  /** Healthy VMs / first start → the last healthy VM's result. */
  healthyVmsPerSec: number;
  /** First start → the last healthy VM's result. */
  healthyWallSec: number;
  /** Start → close of each faulty VM's upgradeVm, ms. */
  faultyWorkflowMs: Distribution;
  /** History events of each healthy VM, and of each faulty VM. */
  healthyHistoryEventsPerVm: Distribution;
  faultyHistoryEventsPerVm: Distribution;
  /** Fault → faulty VMs whose result came after the last healthy VM's: the run's tail. */
  afterLastHealthy: Record<string, number>;
  /** The longest faulty VMs, longest first: what held the run's tail. */
  slowest: {
    vm: string;
    fault: string;
    outcome: string;
    /** Start → close of its upgradeVm. */
    ms: number;
    historyEvents: number;
    /** Its longest phase, from its result. */
    longestPhase?: { phase: string; ms: number };
    /** Its activities, from its history. */
    activities: ActivitySpan[];
    reason?: string;
  }[];
  /** Against the fault-free run of the same hosts × VMs in the same bench run, when it had one. */
  vsFaultFree?: {
    upgradesPerSec: number;
    wallSec: number;
    /** vmsPerSec / the fault-free rate (the goal's figure). */
    ratio: number;
    /** healthyVmsPerSec / the fault-free rate. */
    healthyRatio: number;
  };
}

export interface FleetFigures {
  hosts: number;
  vmsPerHost: number;
  vms: number;
  /** Share of the VMs with a fault armed; 0 for a fault-free run. */
  faultyShare: number;
  /** VMs without a fault: all of them in a fault-free run. */
  healthyVms: number;
  /** Guest RAM of each VM, MiB. */
  memoryMiB: number;
  concurrency: number;
  /** Outcome → count, all VMs; every healthy VM must be `upgraded`. */
  outcomes: Record<string, number>;
  /** Healthy VMs whose record and monitor, checked from outside afterwards, say they run the new version. */
  verifiedVms: number;
  /** First workflow start → last result. */
  wallSec: number;
  /** All VMs (whatever their outcome) / wallSec. */
  upgradesPerSec: number;
  /** A faulty size's own figures. */
  faulty?: FaultyFigures;
  /** How long the host workers took from spawn to polling with their VMs launched (slowest host). */
  launchSec: number;
  /** Start → close of each upgradeVm, ms. */
  workflowMs: Distribution;
  historyEventsPerVm: Distribution;
  /** Mean count per VM of each event type (`ACTIVITY_TASK_SCHEDULED`, ...). */
  historyEventTypesPerVm: Record<string, number>;
  hostWorkers: HostWorkerFigures[];
  /** Highest VmHWM of the host workers per variant (variantName), MiB. */
  hostWorkerPeakRssMiB: Record<string, number>;
  /** VmHWM of the orchestrator worker, MiB (it bundles the workflow code at start with webpack). */
  orchestratorPeakRssMiB: number;
  /** VmRSS of the orchestrator worker at the end, MiB. */
  orchestratorEndRssMiB: number;
  /** CPU seconds (user + system) each process used while the upgrades ran. */
  cpuSec: { devServer: number; orchestrator: number; hostWorkers: number; client: number; total: number };
  /** All processes' CPU seconds per upgrade while the upgrades ran; the machine has `cores` per second. */
  cpuSecPerUpgrade: number;
  cores: number;
  /**
   * The whole machine while the upgrades ran (/proc/stat): how busy its cores were, and how much of that was
   * the bench's own processes (the rest: anything else running on the machine), percent of all cores.
   */
  machine: { busyPct: number; benchPct: number };
  /** Per activity type: dispatch (scheduled → started) and execution (started → completed), ms. */
  activities: Record<string, { dispatchMs: Distribution; executeMs: Distribution }>;
  /** Workflow tasks: dispatch (scheduled → started) and execution (started → completed), ms. */
  workflowTasks: { perVm: number; dispatchMs: Distribution; executeMs: Distribution };
  /**
   * One VM's wall time, split: activities waiting for a host worker (dispatch), activities running
   * (execute), and the rest (workflow tasks: the orchestrator deciding, the service in between), ms, p50.
   */
  perVmMsP50: { total: number; activityDispatch: number; activityExecute: number; decide: number };
  goals: {
    upgradesPerSec: number;
    historyEventsPerVm: number;
    hostWorkerPeakRssMiB: number;
    /** The least a faulty run's rate (all VMs / wall) may be of the fault-free run's. */
    faultyRateRatio: number;
    upgradesPerSecMet: boolean;
    historyEventsPerVmMet: boolean;
    /** A faulty run compared with a fault-free one: whether its rate met faultyRateRatio. */
    faultyRateRatioMet?: boolean;
    /** Variant → whether every host worker run that way met the RSS goal. */
    hostRssMet: Record<string, boolean>;
  };
}

export const fleetGoals = {
  upgradesPerSec: 25,
  historyEventsPerVm: 30,
  hostWorkerPeakRssMiB: 150,
  faultyRateRatio: 0.7,
};
/**
 * The faulty 4×250 before the fault-free one: callers take the last size as the headline figure (and the
 * figures pair them whatever the order).
 */
export const defaultFleetSizes: FleetSize[] = [
  { hosts: 2, vmsPerHost: 50 },
  { hosts: 4, vmsPerHost: 100 },
  { hosts: 4, vmsPerHost: 250, faultyShare: 0.05 },
  { hosts: 4, vmsPerHost: 250 },
];

/** What a faulty run gives every upgradeVm, as the rollout's scale test does: a stall is given up after 5 s
 *  without progress, not the default 150 s (one stalled VM would set the run's length). */
export const faultyRunPolicy: Partial<MigrationPolicy> = { progressTimeoutSec: 5 };

const round1 = (x: number) => Math.round(x * 10) / 10;

/** `4×250`, or `4×250 @5 %` with faults. */
export function sizeName(s: FleetSize, times = '×'): string {
  const share = s.faultyShare ?? 0;
  return `${s.hosts}${times}${s.vmsPerHost}${share > 0 ? ` @${round1(share * 100)} %` : ''}`;
}

export function distribution(values: number[]): Distribution {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return { n: 0, mean: NaN, p50: NaN, p95: NaN, max: NaN };
  const at = (q: number) => v[Math.min(v.length - 1, Math.floor(q * v.length))]!;
  return {
    n: v.length,
    mean: round1(v.reduce((a, b) => a + b, 0) / v.length),
    p50: round1(at(0.5)),
    p95: round1(at(0.95)),
    max: round1(v[v.length - 1]!),
  };
}

/** A field of /proc/<pid>/status in MiB (VmHWM: peak resident set; VmRSS: now). */
export function procStatusMiB(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return round1(Number(m[1]) / 1024);
}

const CLOCK_TICKS = 100; // USER_HZ, fixed at 100 on Linux

/** Busy and total CPU seconds of the machine so far (/proc/stat, all cores). */
export function machineCpuSec(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy: busy / CLOCK_TICKS, total: (busy + idle + iowait) / CLOCK_TICKS };
}

/** CPU seconds (utime + stime) a process used so far. */
export function procCpuSec(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // utime and stime are fields 14 and 15; after cutting "pid (comm) " the state is index 0.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}

// ---------------------------------------------------------------------------------------------------------
// Histories

type History = temporal.api.history.v1.IHistory;
const E = temporal.api.enums.v1.EventType;
const eventMs = (t: temporal.api.history.v1.IHistoryEvent['eventTime']) =>
  t ? Number(t.seconds ?? 0) * 1000 + (t.nanos ?? 0) / 1e6 : NaN;

interface HistoryFigures {
  events: number;
  types: Map<string, number>;
  totalMs: number;
  activities: { type: string; dispatchMs: number; executeMs: number }[];
  workflowTasks: { dispatchMs: number; executeMs: number }[];
}

/** Event counts and latencies of one workflow history, from the service's own timestamps. */
export function historyFigures(history: History): HistoryFigures {
  const events = history.events ?? [];
  const types = new Map<string, number>();
  const scheduled = new Map<number, { type: string; at: number }>();
  const started = new Map<number, number>();
  const activities: HistoryFigures['activities'] = [];
  const workflowTasks: HistoryFigures['workflowTasks'] = [];
  let wtScheduled = NaN;
  let wtStarted = NaN;
  for (const e of events) {
    const type = Number(e.eventType);
    const name = (E[type] ?? String(type)).replace(/^EVENT_TYPE_/, '');
    types.set(name, (types.get(name) ?? 0) + 1);
    const at = eventMs(e.eventTime);
    if (type === E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED) wtScheduled = at;
    else if (type === E.EVENT_TYPE_WORKFLOW_TASK_STARTED) wtStarted = at;
    else if (type === E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) {
      workflowTasks.push({ dispatchMs: wtStarted - wtScheduled, executeMs: at - wtStarted });
    } else if (type === E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) {
      const activity = e.activityTaskScheduledEventAttributes?.activityType?.name ?? '?';
      scheduled.set(Number(e.eventId), { type: activity, at });
    } else if (type === E.EVENT_TYPE_ACTIVITY_TASK_STARTED) {
      started.set(Number(e.activityTaskStartedEventAttributes?.scheduledEventId), at);
    } else if (type === E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) {
      const id = Number(e.activityTaskCompletedEventAttributes?.scheduledEventId);
      const s = scheduled.get(id);
      const st = started.get(id);
      if (s && st !== undefined) activities.push({ type: s.type, dispatchMs: st - s.at, executeMs: at - st });
    }
  }
  const totalMs = events.length ? eventMs(events[events.length - 1]!.eventTime) - eventMs(events[0]!.eventTime) : NaN;
  return { events: events.length, types, totalMs, activities, workflowTasks };
}

export interface ActivitySpan {
  type: string;
  /** Attempts the service recorded (retries included). */
  attempts: number;
  /** Scheduled → closed, ms. */
  ms: number;
  end: 'completed' | 'failed' | 'timed-out' | 'canceled' | 'open';
}

/** Each activity of a history: how many attempts, how long from scheduled to its end, and how it ended. */
export function activitySpans(history: History): ActivitySpan[] {
  const spans = new Map<number, ActivitySpan & { at: number }>();
  const close = (id: unknown, at: number, end: ActivitySpan['end']) => {
    const span = spans.get(Number(id));
    if (span) Object.assign(span, { ms: Math.round(at - span.at), end });
  };
  for (const e of history.events ?? []) {
    const type = Number(e.eventType);
    const at = eventMs(e.eventTime);
    if (type === E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) {
      const name = e.activityTaskScheduledEventAttributes?.activityType?.name ?? '?';
      spans.set(Number(e.eventId), { type: name, attempts: 0, ms: NaN, end: 'open', at });
    } else if (type === E.EVENT_TYPE_ACTIVITY_TASK_STARTED) {
      const a = e.activityTaskStartedEventAttributes;
      const span = spans.get(Number(a?.scheduledEventId));
      if (span) span.attempts = a?.attempt ?? 1;
    } else if (type === E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) {
      close(e.activityTaskCompletedEventAttributes?.scheduledEventId, at, 'completed');
    } else if (type === E.EVENT_TYPE_ACTIVITY_TASK_FAILED) {
      close(e.activityTaskFailedEventAttributes?.scheduledEventId, at, 'failed');
    } else if (type === E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT) {
      close(e.activityTaskTimedOutEventAttributes?.scheduledEventId, at, 'timed-out');
    } else if (type === E.EVENT_TYPE_ACTIVITY_TASK_CANCELED) {
      close(e.activityTaskCanceledEventAttributes?.scheduledEventId, at, 'canceled');
    }
  }
  return [...spans.values()].map(({ type, attempts, ms, end }) => ({ type, attempts, ms, end }));
}

function vmSpecs(h: number, n: number, memoryMiB: number) {
  return Array.from({ length: n }, (_, v) => ({
    id: `vm${v}`,
    binary: 'sim-old',
    machine: 'pc-i440fx-7.2',
    accel: 'tcg',
    memoryMiB,
    netdevs: [{ id: 'net0', type: 'tap', ifname: `fb${h}t${v}` }],
    devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
  }));
}

/** What a VM's monitor says: `running 10.1.50`, `paused 10.0.50`, ..., or `no answer`. */
async function monitorState(qmpSocket: string): Promise<string> {
  try {
    const q = await QmpClient.connect(qmpSocket, { timeoutMs: 10_000 });
    try {
      const status = (await q.execute('query-status')) as { running?: boolean; status?: string };
      const { qemu: v } = (await q.execute('query-version')) as {
        qemu?: { major: number; minor: number; micro: number };
      };
      const state = status.running === true ? 'running' : (status.status ?? 'stopped');
      return `${state} ${v?.major}.${v?.minor}.${v?.micro}`;
    } finally {
      await q.close();
    }
  } catch {
    return 'no answer';
  }
}

const NEW_STATE = 'running 10.1.50';
/** Outcomes a VM with a fault armed may end in. */
const FAULTY_OUTCOMES = new Set(['upgraded', 'rolled-back', 'failed', 'needs-operator']);

/** Picks `count` distinct VMs of `refs` and a fault for each, from the seed (as the rollout's scale test). */
function pickFaults(refs: string[], count: number, seed: number): Map<string, SourceFault> {
  const rnd = seededRandom(seed);
  const faulty = new Map<string, SourceFault>();
  while (faulty.size < Math.min(count, refs.length)) {
    const ref = refs[Math.floor(rnd() * refs.length)]!;
    if (!faulty.has(ref)) faulty.set(ref, SOURCE_FAULTS[Math.floor(rnd() * SOURCE_FAULTS.length)]!);
  }
  return faulty;
}

const countOf = (values: Iterable<string>): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return Object.fromEntries(Object.entries(out).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
};

type Settings = Required<Omit<FleetBenchOptions, 'sizes' | 'devServerDynamicConfig'>> &
  Pick<FleetBenchOptions, 'devServerDynamicConfig'>;

async function runOneSize(size: FleetSize, o: Settings, base: string): Promise<FleetFigures> {
  const { say } = o;
  const faultyShare = size.faultyShare ?? 0;
  const tag = `${size.hosts}x${size.vmsPerHost}${faultyShare > 0 ? `f${round1(faultyShare * 100)}` : ''}`;
  const dir = path.join(base, tag);
  mkdirSync(dir, { recursive: true });
  const dbFile = path.join(o.dbDir, `fu-fleet-${process.pid}-${tag}.db`);
  const server: DevServer = await startDevServer({
    headless: true,
    searchAttributes: searchAttributeTypes,
    dbFile,
    logFile: path.join(dir, 'temporal-dev.log'),
    ...(o.devServerDynamicConfig ? { dynamicConfig: o.devServerDynamicConfig } : {}),
  });
  const workers: WorkerProcess[] = [];
  let connection: Connection | undefined;
  try {
    const env = { ...process.env, TEMPORAL_ADDRESS: server.address, TEMPORAL_NAMESPACE: server.namespace };
    const log = (name: string) => path.join(dir, `${name}.log`);
    const orchestrator = await startWorkerProcess(
      'orchestrator',
      ['orchestrator-worker'],
      env,
      log('orchestrator'),
      o.nodeArgs,
    );
    workers.push(orchestrator);

    const launchStarted = Date.now();
    const hosts = Array.from({ length: size.hosts }, (_, h) => ({
      hostId: `fleet-${h}`,
      runtimeDir: path.join(dir, `h${h}`),
      variant: o.hostVariants[h % o.hostVariants.length] ?? { nodeArgs: [] },
    }));
    const hostWorkers = await Promise.all(
      hosts.map(async ({ hostId, runtimeDir, variant }, h) => {
        const simulator = (version: string) => ({
          simulator: { dialect: 'local', version, ramRateMbps: o.ramRateMbps },
        });
        const file = path.join(dir, `${hostId}.json`);
        writeFileSync(
          file,
          JSON.stringify({
            hostId,
            runtimeDir,
            binaries: { 'sim-old': simulator('10.0.50'), 'sim-new': simulator('10.1.50') },
            limits: { maxConcurrentMigrations: o.maxConcurrentMigrations },
            temporal: { address: server.address, namespace: server.namespace },
            launchAtStart: vmSpecs(h, size.vmsPerHost, o.memoryMiB),
          }),
        );
        const w = await startWorkerProcess(
          hostId,
          ['host-worker', '--config', file],
          { ...env, ...variant.env },
          log(hostId),
          [...variant.nodeArgs, ...o.nodeArgs],
        );
        workers.push(w);
        if (!w.output().includes(`launched ${size.vmsPerHost} VMs`)) {
          throw new Error(`${hostId} did not launch its VMs:\n${w.output().slice(-2000)}`);
        }
        return w;
      }),
    );
    const launchSec = (Date.now() - launchStarted) / 1000;
    say(`  workers up, ${size.hosts * size.vmsPerHost} VMs launched in the host workers in ${launchSec.toFixed(1)} s`);

    connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection, namespace: server.namespace });
    // Interleaved, so every host works from the start.
    const vms: { hostId: string; vmId: string; ref: string }[] = [];
    for (let v = 0; v < size.vmsPerHost; v++) {
      for (const { hostId } of hosts) vms.push({ hostId, vmId: `vm${v}`, ref: `${hostId}/vm${v}` });
    }
    const records = new Map<string, string>(); // ref → QMP socket
    for (const { hostId, runtimeDir } of hosts) {
      for (const r of await listVmRecords(runtimeDir)) records.set(`${hostId}/${r.id}`, r.qmpSocket);
    }

    // Faults, armed before the upgrades start while nothing else talks to the monitors.
    const faults = pickFaults(
      vms.map((v) => v.ref),
      Math.round(vms.length * faultyShare),
      o.faultSeed,
    );
    if (faults.size) {
      await pool([...faults], 8, async ([ref, fault]) => {
        const socket = records.get(ref);
        if (!socket) throw new Error(`${ref}: no VM record to arm ${fault} in`);
        const q = await QmpClient.connect(socket, { timeoutMs: 10_000 });
        try {
          await q.execute('x-sim-inject-fault', sourceFaultArgs(fault));
        } finally {
          await q.close();
        }
      });
      say(
        `  faults armed in ${faults.size} VMs (seed ${o.faultSeed}; FLEET_BENCH_FAULT_SEED=${o.faultSeed} replays): ${Object.entries(
          countOf(faults.values()),
        )
          .map(([k, n]) => `${k}×${n}`)
          .join(' ')}`,
      );
    }
    const policy = faults.size ? faultyRunPolicy : undefined;

    const cpuNow = () => ({
      devServer: procCpuSec(server.pid),
      orchestrator: procCpuSec(orchestrator.child.pid!),
      hostWorkers: hostWorkers.map((w) => procCpuSec(w.child.pid!)),
      client: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
    });
    const cpuBefore = cpuNow();
    const machineBefore = machineCpuSec();
    const started = Date.now();
    let done = 0;
    const ticker = setInterval(() => say(`  ${done}/${vms.length} upgraded`), 15_000);
    const rssOverTime: number[][] = hostWorkers.map(() => []);
    const sampleRss = () =>
      hostWorkers.forEach((w, i) => {
        try {
          rssOverTime[i]!.push(procStatusMiB(w.child.pid!, 'VmRSS'));
        } catch {
          /* exited */
        }
      });
    sampleRss();
    const sampler = setInterval(sampleRss, 5_000);
    // Each VM's result (or why its workflow failed) and when it came, ms after the first start.
    let ends: { result?: UpgradeVmResult; error?: string; atMs: number }[];
    try {
      ends = await pool(vms, o.concurrency, async ({ hostId, vmId }) => {
        try {
          const result = (await client.workflow.execute('upgradeVm', {
            taskQueue: 'fleet-upgrade',
            workflowId: `upgrade-vm/${hostId}/${vmId}`,
            args: [{ hostId, vmId, target: 'sim-new', ...(policy ? { policy } : {}) }],
            typedSearchAttributes: upgradeVmSearchAttributes({ hostId, vmId, target: 'sim-new' }),
          })) as UpgradeVmResult;
          return { result, atMs: Date.now() - started };
        } catch (err) {
          return { error: err instanceof Error ? err.message : String(err), atMs: Date.now() - started };
        } finally {
          done++;
        }
      });
    } finally {
      clearInterval(ticker);
      clearInterval(sampler);
    }
    sampleRss();
    const wallSec = (Date.now() - started) / 1000;
    const cpuAfter = cpuNow();
    const machineAfter = machineCpuSec();
    const machineTotal = machineAfter.total - machineBefore.total;
    const hostCpu = cpuAfter.hostWorkers.map((c, i) => c - cpuBefore.hostWorkers[i]!);
    const cpu = {
      devServer: cpuAfter.devServer - cpuBefore.devServer,
      orchestrator: cpuAfter.orchestrator - cpuBefore.orchestrator,
      hostWorkers: hostCpu.reduce((a, b) => a + b, 0),
      client: cpuAfter.client - cpuBefore.client,
    };
    const cpuTotal = cpu.devServer + cpu.orchestrator + cpu.hostWorkers + cpu.client;
    const hostFigures: HostWorkerFigures[] = hosts.map((h, i) => ({
      hostId: h.hostId,
      variant: variantName(h.variant),
      peakRssMiB: procStatusMiB(hostWorkers[i]!.child.pid!, 'VmHWM'),
      endRssMiB: procStatusMiB(hostWorkers[i]!.child.pid!, 'VmRSS'),
      cpuSec: round1(hostCpu[i]!),
      rssMiBOverTime: rssOverTime[i]!,
    }));
    const orchestratorPeakRssMiB = procStatusMiB(orchestrator.child.pid!, 'VmHWM');
    const orchestratorEndRssMiB = procStatusMiB(orchestrator.child.pid!, 'VmRSS');
    const outcomeOf = (i: number) => ends[i]!.result?.outcome ?? 'workflow-failed';
    const outcomes = countOf(vms.map((_, i) => outcomeOf(i)));
    const upgradesPerSec = round1(vms.length / wallSec);
    say(`  ${vms.length} upgrades in ${wallSec.toFixed(1)} s: ${upgradesPerSec}/s ${JSON.stringify(outcomes)}`);

    // Where the time went, from the histories.
    const eventsPerVm: number[] = [];
    const typeTotals = new Map<string, number>();
    const perVm = { total: [] as number[], dispatch: [] as number[], execute: [] as number[], decide: [] as number[] };
    const wtDispatch: number[] = [];
    const wtExecute: number[] = [];
    const perActivity = new Map<string, { dispatch: number[]; execute: number[] }>();
    const historyOf = new Map<string, { events: number; totalMs: number }>();
    await pool(vms, 16, async ({ hostId, vmId, ref }) => {
      const f = historyFigures(await client.workflow.getHandle(`upgrade-vm/${hostId}/${vmId}`).fetchHistory());
      historyOf.set(ref, { events: f.events, totalMs: f.totalMs });
      eventsPerVm.push(f.events);
      for (const [t, n] of f.types) typeTotals.set(t, (typeTotals.get(t) ?? 0) + n);
      for (const wt of f.workflowTasks) {
        wtDispatch.push(wt.dispatchMs);
        wtExecute.push(wt.executeMs);
      }
      let dispatch = 0;
      let execute = 0;
      for (const a of f.activities) {
        const slot = perActivity.get(a.type) ?? { dispatch: [], execute: [] };
        slot.dispatch.push(a.dispatchMs);
        slot.execute.push(a.executeMs);
        perActivity.set(a.type, slot);
        dispatch += a.dispatchMs;
        execute += a.executeMs;
      }
      perVm.total.push(f.totalMs);
      perVm.dispatch.push(dispatch);
      perVm.execute.push(execute);
      perVm.decide.push(f.totalMs - dispatch - execute);
    });

    // Every VM accounted for, checked from outside the host workers: the healthy ones (and any faulty one that
    // says upgraded) at generation 2 on the new label, running the new version; the faulty ones by what their
    // monitor says.
    const recordsAfter = new Map<string, { generation: number; label: string; qmpSocket: string }>();
    for (const { hostId, runtimeDir } of hosts) {
      for (const r of await listVmRecords(runtimeDir)) {
        recordsAfter.set(`${hostId}/${r.id}`, {
          generation: r.generation,
          label: r.binary.label,
          qmpSocket: r.qmpSocket,
        });
      }
    }
    const checks = await pool(vms, 16, async ({ ref }) => {
      const r = recordsAfter.get(ref);
      if (!r) return { verified: false, state: 'no record' };
      const state = await monitorState(r.qmpSocket);
      return { verified: r.generation === 2 && r.label === 'sim-new' && state === NEW_STATE, state };
    });
    const healthy = vms.map((v) => !faults.has(v.ref));
    const verifiedVms = checks.filter((c, i) => healthy[i] && c.verified).length;
    const problems: string[] = [];
    vms.forEach(({ ref }, i) => {
      const end = ends[i]!;
      const outcome = outcomeOf(i);
      const why = end.error ?? end.result?.reason ?? '';
      const fault = faults.get(ref);
      if (!fault && (outcome !== 'upgraded' || !checks[i]!.verified)) {
        problems.push(`${ref} (no fault): ${outcome}, monitor ${checks[i]!.state}${why ? `: ${why}` : ''}`);
      } else if (fault && !FAULTY_OUTCOMES.has(outcome)) {
        problems.push(`${ref} (${fault}): ${outcome}${why ? `: ${why}` : ''}`);
      } else if (fault && outcome === 'upgraded' && !checks[i]!.verified) {
        problems.push(`${ref} (${fault}): upgraded, but its record or monitor disagree (${checks[i]!.state})`);
      }
    });
    if (problems.length) {
      throw new Error(
        `${sizeName(size)}: ${problems.length} VMs not as they should be:\n${problems.slice(0, 20).join('\n')}`,
      );
    }

    let faulty: FaultyFigures | undefined;
    if (faults.size) {
      const healthyEnd = Math.max(0, ...ends.filter((_, i) => healthy[i]).map((e) => e.atMs)) / 1000;
      const healthyCount = healthy.filter(Boolean).length;
      const faultyIdx = vms.map((_, i) => i).filter((i) => !healthy[i]);
      const longestFaulty = faultyIdx
        .map((i) => {
          const { ref } = vms[i]!;
          const end = ends[i]!;
          const h = historyOf.get(ref);
          const longest = (end.result?.phases ?? []).reduce<{ phase: string; ms: number } | undefined>(
            (a, p) => (!a || p.ms > a.ms ? { phase: p.phase, ms: p.ms } : a),
            undefined,
          );
          // Without the bench's own folder in socket paths.
          const reason = (end.error ?? end.result?.reason)?.replaceAll(`${dir}/`, '');
          return {
            vm: ref,
            fault: faults.get(ref)!,
            outcome: outcomeOf(i),
            ms: Math.round(h?.totalMs ?? NaN),
            historyEvents: h?.events ?? NaN,
            ...(longest ? { longestPhase: { phase: longest.phase, ms: Math.round(longest.ms) } } : {}),
            ...(reason ? { reason: reason.length > 200 ? `${reason.slice(0, 200)}…` : reason } : {}),
          };
        })
        .sort((a, b) => b.ms - a.ms)
        .slice(0, 5);
      // Where their time went: each activity's attempts and length, from the history.
      const slowest = await pool(longestFaulty, 5, async (x) => {
        const [hostId, vmId] = x.vm.split('/');
        const history = await client.workflow.getHandle(`upgrade-vm/${hostId}/${vmId}`).fetchHistory();
        return { ...x, activities: activitySpans(history) };
      });
      faulty = {
        seed: o.faultSeed,
        vms: faults.size,
        faultsArmed: countOf(faults.values()),
        policy: faultyRunPolicy,
        outcomes: countOf(faultyIdx.map((i) => outcomeOf(i))),
        checked: countOf(faultyIdx.map((i) => `${outcomeOf(i)}: ${checks[i]!.state}`)),
        afterLastHealthy: countOf(
          faultyIdx.filter((i) => ends[i]!.atMs > healthyEnd * 1000).map((i) => faults.get(vms[i]!.ref)!),
        ),
        vmsPerSec: upgradesPerSec,
        healthyVmsPerSec: round1(healthyCount / healthyEnd),
        healthyWallSec: round1(healthyEnd),
        faultyWorkflowMs: distribution(faultyIdx.map((i) => historyOf.get(vms[i]!.ref)?.totalMs ?? NaN)),
        healthyHistoryEventsPerVm: distribution(
          vms.filter((_, i) => healthy[i]).map((v) => historyOf.get(v.ref)?.events ?? NaN),
        ),
        faultyHistoryEventsPerVm: distribution(faultyIdx.map((i) => historyOf.get(vms[i]!.ref)?.events ?? NaN)),
        slowest,
      };
      say(
        `  healthy VMs: ${healthyCount} in ${faulty.healthyWallSec} s (${faulty.healthyVmsPerSec}/s); faulty: ${JSON.stringify(faulty.outcomes)}`,
      );
    }

    const byFlags: Record<string, number> = {};
    for (const h of hostFigures) {
      const key = h.variant;
      byFlags[key] = Math.max(byFlags[key] ?? 0, h.peakRssMiB);
    }
    return {
      hosts: size.hosts,
      vmsPerHost: size.vmsPerHost,
      vms: vms.length,
      faultyShare,
      healthyVms: vms.length - faults.size,
      memoryMiB: o.memoryMiB,
      concurrency: o.concurrency,
      outcomes,
      verifiedVms,
      wallSec: round1(wallSec),
      upgradesPerSec,
      ...(faulty ? { faulty } : {}),
      launchSec: round1(launchSec),
      workflowMs: distribution(perVm.total),
      historyEventsPerVm: distribution(eventsPerVm),
      historyEventTypesPerVm: Object.fromEntries(
        [...typeTotals].sort((a, b) => b[1] - a[1]).map(([t, n]) => [t, round1(n / vms.length)]),
      ),
      hostWorkers: hostFigures,
      hostWorkerPeakRssMiB: byFlags,
      orchestratorPeakRssMiB,
      orchestratorEndRssMiB,
      cpuSec: {
        devServer: round1(cpu.devServer),
        orchestrator: round1(cpu.orchestrator),
        hostWorkers: round1(cpu.hostWorkers),
        client: round1(cpu.client),
        total: round1(cpuTotal),
      },
      cpuSecPerUpgrade: Math.round((cpuTotal / vms.length) * 1000) / 1000,
      cores: os.cpus().length,
      machine: {
        busyPct: Math.round(((machineAfter.busy - machineBefore.busy) / machineTotal) * 100),
        benchPct: Math.round((cpuTotal / machineTotal) * 100),
      },
      activities: Object.fromEntries(
        [...perActivity].map(([name, v]) => [
          name,
          { dispatchMs: distribution(v.dispatch), executeMs: distribution(v.execute) },
        ]),
      ),
      workflowTasks: {
        perVm: round1(wtExecute.length / vms.length),
        dispatchMs: distribution(wtDispatch),
        executeMs: distribution(wtExecute),
      },
      perVmMsP50: {
        total: distribution(perVm.total).p50,
        activityDispatch: distribution(perVm.dispatch).p50,
        activityExecute: distribution(perVm.execute).p50,
        decide: distribution(perVm.decide).p50,
      },
      goals: {
        ...fleetGoals,
        upgradesPerSecMet: upgradesPerSec >= fleetGoals.upgradesPerSec,
        historyEventsPerVmMet: distribution(eventsPerVm).mean <= fleetGoals.historyEventsPerVm,
        hostRssMet: Object.fromEntries(
          Object.entries(byFlags).map(([k, v]) => [k, v <= fleetGoals.hostWorkerPeakRssMiB]),
        ),
      },
    };
  } finally {
    await connection?.close().catch(() => undefined);
    await Promise.all(workers.map((w) => stopWorkerProcess(w)));
    await server.stop();
    rmSync(dbFile, { force: true });
    for (const suffix of ['-wal', '-shm', '-journal']) rmSync(dbFile + suffix, { force: true });
  }
}

/** Runs the fleet benchmark at each size, one after the other, each on a fresh dev server and workers. */
export async function runFleetBench(options: FleetBenchOptions = {}): Promise<FleetFigures[]> {
  const envArgs = process.env.FLEET_BENCH_NODE_ARGS?.split(' ').filter(Boolean);
  const o: Settings = {
    concurrency: options.concurrency ?? 64,
    maxConcurrentMigrations: options.maxConcurrentMigrations ?? 8,
    memoryMiB: options.memoryMiB ?? 16,
    ramRateMbps: options.ramRateMbps ?? 8000,
    hostVariants: options.hostVariants ?? [defaultHostVariant, nodeDefaultsHostVariant],
    nodeArgs: options.nodeArgs ?? envArgs ?? [],
    dbDir: options.dbDir ?? process.env.FLEET_BENCH_DB_DIR ?? (existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir()),
    devServerDynamicConfig: options.devServerDynamicConfig,
    faultSeed: options.faultSeed ?? Number(process.env.FLEET_BENCH_FAULT_SEED ?? Date.now() % 1_000_000),
    say: options.say ?? (() => undefined),
  };
  if (!Number.isInteger(o.faultSeed)) throw new Error(`the fault seed must be an integer (got ${o.faultSeed})`);
  // Short: UNIX socket paths must stay under 108 bytes.
  const base = mkdtempSync(path.join('/tmp', 'fu-fleet-'));
  try {
    const figures: FleetFigures[] = [];
    for (const size of options.sizes ?? defaultFleetSizes) {
      const share = size.faultyShare ?? 0;
      o.say(
        `fleet: ${size.hosts} hosts × ${size.vmsPerHost} VMs, ${o.concurrency} upgrades in flight${share > 0 ? `, faults in ${round1(share * 100)} % of the VMs` : ''}`,
      );
      figures.push(await runOneSize(size, o, base));
    }
    compareWithFaultFree(figures);
    return figures;
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}

/** Each faulty run against the fault-free run of the same hosts × VMs, when the bench ran one. */
function compareWithFaultFree(figures: FleetFigures[]): void {
  for (const f of figures) {
    if (!f.faulty) continue;
    const free = figures.find((x) => !x.faulty && x.hosts === f.hosts && x.vmsPerHost === f.vmsPerHost);
    if (!free) continue;
    const ratio = Math.round((f.faulty.vmsPerSec / free.upgradesPerSec) * 100) / 100;
    f.faulty.vsFaultFree = {
      upgradesPerSec: free.upgradesPerSec,
      wallSec: free.wallSec,
      ratio,
      healthyRatio: Math.round((f.faulty.healthyVmsPerSec / free.upgradesPerSec) * 100) / 100,
    };
    f.goals.faultyRateRatioMet = ratio >= fleetGoals.faultyRateRatio;
  }
}

const fmt = (x: number | undefined, digits = 0) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(digits));

function rateText(figures: FleetFigures[], big: FleetFigures, ceiling: number, upserts: number): string {
  const t = big.historyEventTypesPerVm;
  const markers = t.MARKER_RECORDED ?? 0;
  const activities = t.ACTIVITY_TASK_SCHEDULED ?? 0;
  const tasks = t.WORKFLOW_TASK_SCHEDULED ?? 0;
  const levers = `The Temporal dev server is the largest consumer; its work grows with the history: of ${fmt(big.historyEventsPerVm.mean)} events per VM, ${fmt(upserts)} are search-attribute upserts, each also a visibility write: FleetPhase at the milestones \`migrate\` and \`done\`, and TemporalChangeVersion, which the SDK upserts with each of the ${fmt(markers)} \`patched\` markers (a run of the current shape passes one patch, \`fewer-round-trips\`, which implies every earlier one). ${fmt(activities)} activities are ${fmt(3 * activities)} events and ${fmt(tasks)} workflow tasks ${fmt(3 * tasks)} more: the saga's steps themselves, grouped into three round trips. A Temporal service on a machine of its own is the lever; the host workers' own work comes second.`;
  const events = figures.every((f) => f.goals.historyEventsPerVmMet)
    ? ` The history stays within ${fleetGoals.historyEventsPerVm} events per VM.`
    : ` The history misses its goal of ${fleetGoals.historyEventsPerVm} events per VM (${fmt(big.historyEventsPerVm.mean)}).`;
  if (figures.every((f) => f.goals.upgradesPerSecMet)) {
    return `The upgrade rate meets its goal at every size.${events} ${levers}`;
  }
  const others = big.machine.busyPct - big.machine.benchPct;
  const saturated = big.machine.busyPct >= 90;
  return (
    `The upgrade rate ${figures.some((f) => f.goals.upgradesPerSecMet) ? 'does not always meet' : 'misses'} its goal. ` +
    (saturated
      ? `The machine is out of CPU, not waiting: the latencies above are queueing. ${fmt(big.cpuSecPerUpgrade, 3)} CPU-seconds per upgrade over ${big.cores} cores cap the rate at about ${fmt(ceiling, 1)}/s` +
        (others >= 10
          ? `, less what other processes on the machine took (${others} % of its cores during the run).`
          : '.')
      : `The machine was not saturated (${big.machine.busyPct} % busy): the upgrades waited on the service's latency rather than on CPU.`) +
    `${events} ${levers}`
  );
}

/** Sizes in order: VMs, then hosts, then each faulty run after the fault-free one of its size. */
function ordered(figures: FleetFigures[]): FleetFigures[] {
  return [...figures].sort((a, b) => a.vms - b.vms || a.hosts - b.hosts || a.faultyShare - b.faultyShare);
}

/** `1000/1000`, or `950/950 healthy` for a faulty size. */
const verifiedText = (f: FleetFigures) => `${f.verifiedVms}/${f.healthyVms}${f.faulty ? ' healthy' : ''}`;

const kinds = (counts: Record<string, number>) =>
  Object.entries(counts)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');

/** A faulty size against the fault-free run of its size: rates, outcomes, and what held the tail. */
function faultyText(f: FleetFigures): string {
  const x = f.faulty!;
  const vs = x.vsFaultFree;
  const pct = (r: number) => `${fmt(r * 100)} %`;
  const name = sizeName(f, ' × ');
  const freeName = `${f.hosts} × ${f.vmsPerHost}`;
  const table = `| run | VMs | wall, s | VMs/s, all VMs / wall | of the fault-free rate | healthy VMs / until the last healthy one, /s | of the fault-free rate |
|---|---|---|---|---|---|---|
${vs ? `| ${freeName} | ${f.vms} | ${fmt(vs.wallSec, 1)} | ${fmt(vs.upgradesPerSec, 1)} | 100 % | ${fmt(vs.upgradesPerSec, 1)} | 100 % |\n` : ''}| ${name} | ${f.vms} | ${fmt(f.wallSec, 1)} | **${fmt(x.vmsPerSec, 1)}** | **${vs ? pct(vs.ratio) : 'n/a'}** | ${fmt(x.healthyVmsPerSec, 1)} (${f.healthyVms} in ${fmt(x.healthyWallSec, 1)} s) | ${vs ? pct(vs.healthyRatio) : 'n/a'} |`;
  const goal = vs
    ? `Goal ≥ ${pct(fleetGoals.faultyRateRatio)} of the fault-free rate, judged on the whole run: **${f.goals.faultyRateRatioMet ? 'met' : 'missed'}** (${pct(vs.ratio)}); the healthy VMs alone reach ${pct(vs.healthyRatio)}.`
    : `This bench run had no fault-free ${freeName} to compare with (goal ≥ ${pct(fleetGoals.faultyRateRatio)} of its rate).`;
  // The three longest, each activity that failed, was retried or took a second or more.
  const slowest = x.slowest
    .slice(0, 3)
    .map((s) => {
      const notable = s.activities.filter((a) => a.end !== 'completed' || a.attempts > 1 || a.ms >= 1000);
      const steps = notable
        .map(
          (a) =>
            `${a.type} ${a.end} after ${a.attempts} attempt${a.attempts === 1 ? '' : 's'} over ${fmt(a.ms / 1000, 1)} s`,
        )
        .join(', ');
      return (
        `${s.vm} (${s.fault}) ${s.outcome} after ${fmt(s.ms / 1000, 1)} s${steps ? `: ${steps}` : ''}` +
        (s.reason ? ` (“${s.reason.replace(/\s+/g, ' ')}”)` : '')
      );
    })
    .join('; ');
  const tail = f.wallSec - x.healthyWallSec;
  const later = Object.keys(x.afterLastHealthy).length
    ? `; the ${fmt(tail, 1)} s after it belong to the faulty VMs that ended later — ${kinds(x.afterLastHealthy)}`
    : '';
  return `### With faults: ${name} (${x.vms} of ${f.vms} VMs faulty)

The same fleet, with a fault armed over QMP (\`x-sim-inject-fault\`) in ${x.vms} VMs picked at random once the host
workers launched them, before the upgrades start (seed ${x.seed}; \`FLEET_BENCH_FAULT_SEED=${x.seed}\` replays the choice):
the source faults of the rollout's scale test (\`infra/simulator/source-faults.ts\`) — ${kinds(x.faultsArmed)}.
Every VM's \`upgradeVm\` (faulty or not) is given the policy \`${JSON.stringify(x.policy)}\` as the scale test's
rollout is, the strategies left at their default: a migration that stops making progress is given up after
${x.policy.progressTimeoutSec ?? 'n/a'} s rather than the default 150 s, which one stalled VM alone would make the run's length.
The fault-free row is the ${freeName} run of the same bench run.

${table}

${goal} Faulty VMs by outcome: ${kinds(x.outcomes)}; what their monitors said afterwards: ${kinds(x.checked)}. All
${f.healthyVms} healthy VMs ended upgraded and verified (${verifiedText(f)}). History events per VM: healthy ${fmt(x.healthyHistoryEventsPerVm.mean, 1)}, faulty ${fmt(x.faultyHistoryEventsPerVm.mean, 1)} (p95 ${fmt(x.faultyHistoryEventsPerVm.p95)}, max ${fmt(x.faultyHistoryEventsPerVm.max)}); one faulty VM p50 ${fmt(x.faultyWorkflowMs.p50)} ms, max ${fmt(x.faultyWorkflowMs.max)} ms.

What holds the tail: the last healthy VM was done at ${fmt(x.healthyWallSec, 1)} s of the run's ${fmt(f.wallSec, 1)} s${later}. The longest faulty VMs (from their results and histories): ${slowest}.
`;
}

/** The fleet section of docs/BENCHMARKS.md: figures per size, and where the time goes at the largest. */
export function fleetBenchmarksMarkdown(all: FleetFigures[]): string {
  if (!all.length) return '';
  const figures = ordered(all);
  const faultFree = figures.filter((f) => !f.faulty);
  const faulty = figures.filter((f) => f.faulty);
  const variants = [...new Set(figures.flatMap((f) => Object.keys(f.hostWorkerPeakRssMiB)))];
  const rows = figures
    .map(
      (f) =>
        `| ${sizeName(f, ' × ')} | **${fmt(f.upgradesPerSec, 1)}** | ${verifiedText(f)} | ${fmt(f.historyEventsPerVm.mean, 1)} | ${variants.map((v) => fmt(f.hostWorkerPeakRssMiB[v])).join(' | ')} | ${fmt(f.orchestratorPeakRssMiB)} | ${fmt(f.cpuSecPerUpgrade, 3)} | ${fmt((f.cpuSec.devServer / f.cpuSec.total) * 100)} % | ${fmt(f.workflowMs.p50)} |`,
    )
    .join('\n');
  // Where the time goes: at the largest fault-free size.
  const big = (faultFree.length ? faultFree : figures).reduce((a, b) => (b.vms > a.vms ? b : a));
  const activities = Object.entries(big.activities)
    .map(
      ([name, a]) =>
        `| ${name} | ${fmt(a.dispatchMs.p50)} | ${fmt(a.dispatchMs.p95)} | ${fmt(a.executeMs.p50)} | ${fmt(a.executeMs.p95)} |`,
    )
    .join('\n');
  const types = Object.entries(big.historyEventTypesPerVm)
    .map(([t, n]) => `${t.toLowerCase()} ${n}`)
    .join(', ');
  const upserts = big.historyEventTypesPerVm.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES ?? 0;
  const ceiling = big.cores / big.cpuSecPerUpgrade;
  const share = (x: number) => `${fmt((x / big.cpuSec.total) * 100)} %`;
  const rssByVariant = variants
    .map((v) => `${v}: ${fmt(Math.max(...figures.map((f) => f.hostWorkerPeakRssMiB[v] ?? 0)))} MiB`)
    .join('; ');
  return `## Fleet: simulated hosts × VMs through Temporal

\`runFleetBench\` (\`infra/bench/fleet.ts\`; alone: \`node dist/infra/bench/fleet.js\`): a Temporal dev server (SQLite
on tmpfs), the orchestrator worker and one host worker per host, each its own process (\`fleet-upgrade
orchestrator-worker\`, \`fleet-upgrade host-worker --config …\`). The host workers' binaries are in-process QEMU
simulators (\`local\` dialect, 10.0.50 → 10.1.50); each worker launches its VMs (one tap, ${big.memoryMiB} MiB) itself at start. A client
runs \`upgradeVm\` for every VM, ${big.concurrency} at a time, hosts interleaved; afterwards every VM's record and monitor are
checked from outside. Host workers alternate between the launch a user gets (*defaults*: \`fleet-upgrade
host-worker\` applies \`${variantName(tunedHostVariant)}\` itself) and Node's own defaults
(\`${variantName(nodeDefaultsHostVariant)}\`). Goals: ≥ ${fleetGoals.upgradesPerSec} upgrades/s, ≤ ${fleetGoals.historyEventsPerVm} history events per VM, host worker peak RSS ≤ ${fleetGoals.hostWorkerPeakRssMiB} MiB; with faults in 5 % of the VMs (a size marked @5 %), ≥ ${fmt(fleetGoals.faultyRateRatio * 100)} % of the fault-free rate. A faulty size's upgrades/s counts every VM, whatever its outcome, and its verified column the healthy VMs.

| fleet (hosts × VMs) | upgrades/s | verified | history events/VM | ${variants.map((v) => `host worker peak RSS, MiB (${v})`).join(' | ')} | orchestrator peak RSS, MiB | CPU s/upgrade (all processes) | dev server share of CPU | one VM, p50 ms |
|---|---|---|---|${variants.map(() => '---|').join('')}---|---|---|---|
${rows}

Where the time goes at ${big.hosts} × ${big.vmsPerHost} (from the histories: scheduled → started is the wait for a worker,
started → completed the activity's work and its report; ms):

| activity | dispatch p50 | dispatch p95 | execute p50 | execute p95 |
|---|---|---|---|---|
${activities}

Workflow tasks: ${fmt(big.workflowTasks.perVm, 1)} per VM, dispatch p50 ${fmt(big.workflowTasks.dispatchMs.p50)} ms (p95 ${fmt(big.workflowTasks.dispatchMs.p95)}), execute p50 ${fmt(big.workflowTasks.executeMs.p50)} ms. One VM's ${fmt(big.perVmMsP50.total)} ms (p50) split: activities waiting ${fmt(big.perVmMsP50.activityDispatch)}, activities running ${fmt(big.perVmMsP50.activityExecute)}, workflow tasks and the service in between ${fmt(big.perVmMsP50.decide)}. Events per VM: ${types}.

CPU while the upgrades ran: ${fmt(big.cpuSec.total, 1)} s over ${fmt(big.wallSec, 1)} s on ${big.cores} cores; the machine's cores were ${big.machine.busyPct} % busy, ${big.machine.benchPct} % with the bench's processes — dev server ${share(big.cpuSec.devServer)}, host workers ${share(big.cpuSec.hostWorkers)}, orchestrator ${share(big.cpuSec.orchestrator)}, client ${share(big.cpuSec.client)}.
${rateText(faultFree.length ? faultFree : figures, big, ceiling, upserts)}
Host worker peak RSS (highest of all sizes) — ${rssByVariant}. The difference is V8's heap sizing, not the VMs: Node lets the young generation grow to 16 MiB semispaces and the old generation grow to several times its live size between full collections (a host worker under steady load is never idle enough for V8's memory reducer), and glibc keeps a heap per thread of the core SDK; an in-process VM itself holds about 16 KiB of heap, 30 KiB resident.
${faulty.map((f) => `\n${faultyText(f)}`).join('')}`;
}

/** One row per size, for console.table and the docs. */
export function fleetSummaryRows(figures: FleetFigures[]): Record<string, string | number>[] {
  return ordered(figures).map((f) => ({
    fleet: sizeName(f),
    'upgrades/s': f.upgradesPerSec,
    'of fault-free': f.faulty?.vsFaultFree ? `${Math.round(f.faulty.vsFaultFree.ratio * 100)}%` : '',
    'healthy/s': f.faulty ? f.faulty.healthyVmsPerSec : '',
    verified: verifiedText(f),
    'events/VM': f.historyEventsPerVm.mean,
    ...Object.fromEntries(Object.entries(f.hostWorkerPeakRssMiB).map(([k, v]) => [`host peak RSS MiB (${k})`, v])),
    'orchestrator peak RSS MiB': f.orchestratorPeakRssMiB,
    'CPU s/upgrade': f.cpuSecPerUpgrade,
    'dev server CPU share': `${Math.round((f.cpuSec.devServer / f.cpuSec.total) * 100)}%`,
    'VM p50 ms': f.workflowMs.p50,
  }));
}

function parseArgs(argv: string[]): { json: boolean; markdown: boolean; options: FleetBenchOptions } {
  const options: FleetBenchOptions = {};
  let json = false;
  let markdown = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--json') json = true;
    else if (a === '--markdown') markdown = true;
    else if (a === '--sizes') {
      options.sizes = value()
        .split(',')
        .map((s) => {
          const m = /^(\d+)x(\d+)(?:@(\d+(?:\.\d+)?)%)?$/.exec(s.trim());
          if (!m) throw new Error(`--sizes takes HOSTSxVMS[@FAULTY%],... (got ${s})`);
          const size: FleetSize = { hosts: Number(m[1]), vmsPerHost: Number(m[2]) };
          if (m[3] !== undefined) {
            const pct = Number(m[3]);
            if (!(pct > 0 && pct < 100))
              throw new Error(`--sizes: the faulty share must be above 0 and below 100 % (got ${s})`);
            size.faultyShare = pct / 100;
          }
          return size;
        });
    } else if (a === '--concurrency') {
      options.concurrency = Number(value());
      if (!Number.isInteger(options.concurrency) || options.concurrency < 1)
        throw new Error('--concurrency must be a positive integer');
    } else throw new Error(`unknown option ${a}`);
  }
  return { json, markdown, options };
}

if (require.main === module) {
  const started = Date.now();
  Promise.resolve()
    .then(() => parseArgs(process.argv.slice(2)))
    .then(async ({ json, markdown, options }) => {
      const figures = await runFleetBench({ ...options, say: (l) => process.stderr.write(`${l}\n`) });
      if (json) return void process.stdout.write(`${JSON.stringify(figures)}\n`);
      if (markdown) return void process.stdout.write(fleetBenchmarksMarkdown(figures));
      console.table(fleetSummaryRows(figures));
      for (const f of figures) {
        if (f.faulty) {
          const x = f.faulty;
          console.log(
            `${sizeName(f)}: seed ${x.seed}; faults ${JSON.stringify(x.faultsArmed)}; faulty outcomes ${JSON.stringify(x.outcomes)}; ` +
              `all ${x.vmsPerSec}/s${x.vsFaultFree ? ` (${Math.round(x.vsFaultFree.ratio * 100)} % of ${x.vsFaultFree.upgradesPerSec}/s)` : ''}, ` +
              `healthy ${x.healthyVmsPerSec}/s in ${x.healthyWallSec} s of ${f.wallSec} s; longest faulty: ` +
              x.slowest.map((s) => `${s.vm} ${s.fault} ${s.outcome} ${s.ms} ms`).join(', '),
          );
        }
        console.log(
          `${sizeName(f)}: per VM p50 ${f.perVmMsP50.total} ms = activities waiting ${f.perVmMsP50.activityDispatch} + running ${f.perVmMsP50.activityExecute} + deciding ${f.perVmMsP50.decide}; CPU s ${JSON.stringify(f.cpuSec)}`,
        );
        console.table(
          Object.fromEntries(
            Object.entries(f.activities).map(([k, v]) => [
              k,
              {
                'dispatch p50': v.dispatchMs.p50,
                'dispatch p95': v.dispatchMs.p95,
                'execute p50': v.executeMs.p50,
                'execute p95': v.executeMs.p95,
              },
            ]),
          ),
        );
      }
      process.stderr.write(
        `fleet bench: ${((Date.now() - started) / 1000).toFixed(0)} s on ${os.cpus().length} cores\n`,
      );
    })
    .catch((err: unknown) => {
      process.stderr.write(`fleet bench: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    });
}
