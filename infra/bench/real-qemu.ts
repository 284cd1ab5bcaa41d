// Real QEMU 7.2 → 10.0.2, one VM at a time: the full upgradeVm through Temporal against a raw baseline
// that performs the same QMP steps with no orchestration, alternated in the same run.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { socketPath } from '../../activities/host/paths';
import { killQemu, launchQemu } from '../../activities/host/qemu-launcher';
import { launchVm } from '../../activities/host/vm-launch';
import { buildQemuArgs, parseVmSpec } from '../../activities/host/vm-spec';
import type { VmRecord } from '../../activities/host/vm-record';
import { QmpClient } from '../../activities/qmp/client';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import { createHostWorker } from '../../workers/host-worker';
import { createOrchestratorWorker, orchestratorTaskQueue, workflowsPath } from '../../workers/orchestrator-worker';
import { connectClient } from '../../workers/temporal-connection';
import { writeCounterGuest } from '../guest/counter-guest';
import { startDevServer } from '../devserver';
import { activityLatencies, type ActivityLatency } from './history-latency';
import { qemu10, qemu72, requireQemu } from '../real-parts';

export interface RealQemuRun {
  kind: 'saga' | 'raw';
  wallMs: number;
  downtimeMs: number | null;
  guestPauseMs: number | null;
  switchoverGapMs: number | null;
  phases?: Record<string, number>;
  activities?: ActivityLatency[];
}

export interface RealQemuFigures {
  runs: number;
  sagaWallMsP50: number;
  rawWallMsP50: number;
  overheadRatio: number;
  switchoverGapMsP50: number | null;
  rawSwitchoverGapMsP50: number | null;
  downtimeMsP50: number | null;
  guestPauseMsP50: number | null;
  /** Median milliseconds of each saga phase: where the orchestration's time goes. */
  sagaPhasesMsP50: Record<string, number>;
  /** Median dispatch / execute / decide milliseconds per activity type, from the histories. */
  activityLatencyMsP50: Record<string, { dispatchMs: number; executeMs: number; decideMs: number | null }>;
  samples: RealQemuRun[];
}

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

/** The same QMP steps the saga performs, back to back, with no orchestration and no checks between them. */
async function rawUpgrade(config: HostConfig, source: VmRecord): Promise<RealQemuRun> {
  const started = performance.now();
  const generation = source.generation + 1;
  const qmpSocket = socketPath(config.runtimeDir, source.id, generation, 'qmp');
  const mig = socketPath(config.runtimeDir, source.id, generation, 'mig');
  const args = buildQemuArgs(source.spec, {
    mode: 'destination',
    qmpSocket,
    dataDirs: qemu10.dataDirs,
    machineType: source.machineType!,
    incoming: { kind: 'defer' },
    paused: true,
    transferBackends: [],
    dialect: 'none',
  });
  const dest = await launchQemu({
    binary: qemu10.binary,
    args,
    runtimeDir: config.runtimeDir,
    vmId: source.id,
    role: 'destination',
    generation,
  });
  const [src, dst] = await Promise.all([QmpClient.connect(source.qmpSocket), QmpClient.connect(dest.qmpSocket)]);
  let stopAt: number | undefined;
  src.onEvent((e) => {
    if (e.event === 'STOP') stopAt ??= e.timestampMs;
  });
  const events = [{ capability: 'events', state: true }];
  await Promise.all([
    dst.execute('migrate-set-capabilities', { capabilities: events }),
    src.execute('migrate-set-capabilities', { capabilities: events }),
    src.execute('migrate-set-parameters', { 'downtime-limit': 300, 'max-bandwidth': 1024 ** 4 }),
  ]);
  await dst.execute('migrate-incoming', { uri: `unix:${mig}` });
  const completed = dst.waitForEvent((e) => e.event === 'MIGRATION' && e.data.status === 'completed', {
    timeoutMs: 60_000,
  });
  await src.execute('migrate', { uri: `unix:${mig}` });
  const done = await completed;
  const resumed = dst.waitForEvent((e) => e.event === 'RESUME', { timeoutMs: 10_000 });
  await dst.execute('query-status');
  await dst.execute('cont');
  const resume = await resumed;
  const info = (await src.execute('query-migrate')) as { downtime?: number };
  await src.execute('quit').catch(() => undefined);
  await killQemu(source.pid, { graceMs: 5000 });
  const wallMs = performance.now() - started;
  await Promise.all([src.close(), dst.close()]);
  await killQemu(dest.pid, { graceMs: 0 });
  return {
    kind: 'raw',
    wallMs,
    downtimeMs: info.downtime ?? null,
    guestPauseMs: stopAt === undefined ? null : resume.timestampMs - stopAt,
    switchoverGapMs: resume.timestampMs - done.timestampMs,
  };
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
  const server = await startDevServer({
    headless: true,
    searchAttributes: searchAttributeTypes,
    dbFile: path.join(base, 't.db'),
  });
  const settings = { address: server.address, namespace: server.namespace };
  const workers: { w: Worker; done: Promise<void> }[] = [];
  const config = parseHostConfig({
    hostId: 'bench',
    runtimeDir: path.join(base, 'rt'),
    binaries: {
      '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
      '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
    },
  });
  mkdirSync(config.runtimeDir, { recursive: true, mode: 0o700 });
  const connection = await connectClient(settings);
  try {
    const bundle = await bundleWorkflowCode({ workflowsPath: workflowsPath(), logger: silent });
    for (const w of [await createOrchestratorWorker(settings, bundle), await createHostWorker(config, settings)]) {
      workers.push({ w, done: w.run() });
    }
    const client = new Client({ connection, namespace: settings.namespace });
    const samples: RealQemuRun[] = [];
    for (let i = 0; i < runs * 2 + 1; i++) {
      const id = `b${i}`;
      const disk = writeCounterGuest(path.join(config.runtimeDir, `${id}.img`));
      const spec = parseVmSpec({
        id,
        binary: '7.2',
        machine: 'pc-i440fx-7.2',
        accel: 'tcg',
        memoryMiB: 64,
        drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
      });
      const source = await launchVm({ config, spec });
      await new Promise((r) => setTimeout(r, 200));
      // Run 0 warms both paths up (caches, JIT) and is not counted; then raw and saga alternate.
      if (i % 2 === 1) {
        samples.push(await rawUpgrade(config, source));
      } else {
        const t0 = performance.now();
        const handle = await client.workflow.start('upgradeVm', {
          taskQueue: orchestratorTaskQueue,
          workflowId: `bench/${id}`,
          args: [{ hostId: config.hostId, vmId: id, target: '10.0.2' }],
        });
        const r = (await handle.result()) as UpgradeVmResult;
        const wallMs = performance.now() - t0;
        const activities = activityLatencies(await handle.fetchHistory());
        if (r.outcome !== 'upgraded') throw new Error(`bench upgrade of ${id}: ${r.outcome} ${r.reason ?? ''}`);
        if (i > 0) {
          samples.push({
            kind: 'saga',
            wallMs,
            downtimeMs: r.migration?.downtimeMs ?? null,
            guestPauseMs: r.migration?.guestPauseMs ?? null,
            switchoverGapMs: r.migration?.switchoverGapMs ?? null,
            phases: Object.fromEntries(r.phases.map((p) => [p.phase, p.ms])),
            activities,
          });
        }
      }
      const last = samples[samples.length - 1];
      if (last && i > 0) say(`${last.kind} ${last.wallMs.toFixed(0)} ms`);
    }
    const saga = samples.filter((s) => s.kind === 'saga');
    const raw = samples.filter((s) => s.kind === 'raw');
    const phaseNames = [...new Set(saga.flatMap((s) => Object.keys(s.phases ?? {})))];
    const sagaWallMsP50 = median(saga.map((s) => s.wallMs));
    const rawWallMsP50 = median(raw.map((s) => s.wallMs));
    return {
      runs,
      sagaWallMsP50,
      rawWallMsP50,
      overheadRatio: sagaWallMsP50 / rawWallMsP50,
      switchoverGapMsP50: medianOrNull(saga.map((s) => s.switchoverGapMs)),
      rawSwitchoverGapMsP50: medianOrNull(raw.map((s) => s.switchoverGapMs)),
      downtimeMsP50: medianOrNull(saga.map((s) => s.downtimeMs)),
      guestPauseMsP50: medianOrNull(saga.map((s) => s.guestPauseMs)),
      sagaPhasesMsP50: Object.fromEntries(phaseNames.map((p) => [p, median(saga.map((s) => s.phases?.[p] ?? 0))])),
      activityLatencyMsP50: latencyMedians(saga.flatMap((s) => s.activities ?? [])),
      samples,
    };
  } finally {
    for (const { w } of workers) w.shutdown();
    await Promise.allSettled(workers.map((x) => x.done));
    await connection.close();
    await server.stop();
    killAllWith(base);
    rmSync(base, { recursive: true, force: true });
  }
}

function latencyMedians(all: ActivityLatency[]) {
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
