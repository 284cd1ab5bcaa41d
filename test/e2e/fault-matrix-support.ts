// The fault matrix's machinery (test/e2e/fault-matrix.test.ts holds the table of cases). Each case gets its
// own simulated host: a runtime folder, a simulator ledger, and two "binaries" (old, new) that are small
// shell wrappers around the QEMU simulator. A wrapper knows which role it is started in from its command
// line (probe: `-machine none`; destination: `-incoming`; help: `-machine …,help`; source otherwise) and adds
// the case's `--sim-fault` options to that role only, optionally to the first such process only. Faults on
// the source go over its monitor right after launch, before the workflow starts, or from the destination's
// wrapper at the moment the saga launches the destination (the source's monitor is free then: the
// start-destination activity has closed it). Nothing here connects to a monitor an activity may hold.
import { CancelledFailure } from '@temporalio/common';
import { WorkflowFailedError } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { launchVm } from '../../activities/host/vm-launch';
import { readVmRecord, type VmRecord } from '../../activities/host/vm-record';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { projectRoot, requireRealPart } from '../../infra/real-parts';
import { backendKey, readLedger, readLedgerEvents, runningIntervals, type LedgerEvent } from '../../infra/simulator';
import { RawQmp } from '../../infra/simulator/raw-qmp';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import type { UpgradeOutcome, UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { killQemusUnder } from '../helpers/cleanup';
import { writeCounterGuest } from '../../infra/guest/counter-guest';
import type { Harness } from '../helpers/temporal-harness';
import { BUILD_DIR, buildSimulator, LAUNCHER } from '../simulator/harness';

// ---------------------------------------------------------------------------------------------------------
// The table's vocabulary

/** The saga's steps as the matrix names them. */
export const PHASES = [
  'inspect',
  'probe',
  'start destination',
  'configure / migrate setup',
  'migrate active',
  'device / switchover',
  'verify',
  'finalize',
  'rollback',
  'migrate back',
] as const;
export type MatrixPhase = (typeof PHASES)[number];

export const FAULTS = [
  'source crash',
  'destination crash',
  'target binary crash',
  'QMP hang',
  'error reply',
  'no progress',
  'verification fails',
  'host worker killed',
  'host worker stopped',
  'cancellation',
] as const;
export type MatrixFault = (typeof FAULTS)[number];

/** Where the guest runs at the end: the new process, the old one, a third process migrated back, nowhere. */
export type Runs = 'destination' | 'source' | 'migrated-back' | 'nowhere';

export type SimFault = `${'setup' | 'active' | 'device' | 'incoming' | 'cont' | 'qmp'}:${
  'crash' | 'hang' | 'error' | 'slow'}`;

type Role = 'source' | 'destination' | 'probe';

/** `--sim-fault` options for the processes of one binary in one role. */
export interface RoleFaults {
  faults: SimFault[];
  /** Only the first process started in this role gets them (a retry then finds a healthy one). */
  once?: boolean;
}

export interface FaultPlan {
  /** Injected over the source's monitor right after launch, before the workflow starts. */
  source?: SimFault[];
  /** Command-line faults of the target binary's destination processes. */
  destination?: RoleFaults;
  /** Command-line faults of the target binary's probe processes (`-machine none`). */
  probe?: RoleFaults;
  /**
   * When the saga launches a destination (the first, or the `launch`-th): inject this fault into the source;
   * with `now`, send the source a command at once so a `qmp` fault fires there and then.
   */
  atDestinationLaunch?: { fault: SimFault; now?: boolean; launch?: number };
  /** The destination reports another version than its probe did (verification must fail). */
  destinationVersion?: string;
  /** RAM transfer rate of the source (Mbit/s); slow enough to act while the migration is active. */
  sourceRamRateMbps?: number;
  /** Command-line faults of the old binary's destination processes: the migration back after a failed verify. */
  backDestination?: RoleFaults;
}

/** When the test acts while the workflow runs, read from the simulator's ledger. */
export type Moment =
  | 'the workflow starts'
  | 'the destination is launched'
  | 'the migration is active'
  | 'the destination runs'
  | 'the source quits'
  | 'the migration back is launched';

/** What the test does at that moment. */
export type Act =
  | 'kill the destination'
  | 'freeze the destination'
  | 'kill the source'
  | 'freeze the source'
  | 'kill the host worker, start a new one'
  | 'stop the host worker (SIGTERM), start a new one'
  | 'cancel the workflow';

/** Something the test does while the workflow runs. */
export interface DuringAction {
  when: Moment;
  act: Act;
}

export interface MatrixCase {
  id: string;
  phase: MatrixPhase;
  fault: MatrixFault;
  /** How the fault is produced, in a few words. */
  how: string;
  plan: FaultPlan;
  during?: DuringAction;
  policy?: Partial<MigrationPolicy>;
  /** Waits out retries or timeouts (tens of seconds): started first, so the run ends sooner. */
  slow?: true;
  expect: { outcome: UpgradeOutcome | 'cancelled'; runs: Runs; reason?: RegExp };
}

export interface NotProduced {
  phase: MatrixPhase | 'any';
  fault: MatrixFault | string;
  why: string;
}

export interface Observation {
  outcome: UpgradeOutcome | 'cancelled' | 'workflow failed';
  reason: string;
  actions: string[];
  runs: Runs | 'several' | 'unknown';
  violations: string[];
  ms: number;
}

// ---------------------------------------------------------------------------------------------------------
// Simulated hosts

export const OLD_VERSION = '10.0.50';
export const NEW_VERSION = '10.1.50';
const DIALECT = 'backend-transfer-list';

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The hook a destination's wrapper runs once before exec: a fault into the source's monitor. */
function writeHookScript(file: string): void {
  const raw = path.join(BUILD_DIR, 'infra', 'simulator', 'raw-qmp.js');
  writeFileSync(
    file,
    `'use strict';
// Injects a fault into a simulated QEMU's monitor; with "now", sends a command so a qmp fault fires at once.
const { RawQmp } = require(${JSON.stringify(raw)});
const [sock, fault, now] = process.argv.slice(2);
const [phase, action] = fault.split(':');
(async () => {
  const c = await RawQmp.connect(sock, { timeoutMs: 5000 });
  await c.cmd('x-sim-inject-fault', { phase, action });
  if (now === 'now') {
    c.sendRaw('{"execute":"query-status"}\\n');
    await new Promise((r) => setTimeout(r, 300));
  }
  c.close();
})().catch((e) => {
  process.stderr.write('fault hook: ' + e.message + '\\n');
});
`,
  );
}

function wrapperScript(o: {
  dir: string;
  name: string;
  version: string;
  ledger: string;
  sourceArgs?: string[];
  roles: Partial<Record<Role, { always: string[]; once: boolean }>>;
  destinationVersion?: string;
  hook?: { script: string; counter: string; launch: number; sourceQmp: string; fault: SimFault; now: boolean };
}): string {
  const lines = [
    '#!/bin/sh',
    '# A fault-matrix QEMU: the simulator, with faults for the role this process is started in.',
    'role=source',
    'prev=',
    'for a in "$@"; do',
    '  case "$a" in',
    '    -incoming) role=destination ;;',
    '    *,help) role=help ;;',
    '  esac',
    '  if [ "$prev" = "-machine" ] && [ "$a" = "none" ]; then role=probe; fi',
    '  prev="$a"',
    'done',
    'extra=',
    `version=${q(o.version)}`,
  ];
  for (const [role, r] of Object.entries(o.roles) as [Role, { always: string[]; once: boolean }][]) {
    const args = r.always.flatMap((f) => ['--sim-fault', f]).join(' ');
    if (!args) continue;
    if (r.once) {
      const marker = path.join(o.dir, `${o.name}.${role}.once`);
      writeFileSync(marker, args);
      lines.push(
        `if [ "$role" = ${role} ] && mv ${q(marker)} ${q(marker + '.used')} 2>/dev/null; then extra=${q(args)}; fi`,
      );
    } else {
      lines.push(`if [ "$role" = ${role} ]; then extra=${q(args)}; fi`);
    }
  }
  if (o.destinationVersion) lines.push(`if [ "$role" = destination ]; then version=${q(o.destinationVersion)}; fi`);
  if (o.hook) {
    const counter = q(o.hook.counter);
    lines.push(
      'if [ "$role" = destination ]; then',
      `  n=$(( $(cat ${counter} 2>/dev/null || echo 0) + 1 )); echo $n > ${counter}`,
      'fi',
      `if [ "$role" = destination ] && [ "$n" = ${o.hook.launch} ]; then`,
      `  ${q(process.execPath)} ${q(o.hook.script)} ${q(o.hook.sourceQmp)} ${o.hook.fault}${o.hook.now ? ' now' : ''} 2>>${q(path.join(o.dir, 'hook.log'))}`,
      'fi',
    );
  }
  if (o.sourceArgs?.length) lines.push(`if [ "$role" = source ]; then extra="$extra ${o.sourceArgs.join(' ')}"; fi`);
  lines.push(
    `QEMU_SIM_MAIN=${q(path.join(BUILD_DIR, 'infra', 'simulator', 'main.js'))} exec ${q(process.execPath)} ${q(LAUNCHER)} \\`,
    `  --sim-dialect ${DIALECT} --sim-version "$version" --sim-state-dir ${q(o.ledger)} $extra "$@"`,
    '',
  );
  return lines.join('\n');
}

export interface CaseHost {
  dir: string;
  ledger: string;
  config: HostConfig;
  configFile: string;
  vmId: string;
}

export interface MatrixEnv {
  root: string;
  harness: Harness;
  hookScript: string;
}

/** Builds the simulator for the wrappers (its own build, not dist/) and writes the hook script. */
export function prepareMatrix(root: string, harness: Harness): MatrixEnv {
  buildSimulator();
  const hookScript = path.join(root, 'hook.js');
  writeHookScript(hookScript);
  return { root, harness, hookScript };
}

const VM_ID = 'vm';

export function makeCaseHost(env: MatrixEnv, n: number, c: MatrixCase): CaseHost {
  const dir = path.join(env.root, `c${n}`);
  const ledger = path.join(dir, 'ledger');
  mkdirSync(ledger, { recursive: true });
  const rt = path.join(dir, 'rt');
  const sourceQmp = path.join(rt, 'run', `${VM_ID}.1.qmp`);
  const sourceArgs = c.plan.sourceRamRateMbps ? ['--sim-ram-rate-mbps', String(c.plan.sourceRamRateMbps)] : [];
  const oldBin = path.join(dir, 'qemu-old');
  const oldRoles: Partial<Record<Role, { always: string[]; once: boolean }>> = {};
  if (c.plan.backDestination) {
    oldRoles.destination = { always: c.plan.backDestination.faults, once: !!c.plan.backDestination.once };
  }
  writeFileSync(oldBin, wrapperScript({ dir, name: 'old', version: OLD_VERSION, ledger, sourceArgs, roles: oldRoles }));
  const newBin = path.join(dir, 'qemu-new');
  const roles: Partial<Record<Role, { always: string[]; once: boolean }>> = {};
  if (c.plan.destination) roles.destination = { always: c.plan.destination.faults, once: !!c.plan.destination.once };
  if (c.plan.probe) roles.probe = { always: c.plan.probe.faults, once: !!c.plan.probe.once };
  writeFileSync(
    newBin,
    wrapperScript({
      dir,
      name: 'new',
      version: NEW_VERSION,
      ledger,
      roles,
      ...(c.plan.destinationVersion ? { destinationVersion: c.plan.destinationVersion } : {}),
      ...(c.plan.atDestinationLaunch
        ? {
            hook: {
              script: env.hookScript,
              counter: path.join(dir, 'destination-launches'),
              launch: c.plan.atDestinationLaunch.launch ?? 1,
              sourceQmp,
              fault: c.plan.atDestinationLaunch.fault,
              now: !!c.plan.atDestinationLaunch.now,
            },
          }
        : {}),
    }),
  );
  chmodSync(oldBin, 0o755);
  chmodSync(newBin, 0o755);
  const config = parseHostConfig({
    hostId: `fm-${n}`,
    runtimeDir: rt,
    binaries: { old: { path: oldBin }, new: { path: newBin } },
    // Short enough that a hung monitor costs seconds, long enough for a loaded two-core machine.
    limits: { qmpTimeoutMs: 2_500, launchTimeoutMs: 8_000, killGraceMs: 500 },
  });
  const configFile = path.join(dir, 'host.yaml');
  writeFileSync(
    configFile,
    stringify({
      hostId: config.hostId,
      runtimeDir: rt,
      binaries: { old: { path: oldBin }, new: { path: newBin } },
      limits: config.limits,
      temporal: { address: env.harness.server.address, namespace: env.harness.server.namespace },
    }),
  );
  return { dir, ledger, config, configFile, vmId: VM_ID };
}

export const tapsOf = (n: number) => [`fm${n}a`, `fm${n}b`];

export async function launchSource(host: CaseHost, n: number): Promise<VmRecord> {
  mkdirSync(host.config.runtimeDir, { recursive: true, mode: 0o700 });
  const disk = writeCounterGuest(path.join(host.dir, 'disk.img'));
  const [a, b] = tapsOf(n);
  const spec = parseVmSpec({
    id: host.vmId,
    binary: 'old',
    machine: 'pc-i440fx-7.2',
    accel: 'tcg',
    memoryMiB: 64,
    drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
    netdevs: [
      { id: 'net0', type: 'tap', ifname: a },
      { id: 'net1', type: 'tap', ifname: b },
    ],
    devices: [
      { id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' },
      { id: 'nic1', driver: 'virtio-net-pci', netdev: 'net1' },
    ],
  });
  return launchVm({ config: host.config, spec });
}

/** Over the source's monitor, before any activity can hold it. */
export async function injectIntoSource(record: VmRecord, faults: readonly SimFault[]): Promise<void> {
  if (!faults.length) return;
  const c = await RawQmp.connect(record.qmpSocket, { timeoutMs: 5_000 });
  try {
    for (const f of faults) {
      const [phase, action] = f.split(':');
      await c.cmd('x-sim-inject-fault', { phase, action });
    }
  } finally {
    c.close();
  }
}

/** The counter guest's value as the simulator reports it; undefined when the monitor does not answer. */
async function guestCounter(qmpSocket: string): Promise<number | undefined> {
  let c: RawQmp | undefined;
  try {
    c = await RawQmp.connect(qmpSocket, { timeoutMs: 1_000 });
    const q = await c.cmd<{ counter: number }>('x-sim-query', undefined, 1_000);
    return q.counter;
  } catch {
    return undefined;
  } finally {
    c?.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// While the workflow runs

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls the ledger until an event matches. */
export async function waitForLedger(ledger: string, match: (e: LedgerEvent) => boolean, timeoutMs = 30_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const hit = readLedgerEvents(ledger).find(match);
    if (hit) return hit;
    if (Date.now() > until) throw new Error('ledger: the awaited event never came');
    await sleep(20);
  }
}

const sourceActive = (e: LedgerEvent) => e.event === 'migration' && e.role === 'source' && e.status === 'active';

/** The first process of the new build runs the guest (the switchover's `cont` was answered). */
function destinationRuns(ledger: string): (e: LedgerEvent) => boolean {
  return (e) => {
    if (e.event !== 'status' || e.status !== 'running') return false;
    const start = readLedgerEvents(ledger).find((s) => s.event === 'start' && s.instance === e.instance);
    return start?.version === NEW_VERSION;
  };
}

/** A process of the given build started to receive a migration (the simulator logs it `inmigrate`). */
function launchedToReceive(version: string): (e: LedgerEvent) => boolean {
  return (e) => e.event === 'start' && e.vm === VM_ID && e.version === version && e.status === 'inmigrate';
}

/** The source (the first process of the old build) quit: finalize's last command to it. */
function sourceQuits(ledger: string): (e: LedgerEvent) => boolean {
  return (e) => {
    if (e.event !== 'quit') return false;
    const first = readLedgerEvents(ledger).find(
      (s) => s.event === 'start' && s.vm === VM_ID && s.version === OLD_VERSION,
    );
    return first?.instance === e.instance;
  };
}

async function awaitMoment(host: CaseHost, when: Moment): Promise<void> {
  const ledger = host.ledger;
  const match: Record<Exclude<Moment, 'the workflow starts'>, (e: LedgerEvent) => boolean> = {
    'the destination is launched': launchedToReceive(NEW_VERSION),
    'the migration is active': sourceActive,
    'the destination runs': destinationRuns(ledger),
    'the source quits': sourceQuits(ledger),
    'the migration back is launched': launchedToReceive(OLD_VERSION),
  };
  if (when !== 'the workflow starts') await waitForLedger(ledger, match[when]);
}

/** The acts that need the host worker in a process of its own, to be killed or stopped for real. */
const workerActs: readonly Act[] = [
  'kill the host worker, start a new one',
  'stop the host worker (SIGTERM), start a new one',
];

export function destinationPid(host: CaseHost, generation = 2): number {
  const file = path.join(host.config.runtimeDir, 'run', `${host.vmId}.${generation}.proc.json`);
  return (JSON.parse(readFileSync(file, 'utf8')) as { pid: number }).pid;
}

/** A host worker in its own process (`fleet-upgrade host-worker`), so it can be killed for real. */
export function spawnHostWorker(host: CaseHost, serverAddress: string): ChildProcess {
  requireRealPart('the compiled CLI (npm run build)', path.join(projectRoot, 'dist', 'workers', 'cli.js'));
  return spawn(
    process.execPath,
    [path.join(projectRoot, 'bin', 'fleet-upgrade.js'), 'host-worker', '--config', host.configFile],
    {
      env: { ...process.env, TEMPORAL_ADDRESS: serverAddress },
      stdio: 'ignore',
    },
  );
}

// ---------------------------------------------------------------------------------------------------------
// Running one case

export async function runCase(env: MatrixEnv, n: number, c: MatrixCase): Promise<Observation> {
  const host = makeCaseHost(env, n, c);
  const workers: ChildProcess[] = [];
  const inProcess = !c.during || !workerActs.includes(c.during.act);
  try {
    const source = await launchSource(host, n);
    const counterBefore = (await guestCounter(source.qmpSocket)) ?? 0;
    await injectIntoSource(source, c.plan.source ?? []);
    if (inProcess) await env.harness.startHost(host.config);
    else workers.push(spawnHostWorker(host, env.harness.server.address));

    const act = async (what: Act) => {
      if (what === 'kill the destination') process.kill(destinationPid(host), 'SIGKILL');
      else if (what === 'freeze the destination') process.kill(destinationPid(host), 'SIGSTOP');
      else if (what === 'kill the source') process.kill(source.pid, 'SIGKILL');
      else if (what === 'freeze the source') process.kill(source.pid, 'SIGSTOP');
      else if (what === 'cancel the workflow') await handle.cancel();
      else {
        workers[0]!.kill(what === 'kill the host worker, start a new one' ? 'SIGKILL' : 'SIGTERM');
        workers.push(spawnHostWorker(host, env.harness.server.address));
      }
    };
    const t0 = Date.now();
    const handle = await env.harness.client.workflow.start('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `upgrade-vm/${host.config.hostId}/${host.vmId}`,
      args: [{ hostId: host.config.hostId, vmId: host.vmId, target: 'new', policy: c.policy ?? {} }],
    });
    if (c.during) {
      await awaitMoment(host, c.during.when);
      await act(c.during.act);
    }
    let result: UpgradeVmResult | undefined;
    let failure = '';
    let cancelled = false;
    try {
      result = (await handle.result()) as UpgradeVmResult;
    } catch (err) {
      failure = reasonOf(err);
      cancelled = err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure;
    }
    const ms = Date.now() - t0;
    // The workflow is over: nothing holds a monitor any more.
    const check = await checkInvariants(host, n, result, c, counterBefore, cancelled);
    return {
      outcome: result?.outcome ?? (cancelled ? 'cancelled' : 'workflow failed'),
      reason: result?.reason ?? failure,
      actions: result?.rollback?.actions ?? [],
      runs: check.runs,
      violations: check.violations,
      ms,
    };
  } finally {
    if (inProcess) await env.harness.stopHost(host.config.hostId);
    for (const w of workers) w.kill('SIGKILL');
    killSimulatorsUnder(host.dir);
  }
}

function reasonOf(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && 'cause' in e && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------------------
// The invariants of docs/DESIGN.md, from the simulator's ledger, the VM record and the processes

interface InvariantCheck {
  runs: Runs | 'several' | 'unknown';
  violations: string[];
}

const alive = (pid: number) => isProcessAlive(pid);

async function checkInvariants(
  host: CaseHost,
  n: number,
  result: UpgradeVmResult | undefined,
  c: MatrixCase,
  counterBefore: number,
  cancelled = false,
): Promise<InvariantCheck> {
  const violations: string[] = [];
  const events = readLedgerEvents(host.ledger).filter((e) => e.vm === host.vmId);
  const starts = events.filter((e) => e.event === 'start');
  const pidOf = new Map(starts.map((e) => [e.instance, e.pid]));
  // Which process an instance is: the source (the first of the old build), a destination of the new build,
  // or a later process of the old build (migrated back). Failed launches also appear in the ledger.
  const firstOld = starts.find((e) => e.version === OLD_VERSION)?.instance;
  const roleOf = (instance: string): Runs => {
    const s = starts.find((e) => e.instance === instance);
    return instance === firstOld ? 'source' : s?.version === OLD_VERSION ? 'migrated-back' : 'destination';
  };

  // 1. One process at a time: running intervals never overlap.
  const intervals = runningIntervals(events).sort((a, b) => a.from - b.from);
  for (let i = 1; i < intervals.length; i++) {
    const [a, b] = [intervals[i - 1]!, intervals[i]!];
    if (a.instance !== b.instance && b.from < a.to) {
      violations.push(
        `two processes ran the guest at once (pids ${pidOf.get(a.instance)} and ${pidOf.get(b.instance)})`,
      );
    }
  }
  // 2. Never from a stale state: once a later process ran, an earlier one never runs again.
  const order = intervals.map((i) => i.instance).filter((x, i, all) => i === 0 || all[i - 1] !== x);
  if (new Set(order).size !== order.length) {
    violations.push(`a process resumed after another had run the guest: ${order.map(roleOf).join(' → ')}`);
  }
  // A running process whose end the ledger did not see must still be alive.
  for (const i of intervals) {
    if (i.to === Infinity && !alive(pidOf.get(i.instance) ?? -1)) {
      violations.push(`process ${pidOf.get(i.instance)} died while running without a ledger entry`);
    }
  }

  // 7. No process that may have held the only current copy of the guest was ended by us: a process that ran
  // the guest and is gone either handed it to a later process (which ran after it), or crashed by itself
  // (the simulator logs an injected crash), or was killed by the case itself.
  const killedByCase = c.during?.act === 'kill the source' || c.during?.act === 'kill the destination';
  const instances = [...new Set(intervals.map((i) => i.instance))];
  for (const instance of instances) {
    const pid = pidOf.get(instance) ?? -1;
    if (alive(pid)) continue;
    const lastFrom = Math.max(...intervals.filter((i) => i.instance === instance).map((i) => i.from));
    const handedOn = intervals.some((i) => i.instance !== instance && i.from >= lastFrom);
    const crashed = events.some((e) => e.instance === instance && e.event === 'crash');
    if (!handedOn && !crashed && !killedByCase) {
      violations.push(`process ${pid} (${roleOf(instance)}) held the newest state of the guest and was ended by us`);
    }
  }

  // 3. Where the guest runs now: exactly one live process, and no other live process of the VM.
  const live = starts.filter((s) => alive(s.pid));
  const running = intervals.filter((i) => i.to === Infinity && alive(pidOf.get(i.instance) ?? -1));
  const record = await readVmRecord(host.config.runtimeDir, host.vmId);
  let runs: InvariantCheck['runs'] = 'unknown';
  if (running.length > 1) {
    runs = 'several';
    violations.push(`${running.length} live processes run the guest`);
  } else if (running.length === 0) {
    runs = 'nowhere';
  } else {
    runs = roleOf(running[0]!.instance);
  }
  // A record that waits for an operator names every process it kept; those are not strays.
  const named = new Set([record?.pid, ...(record?.attention?.processes.map((p) => p.pid) ?? [])]);
  const stray = live.filter((s) => !named.has(s.pid));
  if (stray.length) violations.push(`live processes not named by the record: ${stray.map((s) => s.pid).join(', ')}`);
  if (result?.outcome === 'needs-operator' && !record?.attention) {
    violations.push('the result says an operator must decide, the record does not');
  }
  // A process that may hold the only current copy of the guest is never killed by us: when an operator must
  // decide, the destination is still alive, unless the result says it died by itself, or that it never ran
  // (and the ledger agrees: no destination ever ran the guest).
  if (result?.outcome === 'needs-operator') {
    const dst = starts.find((e) => roleOf(e.instance) === 'destination' && alive(e.pid));
    const neverRan =
      /never ran and was removed/.test(result.reason ?? '') &&
      !intervals.some((i) => roleOf(i.instance) === 'destination');
    if (!dst && !/died/.test(result.reason ?? '') && !neverRan) {
      violations.push('the destination that may have run is gone');
    }
  }

  // 4. The record names a live process, and the one that runs the guest; or the result says it is not running.
  if (runs === 'nowhere') {
    if (!/not running|left paused|operator must decide/i.test(result?.reason ?? '')) {
      violations.push(`the guest runs nowhere but the result does not say so (reason: ${result?.reason ?? '-'})`);
    }
  } else if (!record || !isProcessAlive(record.pid, record.qmpSocket)) {
    violations.push(`the record names no live process (pid ${record?.pid})`);
  } else if (running[0] && !named.has(pidOf.get(running[0].instance))) {
    violations.push(`the record names pid ${record.pid}, the guest runs in ${pidOf.get(running[0].instance)}`);
  }
  if (record) {
    const expectLabel = runs === 'destination' ? 'new' : 'old';
    if (runs !== 'nowhere' && runs !== 'several' && !record.attention && record.binary.label !== expectLabel) {
      violations.push(`the record names label ${record.binary.label}, expected ${expectLabel}`);
    }
  }

  // The guest's own state went on from where it was: its counter (carried by the migration) is not behind
  // the value read before the upgrade. Skipped for a process whose monitor does not answer.
  if (record && (runs === 'destination' || runs === 'source' || runs === 'migrated-back')) {
    const now = await guestCounter(record.qmpSocket);
    if (now !== undefined && now < counterBefore) {
      violations.push(`the guest's counter went back: ${now} < ${counterBefore} before the upgrade`);
    }
  }

  // 5. One owner per backend: the taps belong to the process that runs the guest (or to no other live one).
  const ledger = readLedger(host.ledger);
  for (const tap of tapsOf(n)) {
    const b = ledger.backends[backendKey('tap', tap)];
    const owner = b?.alive ? b.owner.pid : undefined;
    const runner = running[0] ? pidOf.get(running[0].instance) : undefined;
    if (runner !== undefined && owner !== runner) {
      violations.push(`tap ${tap} is owned by ${owner ?? 'nobody'}, the guest runs in ${runner}`);
    }
    if (runner === undefined && owner !== undefined && !named.has(owner)) {
      violations.push(`tap ${tap} is held by ${owner}, which the record does not name`);
    }
  }

  // 6. The result says what happened.
  // A workflow cancelled before the switchover ends cancelled once its rollback is done; the VM must be back.
  if (!result) {
    if (!cancelled) violations.push('the workflow failed instead of returning a result');
    else if (runs !== 'source') violations.push('cancelled, but the guest does not run on the source');
  } else {
    if (result.outcome !== 'upgraded' && !result.reason) violations.push(`outcome ${result.outcome} without a reason`);
    if (c.expect.reason && !c.expect.reason.test(result.reason ?? '')) {
      violations.push(`reason does not match ${c.expect.reason}: ${result.reason ?? '-'}`);
    }
    if (result.outcome === 'upgraded' && runs !== 'destination')
      violations.push('upgraded, but the guest is elsewhere');
    if (result.outcome === 'rolled-back' && runs !== 'source' && runs !== 'migrated-back') {
      violations.push('rolled back, but the guest does not run on the old build');
    }
  }
  return { runs, violations };
}

// ---------------------------------------------------------------------------------------------------------
// Cleanup and the report

/** Every QEMU and simulated QEMU of a case's folder (the trailing slash keeps /x/h1 from matching /x/h10). */
export function killSimulatorsUnder(dir: string): void {
  killQemusUnder(dir.endsWith('/') ? dir : `${dir}/`);
}

export interface Row {
  c: MatrixCase;
  o: Observation;
  passed: boolean;
}

export interface RealFaultTest {
  title: string;
  phase: MatrixPhase;
  fault: MatrixFault | string;
  expected: string;
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');
/** Reasons may carry a QEMU log tail (command lines and all): the table keeps their start. */
const brief = (s: string, max = 220) => (s.length > max ? `${s.slice(0, max)}…` : s);

/** The section on test/e2e/rollout-scale.test.ts (its figures are printed by that test, not kept here). */
const loadWithFaults = [
  '## Load with faults (test/e2e/rollout-scale.test.ts)',
  '',
  'A rollout of 2,000 simulated VMs (4 host workers × 500; each worker and the orchestrator its own process;',
  'in-process simulated QEMUs with a ledger) with a random fault armed in 5 % of them (seeded: the test prints',
  'the seed, `FLEET_SCALE_SEED=N` replays it): crashes, hangs, error replies and stalls at the source’s first',
  'command, migration setup, the active copy and the device state. It must end with every VM accounted for —',
  'upgraded, rolled back, or failed with a reason, and no VM without a fault hurt — and, per VM, invariants 1–5',
  'from the ledger, the records and the monitors; with at most `vmsPerHost` migrations at once per host, and',
  'continue-as-new keeping every run of the rollout and of each upgradeHost within its history limit.',
  '',
  'It found one bug (fixed): an upgradeHost run could continue as new in the same workflow task as its last',
  'report to the rollout; Temporal drops a signal whose sender closed first, and the failures that report',
  'listed were lost (the rollout listed 70 of its 92 failed VMs).',
  '',
];

export function reliabilityDoc(o: {
  rows: Row[];
  notProduced: NotProduced[];
  findings: string[];
  realTests: RealFaultTest[];
  wallMs: number;
  concurrency: number;
}): string {
  const passed = o.rows.filter((r) => r.passed).length;
  const out = [
    '# Reliability: the fault matrix',
    '',
    'Written by `npx jest test/e2e/fault-matrix.test.ts` (do not edit by hand). Each case runs `upgradeVm`',
    'through a real Temporal dev server and a real host worker against the QEMU simulator (one simulated',
    'process per QEMU, backend-transfer-list dialect, 10.0.50 → 10.1.50, two taps handed over), injects one',
    'fault, and then checks the invariants of docs/DESIGN.md:',
    '',
    '1. the guest runs in one process at a time (the ledger’s running intervals never overlap);',
    '2. it never resumes from a stale state (once a later process ran it, no earlier one runs again);',
    '3. at the end exactly one live process runs it, and no other process of the VM is alive — unless it runs',
    '   nowhere, and then the result says so;',
    '4. the VM record names that live process (its label matches);',
    '5. each tap has one owner, the process that runs the guest;',
    '6. the workflow returns a result whose outcome and reason say what happened;',
    '7. no process that may have held the only current copy of the guest is ended by us: a process that ran the',
    '   guest and is gone handed it to a later process, or crashed by itself, or was the one the case killed.',
    '',
    `Last run: ${passed} of ${o.rows.length} cases passed; ${(o.wallMs / 1000).toFixed(1)} s wall clock with ${o.concurrency} cases at a time.`,
    '',
    '| # | phase | fault | how | expected | observed | passed | time ms |',
    '|---|---|---|---|---|---|---|---|',
  ];
  o.rows.forEach((r, i) => {
    const expected = `${r.c.expect.outcome}, runs on ${r.c.expect.runs}`;
    const observed = `${r.o.outcome}, runs on ${r.o.runs}${r.o.reason ? `: ${brief(cell(r.o.reason))}` : ''}${
      r.o.violations.length ? ` — VIOLATED: ${r.o.violations.join('; ')}` : ''
    }`;
    out.push(
      `| ${i + 1} | ${r.c.phase} | ${r.c.fault} | ${cell(r.c.how)} | ${cell(expected)} | ${cell(observed)} | ${
        r.passed ? 'yes' : '**no**'
      } | ${r.o.ms} |`,
    );
  });
  out.push(
    '',
    '## What the matrix found (fixed)',
    '',
    ...o.findings.map((f) => `- ${f}`),
    '',
    '## Not produced here, and why',
    '',
    '| phase | fault | why |',
    '|---|---|---|',
    ...o.notProduced.map((x) => `| ${x.phase} | ${x.fault} | ${cell(x.why)} |`),
    '',
    '## Real QEMU (test/e2e/upgrade-faults-real.test.ts, test/e2e/upgrade-restarts-real.test.ts)',
    '',
    'QEMU 7.2 → 10.0.2 through a real dev server, a counter guest that must keep counting:',
    '',
    '| test | phase | fault | expected |',
    '|---|---|---|---|',
    ...o.realTests.map((t) => `| ${cell(t.title)} | ${t.phase} | ${t.fault} | ${cell(t.expected)} |`),
    '',
    ...loadWithFaults,
  );
  return out.join('\n');
}
