// `fleet-upgrade demo`: the whole product on an embedded default. A Temporal dev server (unless
// TEMPORAL_ADDRESS is set), the orchestrator worker, one host worker per local host (each its own runtime
// folder), VMs — on real QEMU 7.2 running the counter guest, or on the in-process simulator — and a
// rollout to the target with live progress per host, a final table, the Web UI address; then cleanup.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import { MultiBar, Presets } from 'cli-progress';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { killQemu } from '../../activities/host/qemu-launcher';
import { launchAtStart, launchVm } from '../../activities/host/vm-launch';
import { listVmRecords } from '../../activities/host/vm-record';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { logger } from '../../activities/fleet/telemetry';
import { QmpClient } from '../../activities/qmp/client';
import { parseCounter, writeCounterGuest } from '../../infra/counter-guest';
import { startDevServer, type DevServer } from '../../infra/devserver';
import { qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import { parsePlan } from '../../workflows/decisions/rollout-plan';
import { rolloutProgressQuery, type RolloutProgress, type RolloutResult } from '../../workflows/rollout';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { BadInputError } from '../cli-errors';
import { createHostWorker } from '../host-worker';
import { createOrchestratorWorker } from '../orchestrator-worker';
import { connectClient, settingsFromEnv, type TemporalSettings } from '../temporal-connection';
import { startRollout } from './rollout';

export interface DemoOptions {
  qemu?: 'real' | 'sim';
  hosts: number;
  vmsPerHost?: number;
  /** Total VMs (real QEMU), spread over the hosts. */
  vms?: number;
  dialect: string;
  injectFailures: number;
  failureBudget?: number;
  keep: boolean;
  runtimeDir?: string;
  json: boolean;
}

export interface DemoSummary {
  rollout: string;
  state: string;
  vms: number;
  upgraded: number;
  rolledBack: number;
  failed: number;
  strategies: Record<string, number>;
  /** The guest's pause as QMP events show it (source STOP → destination RESUME), ms. */
  guestPauseMsP50: number | null;
  durationMs: number;
}

/** Real QEMU when the set-up installed both builds, the simulator otherwise. */
export function defaultQemu(): 'real' | 'sim' {
  return existsSync(qemu72.binary) && existsSync(qemu10.binary) ? 'real' : 'sim';
}

function hostConfig(base: string, h: number, mode: 'real' | 'sim', dialect: string): HostConfig {
  const runtimeDir = path.join(base, `h${h}`);
  mkdirSync(runtimeDir, { recursive: true, mode: 0o700 });
  const binaries =
    mode === 'real'
      ? {
          '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
          '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
        }
      : {
          '10.0.2': { simulator: { dialect, version: '10.0.2' } },
          '10.1.50': { simulator: { dialect, version: '10.1.50' } },
        };
  return parseHostConfig({ hostId: `demo-host-${h}`, runtimeDir, binaries }, 'demo');
}

function vmSpec(config: HostConfig, id: string, mode: 'real' | 'sim', h: number, v: number) {
  const disk = writeCounterGuest(path.join(config.runtimeDir, `${id}.img`));
  return parseVmSpec({
    id,
    binary: mode === 'real' ? '7.2' : '10.0.2',
    machine: 'pc-i440fx-7.2',
    accel: 'tcg',
    memoryMiB: 64,
    drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
    ...(mode === 'sim'
      ? {
          netdevs: [{ id: 'net0', type: 'tap', ifname: `d${h}v${v}` }],
          devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
        }
      : {}),
  });
}

async function qmpOf<T>(socket: string, use: (q: QmpClient) => Promise<T>): Promise<T> {
  const q = await QmpClient.connect(socket);
  try {
    return await use(q);
  } finally {
    await q.close();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : null;
};

export async function runDemo(
  o: DemoOptions,
  say: (line: string) => void,
): Promise<{ summary: DemoSummary; ok: boolean }> {
  const started = Date.now();
  const mode = o.qemu ?? defaultQemu();
  if (mode === 'real') {
    requireQemu(qemu72);
    requireQemu(qemu10);
  }
  const perHost = vmsPerHostOf(o, mode);
  if (o.injectFailures > 0 && mode !== 'sim') throw new BadInputError('--inject-failures: needs --qemu sim');
  const target = mode === 'real' ? '10.0.2' : '10.1.50';
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  // The workers' JSON logs would drown the progress bars: warnings and errors only, unless asked.
  logger.level = process.env.FLEET_LOG_LEVEL ?? 'warn';
  const base = o.runtimeDir ? path.resolve(o.runtimeDir) : mkdtempSync('/tmp/fu-demo-');
  let server: DevServer | undefined;
  const workers: { worker: Worker; done: Promise<void> }[] = [];
  const configs: HostConfig[] = [];
  let connection: Awaited<ReturnType<typeof connectClient>> | undefined;
  try {
    let settings: TemporalSettings;
    if (process.env.TEMPORAL_ADDRESS) {
      settings = settingsFromEnv();
      say(`Temporal at ${settings.address} (TEMPORAL_ADDRESS)`);
    } else {
      server = await startDevServer({ searchAttributes: searchAttributeTypes, dbFile: path.join(base, 'temporal.db') });
      settings = { address: server.address, namespace: server.namespace };
      say(`Temporal dev server at ${server.address}; Web UI ${server.uiAddress}`);
    }
    const orchestrator = await createOrchestratorWorker(settings);
    workers.push({ worker: orchestrator, done: orchestrator.run() });

    for (let h = 1; h <= o.hosts; h++) {
      let config = hostConfig(base, h, mode, o.dialect);
      const specs = Array.from({ length: perHost[h - 1] ?? 0 }, (_, v) => vmSpec(config, `vm${v + 1}`, mode, h, v + 1));
      if (mode === 'sim') {
        config = { ...config, launchAtStart: specs };
        await launchAtStart(config);
      } else {
        for (const spec of specs) await launchVm({ config, spec });
      }
      configs.push(config);
      const w = await createHostWorker(config, settings);
      workers.push({ worker: w, done: w.run() });
      say(
        `host ${config.hostId}: ${specs.length} VMs on ${mode === 'real' ? 'QEMU 7.2' : `the simulator (${o.dialect})`}`,
      );
    }
    const injected = await injectFailures(configs, o.injectFailures);
    if (injected.length) say(`injected a migration failure into ${injected.join(', ')}`);

    connection = await connectClient(settings);
    const client = new Client({ connection, namespace: settings.namespace });
    const plan = parsePlan({
      name: `demo-${Date.now().toString(36)}`,
      target,
      hosts: configs.map((c) => c.hostId),
      waves:
        o.hosts > 1
          ? [
              { name: 'canary', hosts: 1 },
              { name: 'rest', hosts: 'rest' },
            ]
          : [{ name: 'all', hosts: 'rest' }],
      concurrency: { hosts: Math.min(o.hosts, 4), vmsPerHost: 1 },
      failureBudget: o.failureBudget ?? Math.max(1, o.injectFailures + 1),
    });
    const handle = await startRollout(client, plan);
    say(`rollout ${plan.name} to ${target}: workflow ${handle.workflowId}`);

    const bars = o.json
      ? undefined
      : new MultiBar(
          { format: ' {host} [{bar}] {value}/{total} {state}', hideCursor: true, stream: process.stderr },
          Presets.shades_classic,
        );
    const perBar = new Map<string, ReturnType<MultiBar['create']>>();
    const draw = (p: RolloutProgress) => {
      if (!bars) return;
      for (const host of p.hosts) {
        const done = host.total - host.pending - host.inFlight.length;
        const state = `${host.state}, wave ${host.wave}${host.counts['rolled-back'] ? `, ${host.counts['rolled-back']} rolled back` : ''}`;
        const bar =
          perBar.get(host.hostId) ?? bars.create(Math.max(host.total, 1), 0, { host: host.hostId.padEnd(12), state });
        const payload = { host: host.hostId.padEnd(12), state };
        perBar.set(host.hostId, bar);
        bar.setTotal(Math.max(host.total, 1));
        bar.update(done, payload);
      }
    };
    // Progress by query; the result once the workflow closed. A rollout that paused itself stays open.
    let result: RolloutResult | undefined;
    for (;;) {
      await new Promise((r) => setTimeout(r, 300));
      const status = (await handle.describe()).status.name;
      if (status !== 'RUNNING') {
        result = (await handle.result()) as RolloutResult;
        draw(result);
        break;
      }
      const p = await handle.query(rolloutProgressQuery).catch(() => undefined);
      if (p) draw(p);
      if (p && p.status === 'paused' && p.pausedBy === 'budget' && p.vms['in-flight'] === 0) break;
    }
    bars?.stop();
    const progress = result ?? (await handle.query(rolloutProgressQuery));
    if (progress.status === 'paused')
      say(`the rollout paused itself: ${progress.pauseReason ?? 'failure budget spent'}`);

    // One row per VM, from each VM's own upgradeVm result.
    const rows: {
      vm: string;
      outcome: string;
      strategy: string;
      guestPauseMs: number | null;
      downtimeMs: number | null;
      counter: string;
      reason: string;
    }[] = [];
    for (const config of configs) {
      for (const record of await listVmRecords(config.runtimeDir)) {
        const id = `upgrade-vm/${config.hostId}/${record.id}`;
        const r = (await client.workflow
          .getHandle(id)
          .result()
          .catch(() => undefined)) as UpgradeVmResult | undefined;
        const counter = await qmpOf(record.qmpSocket, async (q) =>
          parseCounter(String(await q.execute('human-monitor-command', { 'command-line': 'x /1wx 0x7e00' }))),
        ).catch(() => NaN);
        rows.push({
          vm: `${config.hostId}/${record.id}`,
          outcome: r?.outcome ?? 'not started',
          strategy: r?.strategy ?? '-',
          guestPauseMs:
            r?.migration?.guestPauseMs === undefined || r.migration.guestPauseMs === null
              ? null
              : Math.round(r.migration.guestPauseMs * 10) / 10,
          downtimeMs: r?.migration?.downtimeMs ?? null,
          counter: `${record.binary.label}: ${counter}`,
          reason: r?.reason ?? '',
        });
      }
    }
    if (!o.json) console.table(rows);
    if (server)
      say(
        `Temporal Web UI: ${server.uiAddress}/namespaces/${settings.namespace}/workflows (open while --keep holds it)`,
      );
    const count = (outcome: string) => rows.filter((r) => r.outcome === outcome).length;
    const strategies: Record<string, number> = {};
    for (const r of rows) if (r.strategy !== '-') strategies[r.strategy] = (strategies[r.strategy] ?? 0) + 1;
    const summary: DemoSummary = {
      rollout: plan.name,
      state: result ? result.outcome : progress.status,
      vms: rows.length,
      upgraded: count('upgraded'),
      rolledBack: count('rolled-back'),
      failed: rows.length - count('upgraded') - count('rolled-back') - count('not started'),
      strategies,
      guestPauseMsP50: median(rows.flatMap((r) => (r.guestPauseMs === null ? [] : [r.guestPauseMs]))),
      durationMs: Date.now() - started,
    };
    const expectedState = o.injectFailures >= (o.failureBudget ?? Infinity) ? 'paused' : 'completed';
    return {
      summary,
      ok:
        summary.state === expectedState && summary.upgraded + summary.rolledBack + count('not started') === rows.length,
    };
  } finally {
    await connection?.close();
    for (const { worker } of workers) worker.shutdown();
    await Promise.allSettled(workers.map((w) => w.done));
    if (!o.keep) {
      for (const config of configs) {
        for (const r of await listVmRecords(config.runtimeDir).catch(() => [])) {
          await killQemu(r.pid, { graceMs: 1000, expectArg: r.qmpSocket }).catch(() => undefined);
        }
      }
    }
    if (!o.keep) await server?.stop();
    if (!o.keep && !o.runtimeDir) rmSync(base, { recursive: true, force: true });
  }
}

function vmsPerHostOf(o: DemoOptions, mode: 'real' | 'sim'): number[] {
  if (o.vms !== undefined && o.vmsPerHost !== undefined) throw new BadInputError('--vms and --vms-per-host: give one');
  const total = o.vms ?? o.hosts * (o.vmsPerHost ?? (mode === 'real' ? 2 : 10));
  return Array.from({ length: o.hosts }, (_, h) => Math.floor(total / o.hosts) + (h < total % o.hosts ? 1 : 0));
}

/** Makes the migration of `n` VMs fail at setup: a simulator fault, so each rolls back (simulator only). */
async function injectFailures(configs: HostConfig[], n: number): Promise<string[]> {
  const out: string[] = [];
  for (const config of configs) {
    for (const record of await listVmRecords(config.runtimeDir)) {
      if (out.length >= n) return out;
      await qmpOf(record.qmpSocket, (q) => q.execute('x-sim-inject-fault', { phase: 'setup', action: 'error' }));
      out.push(`${config.hostId}/${record.id}`);
    }
  }
  return out;
}
