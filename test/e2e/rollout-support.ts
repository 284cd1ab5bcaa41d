// Support for the rollout e2e tests: simulated hosts (host workers whose allow-listed "QEMU binaries" are
// the QEMU simulator, each host with its own ledger), VMs launched on them the product's way, plans, and
// readings of the simulator's own records (migration spans per VM) for the limits the tests assert.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { launchVm } from '../../activities/host/vm-launch';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { readLedgerEvents } from '../../infra/simulator';
import { projectRoot } from '../../infra/real-parts';
import { parsePlan, type RolloutPlan } from '../../workflows/decisions/rollout-plan';
import type { RolloutInput, RolloutProgress } from '../../workflows/rollout';
import { rolloutStartOptions } from '../../workers/commands/rollout';
import type { Client } from '@temporalio/client';
import { writeSimBinary } from '../helpers/sim-binaries';
import { startHarness, type Harness } from '../helpers/temporal-harness';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The shared test harness (real dev server, orchestrator worker, in-process host workers), with the dev
 * server's SQLite file on tmpfs when there is one: every workflow step is a few SQLite transactions, and on
 * a disk their fsyncs, not the product, set the pace of a fleet-sized test.
 */
export async function startFleetHarness(): Promise<Harness> {
  // The dev server helper puts its database under os.tmpdir(); point that at tmpfs while it starts (the
  // test sandbox's process.env is a copy, so TMPDIR cannot do it).
  const tmpdir = os.tmpdir;
  if (existsSync('/dev/shm')) os.tmpdir = () => '/dev/shm';
  try {
    return await startHarness();
  } finally {
    os.tmpdir = tmpdir;
  }
}

/** Compile the project (the simulator runs from dist/) unless dist is newer than every simulator source. */
export function ensureSimulatorBuilt(): void {
  const src = path.join(projectRoot, 'infra', 'simulator');
  const dist = path.join(projectRoot, 'dist', 'infra', 'simulator');
  const mtime = (f: string) => {
    try {
      return Number(spawnSync('stat', ['-c', '%Y', f]).stdout.toString().trim()) || 0;
    } catch {
      return 0;
    }
  };
  const stale = readdirSync(src)
    .filter((f) => f.endsWith('.ts'))
    .some((f) => mtime(path.join(dist, f.replace(/\.ts$/, '.js'))) < mtime(path.join(src, f)));
  if (!stale) return;
  const tsc = path.join(projectRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(src, 'tsconfig.json')], { cwd: projectRoot });
  if (r.status !== 0) throw new Error(`building the simulator failed: ${r.stdout}${r.stderr}`);
}

export interface SimHost {
  hostId: string;
  config: HostConfig;
  ledger: string;
  dir: string;
  /** Rewrites the target binary (e.g. to add or remove a fault); the binary probe cache follows its mtime. */
  setTarget(o: { fault?: string; rateMbps?: number }): void;
}

export interface SimHostOptions {
  /** Migration speed of the simulated QEMUs, Mbit/s (default 2000). Lower: slower migrations. */
  rateMbps?: number;
  /** A fault every destination of the target build suffers, e.g. `incoming:error`. */
  fault?: string;
  /** Labels to allow (default old and new). */
  labels?: Array<'old' | 'new'>;
}

/** A host whose QEMU builds are the simulator: `old` (10.0.50) and `new` (10.1.50), no backend transfer. */
export function simHost(root: string, hostId: string, o: SimHostOptions = {}): SimHost {
  const dir = path.join(root, hostId);
  const ledger = path.join(dir, 'ledger');
  mkdirSync(ledger, { recursive: true });
  const rate = (r?: number) => ['--sim-ram-rate-mbps', String(r ?? o.rateMbps ?? 2000)];
  const write = (name: string, version: string, extra: string[]) =>
    writeSimBinary(dir, name, { dialect: 'none', version, ledger, extra });
  const binaries: Record<string, { path: string }> = {};
  const labels = o.labels ?? ['old', 'new'];
  if (labels.includes('old')) binaries.old = { path: write('qemu-old', '10.0.50', rate()) };
  const writeNew = (fault?: string, r?: number) =>
    write('qemu-new', '10.1.50', [...rate(r), ...(fault ? ['--sim-fault', fault] : [])]);
  if (labels.includes('new')) binaries.new = { path: writeNew(o.fault) };
  const config = parseHostConfig({
    hostId,
    runtimeDir: path.join(dir, 'rt'),
    binaries,
    limits: { killGraceMs: 500, maxConcurrentMigrations: 4 },
  });
  return {
    hostId,
    config,
    ledger,
    dir,
    setTarget: (t) => {
      writeNew(t.fault, t.rateMbps);
    },
  };
}

/** Launch VMs `<prefix>1..n` on the host under its `old` build, as `fleet-upgrade vm launch` does. */
export async function launchSimVms(host: SimHost, n: number, prefix = 'vm', memoryMiB = 16): Promise<string[]> {
  mkdirSync(host.config.runtimeDir, { recursive: true, mode: 0o700 });
  const ids: string[] = [];
  for (let i = 1; i <= n; i++) {
    const spec = parseVmSpec({
      id: `${prefix}${i}`,
      binary: 'old',
      machine: 'pc-i440fx-7.2',
      accel: 'tcg',
      memoryMiB,
      // Private RAM: a plain migration copies it at the simulated rate (shared RAM would not move).
      memoryBackend: 'ram',
      memoryShared: false,
    });
    await launchVm({ config: host.config, spec, auxRamShare: false });
    ids.push(spec.id);
  }
  return ids;
}

/** Kill every process whose command line names a path under `dir` (simulated QEMUs outlive workers). */
export function killProcessesUnder(dir: string): void {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(dir))) process.kill(Number(entry), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

export function plan(data: Record<string, unknown>): RolloutPlan {
  return parsePlan({ target: 'new', policy: { strategies: ['plain'] }, ...data });
}

export async function startRolloutOf(client: Client, p: RolloutPlan, input: Partial<RolloutInput> = {}) {
  return client.workflow.start('rollout', rolloutStartOptions(p, { plan: p, ...input }));
}

export async function progressOf(client: Client, workflowId: string): Promise<RolloutProgress> {
  return client.workflow.getHandle(workflowId).query<RolloutProgress>('progress');
}

/** Poll the rollout's progress until `pred` holds. */
export async function waitFor(
  client: Client,
  workflowId: string,
  pred: (p: RolloutProgress) => boolean,
  timeoutMs = 60_000,
): Promise<RolloutProgress> {
  const deadline = Date.now() + timeoutMs;
  let last: RolloutProgress | undefined;
  for (;;) {
    try {
      last = await progressOf(client, workflowId);
      if (pred(last)) return last;
    } catch {
      // between runs
    }
    if (Date.now() > deadline) {
      throw new Error(`rollout ${workflowId}: condition not met in ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
    }
    await sleep(150);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The simulator's own records

export interface MigrationSpan {
  hostId: string;
  vm: string;
  /** The destination process started (its first ledger event). */
  from: number;
  /** The migration ended on the source (completed, failed or cancelled), or the destination died. */
  to: number;
  status: string;
}

/**
 * One span per destination process the product started (an instance that began `inmigrate`): from its
 * first event until the upgrade of that VM let go of a process — the old source quitting (switched over
 * and finalized) or the destination itself ending (rolled back) — or, failing both, its migration ending.
 */
export function migrationSpans(host: Pick<SimHost, 'hostId' | 'ledger'>): MigrationSpan[] {
  const byVm = new Map<unknown, ReturnType<typeof readLedgerEvents>>();
  for (const e of readLedgerEvents(host.ledger)) byVm.set(e.vm, [...(byVm.get(e.vm) ?? []), e]);
  const spans: MigrationSpan[] = [];
  for (const events of byVm.values()) {
    for (const start of events) {
      if (start.event !== 'start' || start.status !== 'inmigrate') continue;
      const later = events.filter((e) => e.t > start.t);
      const ended = later.find((e) => ['quit', 'exit', 'crash'].includes(e.event));
      const migrated = later.find(
        (e) =>
          e.instance === start.instance &&
          e.event === 'migration' &&
          ['completed', 'failed', 'cancelled'].includes(String(e.status)),
      );
      const end = ended ?? migrated;
      spans.push({
        hostId: host.hostId,
        vm: String(start.vm ?? ''),
        from: start.t,
        to: end?.t ?? Infinity,
        status: migrated ? String(migrated.status) : end ? end.event : 'open',
      });
    }
  }
  return spans.sort((a, b) => a.from - b.from);
}

/** The most spans open at one instant. */
export function maxOverlap(spans: Array<{ from: number; to: number }>): number {
  const points = spans.flatMap((s) => [
    { t: s.from, d: 1 },
    { t: s.to, d: -1 },
  ]);
  points.sort((a, b) => a.t - b.t || a.d - b.d);
  let cur = 0;
  let max = 0;
  for (const p of points) {
    cur += p.d;
    max = Math.max(max, cur);
  }
  return max;
}

/** The most hosts with a migration in flight at one instant. */
export function maxHostsAtOnce(spans: MigrationSpan[]): number {
  const byHost = new Map<string, MigrationSpan[]>();
  for (const s of spans) byHost.set(s.hostId, [...(byHost.get(s.hostId) ?? []), s]);
  // A host is busy from its first span start to its last span end within each merged busy stretch.
  const busy: Array<{ from: number; to: number }> = [];
  for (const list of byHost.values()) {
    const sorted = [...list].sort((a, b) => a.from - b.from);
    let cur: { from: number; to: number } | undefined;
    for (const s of sorted) {
      if (cur && s.from <= cur.to) cur.to = Math.max(cur.to, s.to);
      else {
        if (cur) busy.push(cur);
        cur = { from: s.from, to: s.to };
      }
    }
    if (cur) busy.push(cur);
  }
  return maxOverlap(busy);
}
