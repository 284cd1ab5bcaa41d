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
// Setup choices (each an option): the dev server's SQLite file lives on tmpfs (/dev/shm) when there is
// one, as its default in-memory mode would (on disk, fsyncs cost a third of the throughput here); host
// workers alternate between the launch a user gets (`fleet-upgrade host-worker`, which applies its memory
// settings itself: V8's young generation capped, its old generation's growth bounded, fewer glibc heaps;
// bin/fleet-upgrade.js) and Node's own defaults (FLEET_UPGRADE_NODE_TUNING=0), so each run compares both
// under the same load. The CLI applies its settings by execve, so the pid spawned is the worker's: its
// VmHWM is the worker's peak.
//
// Run alone: `npm run build && node dist/infra/bench/fleet.js [--json] [--sizes 2x50,4x100,4x250]
// [--concurrency N] [--markdown]`; infra/bench/main.ts calls runFleetBench (and fleetBenchmarksMarkdown).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { listVmRecords } from '../../activities/host/vm-record';
import { QmpClient } from '../../activities/qmp/client';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { searchAttributeTypes, upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import { startDevServer, type DevServer } from '../devserver';
import { pool, startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../worker-processes';

export interface FleetSize {
  hosts: number;
  vmsPerHost: number;
}

export interface FleetBenchOptions {
  /** Default: 2×50, 4×100, 4×250. */
  sizes?: FleetSize[];
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

export interface FleetFigures {
  hosts: number;
  vmsPerHost: number;
  vms: number;
  /** Guest RAM of each VM, MiB. */
  memoryMiB: number;
  concurrency: number;
  /** Outcome → count; every VM should be `upgraded`. */
  outcomes: Record<string, number>;
  /** VMs whose record and monitor, checked from outside afterwards, say they run the new version. */
  verifiedVms: number;
  /** First workflow start → last result. */
  wallSec: number;
  upgradesPerSec: number;
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
    upgradesPerSecMet: boolean;
    historyEventsPerVmMet: boolean;
    /** Variant → whether every host worker run that way met the RSS goal. */
    hostRssMet: Record<string, boolean>;
  };
}

export const fleetGoals = { upgradesPerSec: 25, historyEventsPerVm: 30, hostWorkerPeakRssMiB: 150 };
export const defaultFleetSizes: FleetSize[] = [
  { hosts: 2, vmsPerHost: 50 },
  { hosts: 4, vmsPerHost: 100 },
  { hosts: 4, vmsPerHost: 250 },
];

const round1 = (x: number) => Math.round(x * 10) / 10;

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

async function runningNewVersion(qmpSocket: string): Promise<boolean> {
  const q = await QmpClient.connect(qmpSocket, { timeoutMs: 10_000 });
  try {
    const status = (await q.execute('query-status')) as { running?: boolean };
    const { qemu: v } = (await q.execute('query-version')) as {
      qemu?: { major: number; minor: number; micro: number };
    };
    return status.running === true && `${v?.major}.${v?.minor}.${v?.micro}` === '10.1.50';
  } finally {
    await q.close();
  }
}

type Settings = Required<Omit<FleetBenchOptions, 'sizes' | 'devServerDynamicConfig'>> &
  Pick<FleetBenchOptions, 'devServerDynamicConfig'>;

async function runOneSize(size: FleetSize, o: Settings, base: string): Promise<FleetFigures> {
  const { say } = o;
  const tag = `${size.hosts}x${size.vmsPerHost}`;
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
    const vms: { hostId: string; vmId: string }[] = [];
    for (let v = 0; v < size.vmsPerHost; v++) for (const { hostId } of hosts) vms.push({ hostId, vmId: `vm${v}` });

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
    let results: UpgradeVmResult[];
    try {
      results = await pool(vms, o.concurrency, async ({ hostId, vmId }) => {
        const r = (await client.workflow.execute('upgradeVm', {
          taskQueue: 'fleet-upgrade',
          workflowId: `upgrade-vm/${hostId}/${vmId}`,
          args: [{ hostId, vmId, target: 'sim-new' }],
          typedSearchAttributes: upgradeVmSearchAttributes({ hostId, vmId, target: 'sim-new' }),
        })) as UpgradeVmResult;
        done++;
        return r;
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
    const outcomes: Record<string, number> = {};
    for (const r of results) outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1;
    const upgradesPerSec = round1(results.length / wallSec);
    say(`  ${results.length} upgrades in ${wallSec.toFixed(1)} s: ${upgradesPerSec}/s`);

    // Where the time went, from the histories.
    const eventsPerVm: number[] = [];
    const typeTotals = new Map<string, number>();
    const perVm = { total: [] as number[], dispatch: [] as number[], execute: [] as number[], decide: [] as number[] };
    const wtDispatch: number[] = [];
    const wtExecute: number[] = [];
    const perActivity = new Map<string, { dispatch: number[]; execute: number[] }>();
    await pool(vms, 16, async ({ hostId, vmId }) => {
      const f = historyFigures(await client.workflow.getHandle(`upgrade-vm/${hostId}/${vmId}`).fetchHistory());
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

    // Every VM accounted for, checked from outside the host workers.
    let verifiedVms = 0;
    for (const { runtimeDir } of hosts) {
      const records = await listVmRecords(runtimeDir);
      const ok = await pool(records, 16, async (r) =>
        r.generation === 2 && r.binary.label === 'sim-new' ? runningNewVersion(r.qmpSocket).catch(() => false) : false,
      );
      verifiedVms += ok.filter(Boolean).length;
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
      memoryMiB: o.memoryMiB,
      concurrency: o.concurrency,
      outcomes,
      verifiedVms,
      wallSec: round1(wallSec),
      upgradesPerSec,
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
      cpuSecPerUpgrade: Math.round((cpuTotal / results.length) * 1000) / 1000,
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
    say: options.say ?? (() => undefined),
  };
  // Short: UNIX socket paths must stay under 108 bytes.
  const base = mkdtempSync(path.join('/tmp', 'fu-fleet-'));
  try {
    const figures: FleetFigures[] = [];
    for (const size of options.sizes ?? defaultFleetSizes) {
      o.say(`fleet: ${size.hosts} hosts × ${size.vmsPerHost} VMs, ${o.concurrency} upgrades in flight`);
      figures.push(await runOneSize(size, o, base));
    }
    return figures;
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}

const fmt = (x: number | undefined, digits = 0) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(digits));

function rateText(figures: FleetFigures[], big: FleetFigures, ceiling: number, upserts: number): string {
  const t = big.historyEventTypesPerVm;
  const markers = t.MARKER_RECORDED ?? 0;
  const activities = t.ACTIVITY_TASK_SCHEDULED ?? 0;
  const tasks = t.WORKFLOW_TASK_SCHEDULED ?? 0;
  const levers = `The Temporal dev server is the largest consumer; its work grows with the history: of ${fmt(big.historyEventsPerVm.mean)} events per VM, ${fmt(upserts)} are search-attribute upserts, each also a visibility write: FleetPhase at the milestones \`migrate\` and \`done\`, and TemporalChangeVersion, which the SDK upserts with each of the ${fmt(markers)} \`patched\` markers (a marker and an upsert per patch and workflow; they go once the patches are retired — \`deprecatePatch\`, then removed — when no workflow of an earlier shape is left). ${fmt(activities)} activities are ${fmt(3 * activities)} events and ${fmt(tasks)} workflow tasks ${fmt(3 * tasks)} more: the saga's steps themselves. A Temporal service on a machine of its own is the lever; the host workers' own work comes second.`;
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

/** The fleet section of docs/BENCHMARKS.md: figures per size, and where the time goes at the largest. */
export function fleetBenchmarksMarkdown(figures: FleetFigures[]): string {
  if (!figures.length) return '';
  const variants = [...new Set(figures.flatMap((f) => Object.keys(f.hostWorkerPeakRssMiB)))];
  const rows = figures
    .map(
      (f) =>
        `| ${f.hosts} × ${f.vmsPerHost} | **${fmt(f.upgradesPerSec, 1)}** | ${f.verifiedVms}/${f.vms} | ${fmt(f.historyEventsPerVm.mean, 1)} | ${variants.map((v) => fmt(f.hostWorkerPeakRssMiB[v])).join(' | ')} | ${fmt(f.orchestratorPeakRssMiB)} | ${fmt(f.cpuSecPerUpgrade, 3)} | ${fmt((f.cpuSec.devServer / f.cpuSec.total) * 100)} % | ${fmt(f.workflowMs.p50)} |`,
    )
    .join('\n');
  const big = figures.reduce((a, b) => (b.vms > a.vms ? b : a));
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
(\`${variantName(nodeDefaultsHostVariant)}\`). Goals: ≥ ${fleetGoals.upgradesPerSec} upgrades/s, ≤ ${fleetGoals.historyEventsPerVm} history events per VM, host worker peak RSS ≤ ${fleetGoals.hostWorkerPeakRssMiB} MiB.

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
${rateText(figures, big, ceiling, upserts)}
Host worker peak RSS (highest of all sizes) — ${rssByVariant}. The difference is V8's heap sizing, not the VMs: Node lets the young generation grow to 16 MiB semispaces and the old generation grow to several times its live size between full collections (a host worker under steady load is never idle enough for V8's memory reducer), and glibc keeps a heap per thread of the core SDK; an in-process VM itself holds about 16 KiB of heap, 30 KiB resident.
`;
}

/** One row per size, for console.table and the docs. */
export function fleetSummaryRows(figures: FleetFigures[]): Record<string, string | number>[] {
  return figures.map((f) => ({
    fleet: `${f.hosts}×${f.vmsPerHost}`,
    'upgrades/s': f.upgradesPerSec,
    verified: `${f.verifiedVms}/${f.vms}`,
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
          const m = /^(\d+)x(\d+)$/.exec(s.trim());
          if (!m) throw new Error(`--sizes takes HOSTSxVMS,... (got ${s})`);
          return { hosts: Number(m[1]), vmsPerHost: Number(m[2]) };
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
        console.log(
          `${f.hosts}×${f.vmsPerHost}: per VM p50 ${f.perVmMsP50.total} ms = activities waiting ${f.perVmMsP50.activityDispatch} + running ${f.perVmMsP50.activityExecute} + deciding ${f.perVmMsP50.decide}; CPU s ${JSON.stringify(f.cpuSec)}`,
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
