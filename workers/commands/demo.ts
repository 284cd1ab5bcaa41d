// `fleet-upgrade demo`: the whole product on an embedded default. A Temporal dev server (unless
// TEMPORAL_ADDRESS is set), the orchestrator worker, one host worker per local host (each its own runtime
// folder), VMs — on real QEMU 7.2 running a real Linux guest (as root: its NIC on a tap, on a bridge in a
// network namespace of the host's own, pinged every 10 ms; a data disk it keeps writing), or on the
// in-process simulator — and a rollout to the target with live progress per host, a final table per VM
// (strategy, RAM mode, downtime, largest ping gap, disk writes checked), the Web UI address; then cleanup.
// Ctrl-C (or SIGTERM) stops it at any point and cleans up everything it started; --keep leaves the VMs and
// the dev server running, says exactly what, and the one command that stops them (`demo --stop <dir>`).
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import { MultiBar, Presets } from 'cli-progress';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive, killQemu } from '../../activities/host/qemu-launcher';
import { launchAtStart, launchVm } from '../../activities/host/vm-launch';
import { listVmRecords } from '../../activities/host/vm-record';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { logger } from '../telemetry';
import { QmpClient } from '../../activities/qmp/client';
import { guestImage } from '../../infra/guest/linux-guest';
import { writeCounterGuest } from '../../infra/guest/counter-guest';
import { startDevServer, type DevServer } from '../../infra/devserver';
import {
  checkDiskWhileRunning,
  linuxGuestVm,
  readGuestConsole,
  waitForGuest,
  type LinuxGuestVm,
} from '../../infra/guest/guest-vm';
import {
  createHostNetwork,
  deleteNetns,
  startPinger,
  whyNoHostNetwork,
  type HostNetwork,
  type Pinger,
} from '../../infra/guest/network';
import { projectRoot, qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import { parsePlan } from '../../workflows/decisions/rollout-plan';
import { rolloutProgressQuery, type RolloutProgress, type RolloutResult } from '../../workflows/rollout';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { BadInputError, CliError, ExitCode } from '../cli-errors';
import { createHostWorker } from '../host-worker';
import { createOrchestratorWorker } from '../orchestrator-worker';
import { connectClient, settingsFromEnv, type TemporalSettings } from '../temporal-connection';
import { startRollout } from './rollout';
import { workflowIds } from '../../workflows/names';

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

export interface DemoVmRow {
  vm: string;
  outcome: string;
  strategy: string;
  /** Guest RAM shared by both processes or copied through the stream. */
  ram: string;
  downtimeMs: number | null;
  guestPauseMs: number | null;
  /** Largest gap between ping replies across the demo (real QEMU with NICs), ms. */
  pingGapMs: number | null;
  /** The guest's disk writes checked on its disk after the upgrade, and how many of those were lost. */
  diskWritesChecked: number | null;
  diskWritesLost: number | null;
  /** Label the VM runs on at the end. */
  runsOn: string;
  reason: string;
}

export interface KeptDemo {
  /** The demo's folder (records, sockets, logs, the dev server's database). */
  base: string;
  /** Whether `demo --stop` removes the folder (the demo made it). */
  removeBase: boolean;
  devServer?: { pid: number; address: string; uiAddress?: string };
  vms: Array<{ vm: string; pid: number; qmpSocket: string; label: string }>;
  netns: string[];
  /** The one command that stops all of it. */
  stop: string;
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
  /** Real QEMU with NICs: the largest gap between ping replies of any VM, ms; null without NICs. */
  pingGapMsMax?: number | null;
  /** Real QEMU: disk writes the guests saw complete that are not on their disks (0 expected). */
  diskWritesLost?: number | null;
  durationMs: number;
  perVm: DemoVmRow[];
  /** With --keep: what is left running and the command that stops it. */
  kept?: KeptDemo;
}

/** Real QEMU when the set-up installed both builds, the simulator otherwise. */
export function defaultQemu(): 'real' | 'sim' {
  return existsSync(qemu72.binary) && existsSync(qemu10.binary) ? 'real' : 'sim';
}

function hostConfig(base: string, h: number, mode: 'real' | 'sim', dialect: string, netns?: string): HostConfig {
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
  return parseHostConfig({ hostId: `demo-host-${h}`, runtimeDir, binaries, ...(netns ? { netns } : {}) }, 'demo');
}

function simVmSpec(config: HostConfig, id: string, h: number, v: number) {
  const disk = writeCounterGuest(path.join(config.runtimeDir, `${id}.img`));
  return parseVmSpec({
    id,
    binary: '10.0.2',
    machine: 'pc-i440fx-7.2',
    accel: 'tcg',
    memoryMiB: 64,
    drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
    netdevs: [{ id: 'net0', type: 'tap', ifname: `d${h}v${v}` }],
    devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
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

const KEPT_FILE = 'demo-kept.json';

/** Each demo VM its own MAC: VMs on one bridge with QEMU's default (the same for all) would steal each other's frames. */
function demoMac(h: number, v: number): string {
  const hex = (n: number) => (n & 0xff).toString(16).padStart(2, '0');
  return `52:54:00:${hex(h >> 8)}:${hex(h)}:${hex(v)}`;
}

/** Thrown out of the demo's steps once Ctrl-C or SIGTERM arrived. */
class DemoInterrupted extends Error {}

export async function runDemo(
  o: DemoOptions,
  say: (line: string) => void,
): Promise<{ summary: DemoSummary; ok: boolean }> {
  const started = Date.now();
  const mode = o.qemu ?? defaultQemu();
  if (mode === 'real') {
    requireQemu(qemu72);
    requireQemu(qemu10);
    try {
      guestImage(projectRoot);
    } catch (err) {
      throw new CliError(`${(err as Error).message}`, ExitCode.failed);
    }
  }
  const perHost = vmsPerHostOf(o, mode);
  if (o.injectFailures > 0 && mode !== 'sim') throw new BadInputError('--inject-failures: needs --qemu sim');
  if (mode === 'real' && perHost.some((n) => n > 200))
    throw new BadInputError('--vms-per-host: at most 200 real VMs on one demo host (one /24 per host)');
  const target = mode === 'real' ? '10.0.2' : '10.1.50';
  // Signals are the demo's own (below), not the Temporal runtime's: Ctrl-C must stop everything.
  Runtime.install({ logger: new DefaultLogger('ERROR'), shutdownSignals: [] });
  // The workers' JSON logs would drown the progress bars: warnings and errors only, unless asked.
  logger.level = process.env.FLEET_LOG_LEVEL ?? 'warn';
  const base = o.runtimeDir ? path.resolve(o.runtimeDir) : mkdtempSync('/tmp/fu-demo-');
  mkdirSync(base, { recursive: true, mode: 0o700 });
  let server: DevServer | undefined;
  const workers: { worker: Worker; done: Promise<void> }[] = [];
  const configs: HostConfig[] = [];
  const networks: HostNetwork[] = [];
  const guests = new Map<string, { guest: LinuxGuestVm; ip?: string; net?: HostNetwork; pinger?: Pinger }>();
  let connection: Awaited<ReturnType<typeof connectClient>> | undefined;
  let bars: MultiBar | undefined;

  // Stopping: everything the demo started, whatever step it is in. Memoized: the signal handler and the
  // normal end may both ask.
  let stopping: Promise<void> | undefined;
  let interrupted: NodeJS.Signals | undefined;
  const stopAll = (keep: boolean) =>
    (stopping ??= (async () => {
      bars?.stop();
      for (const g of guests.values()) await g.pinger?.stop().catch(() => undefined);
      await connection?.close().catch(() => undefined);
      for (const { worker } of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
      // At most 15 s for the workers (a timer that does not keep the process alive after the demo).
      await Promise.race([
        Promise.allSettled(workers.map((w) => w.done)),
        new Promise((r) => setTimeout(r, 15_000).unref()),
      ]);
      // Simulated VMs live in this process and cannot outlive it: they stop even with --keep (which says so),
      // or their monitors' sockets would keep the process from ever exiting.
      if (keep && mode === 'real') return;
      for (const config of configs) {
        for (const r of await listVmRecords(config.runtimeDir).catch(() => [])) {
          await killQemu(r.pid, { graceMs: 1000, expectArg: r.qmpSocket }).catch(() => undefined);
        }
      }
      if (keep) return;
      killProcessesNaming(`${base}/`); // a QEMU launched while the records were read
      for (const net of networks) net.remove();
      await server?.stop().catch(() => undefined);
      if (!o.runtimeDir) rmSync(base, { recursive: true, force: true });
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) {
      say(`${sig}: still stopping what the demo started…`);
      return;
    }
    interrupted = sig;
    say(`${sig}: stopping the demo and everything it started…`);
    void stopAll(false).finally(() => {
      say('stopped; nothing of the demo is left running');
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const step = <T>(p: Promise<T>): Promise<T> => {
    if (interrupted) throw new DemoInterrupted();
    return p;
  };

  let keepIt = false;
  try {
    let settings: TemporalSettings;
    if (process.env.TEMPORAL_ADDRESS) {
      settings = settingsFromEnv();
      say(`Temporal at ${settings.address} (TEMPORAL_ADDRESS)`);
    } else {
      server = await step(
        startDevServer({ searchAttributes: searchAttributeTypes, dbFile: path.join(base, 'temporal.db') }),
      );
      settings = { address: server.address, namespace: server.namespace };
      say(`Temporal dev server at ${server.address}; Web UI ${server.uiAddress}`);
    }
    const orchestrator = await step(createOrchestratorWorker(settings));
    workers.push({ worker: orchestrator, done: orchestrator.run() });

    const noNet = mode === 'real' ? whyNoHostNetwork() : undefined;
    if (mode === 'real' && noNet)
      say(`${noNet}: no network namespaces or taps, so the demo's VMs run without NICs (no pings)`);
    for (let h = 1; h <= o.hosts; h++) {
      const n = perHost[h - 1] ?? 0;
      let net: HostNetwork | undefined;
      if (mode === 'real' && !noNet) {
        net = createHostNetwork(`fu-demo-${process.pid}-h${h}`);
        networks.push(net);
      }
      let config = hostConfig(base, h, mode, o.dialect, net?.ns);
      if (mode === 'sim') {
        const specs = Array.from({ length: n }, (_, v) => simVmSpec(config, `vm${v + 1}`, h, v + 1));
        config = { ...config, launchAtStart: specs };
        await step(launchAtStart(config));
      } else {
        for (let v = 1; v <= n; v++) {
          const id = `vm${v}`;
          const ip = net ? `10.77.0.${10 + v}` : undefined;
          if (net) net.addTap(`tap-${id}`);
          const guest = linuxGuestVm({
            id,
            binary: '7.2',
            dir: config.runtimeDir,
            ...(net && ip ? { nic: { tap: `tap-${id}`, bridge: net.bridge, ip: `${ip}/24`, mac: demoMac(h, v) } } : {}),
          });
          await step(launchVm({ config, spec: guest.spec }));
          guests.set(`${config.hostId}/${id}`, { guest, ...(ip ? { ip } : {}), ...(net ? { net } : {}) });
        }
      }
      configs.push(config);
      const w = await step(createHostWorker(config, settings));
      workers.push({ worker: w, done: w.run() });
      say(
        `host ${config.hostId}: ${n} VMs on ${mode === 'real' ? `QEMU 7.2, Linux guests of 256 MiB${net ? `, taps on bridge br0 in network namespace ${net.ns}` : ''}` : `the simulator (${o.dialect})`}`,
      );
    }
    if (mode === 'real' && guests.size) {
      say(`waiting for ${guests.size} Linux guests to boot (about 15 s each under TCG, sharing the CPUs)…`);
      const bootMs = 60_000 + 20_000 * guests.size;
      await step(
        Promise.all(
          [...guests.values()].map((g) =>
            waitForGuest(
              g.guest.serialLog,
              (c) => c.ready && c.lastWrite > 0,
              bootMs,
              () => interrupted !== undefined,
            ),
          ),
        ),
      );
      for (const g of guests.values()) {
        if (!g.net || !g.ip) continue;
        g.net.exec('ping', ['-c', '1', '-W', '5', g.ip]);
        g.pinger = startPinger(g.net.ns, g.ip, 10);
      }
      say(
        `guests up: each writes numbered sectors to its disk${noNet ? '' : ', and answers a ping from its host every 10 ms'}`,
      );
      await step(sleep(500));
    }
    const injected = await step(injectFailures(configs, o.injectFailures));
    if (injected.length) say(`injected a migration failure into ${injected.join(', ')}`);

    connection = await step(connectClient(settings));
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
    const handle = await step(startRollout(client, plan));
    say(`rollout ${plan.name} to ${target}: workflow ${handle.workflowId}`);

    bars = o.json
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
      await step(sleep(300));
      const status = (await step(handle.describe())).status.name;
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
    const progress = result ?? (await step(handle.query(rolloutProgressQuery)));
    if (progress.status === 'paused')
      say(`the rollout paused itself: ${progress.pauseReason ?? 'failure budget spent'}`);

    // The guests keep writing for a moment after the last switchover; then their disks are read.
    if (mode === 'real' && guests.size) {
      const marks = new Map([...guests].map(([k, g]) => [k, readGuestConsole(g.guest.serialLog).lastWrite]));
      await step(
        Promise.all(
          [...guests].map(([k, g]) =>
            waitForGuest(g.guest.serialLog, (c) => c.lastWrite >= (marks.get(k) ?? 0) + 3, 20_000).catch(
              () => undefined,
            ),
          ),
        ),
      );
    }

    // One row per VM, from each VM's own upgradeVm result.
    const rows: DemoVmRow[] = [];
    const keptVms: KeptDemo['vms'] = [];
    for (const config of configs) {
      for (const record of await listVmRecords(config.runtimeDir)) {
        const key = `${config.hostId}/${record.id}`;
        const id = workflowIds.upgradeVm(config.hostId, record.id);
        const r = (await client.workflow
          .getHandle(id)
          .result()
          .catch(() => undefined)) as UpgradeVmResult | undefined;
        const g = guests.get(key);
        const ping = g?.pinger ? await g.pinger.stop() : undefined;
        const disk = g
          ? await checkDiskWhileRunning(g.guest.disk, g.guest.serialLog).catch(() => undefined)
          : undefined;
        keptVms.push({ vm: key, pid: record.pid, qmpSocket: record.qmpSocket, label: record.binary.label });
        rows.push({
          vm: key,
          outcome: r?.outcome ?? 'not started',
          strategy: r?.strategy ?? '-',
          ram: r?.ram ?? '-',
          downtimeMs: r?.migration?.downtimeMs ?? null,
          guestPauseMs:
            r?.migration?.guestPauseMs === undefined || r.migration.guestPauseMs === null
              ? null
              : Math.round(r.migration.guestPauseMs * 10) / 10,
          pingGapMs: ping ? ping.largestGapMs : null,
          diskWritesChecked: disk ? disk.checked : null,
          diskWritesLost: disk ? disk.lost.length : null,
          runsOn: record.binary.label,
          reason: r?.reason ?? '',
        });
      }
    }
    if (!o.json) {
      console.table(
        rows.map((r) => ({
          vm: r.vm,
          outcome: r.outcome,
          strategy: r.strategy,
          ram: r.ram,
          'downtime ms': r.downtimeMs ?? '-',
          ...(mode === 'real'
            ? {
                'ping gap ms': r.pingGapMs ?? '-',
                'disk writes':
                  r.diskWritesChecked === null ? '-' : `${r.diskWritesChecked} checked, ${r.diskWritesLost} lost`,
              }
            : { 'guest pause ms': r.guestPauseMs ?? '-' }),
          'runs on': r.runsOn,
          ...(r.reason ? { reason: r.reason } : {}),
        })),
      );
    }
    if (server)
      say(
        `Temporal Web UI: ${server.uiAddress}/namespaces/${settings.namespace}/workflows${o.keep ? '' : ' (pass --keep to leave it running)'}`,
      );
    const count = (outcome: string) => rows.filter((r) => r.outcome === outcome).length;
    const strategies: Record<string, number> = {};
    for (const r of rows) if (r.strategy !== '-') strategies[r.strategy] = (strategies[r.strategy] ?? 0) + 1;
    const gaps = rows.flatMap((r) => (r.pingGapMs === null ? [] : [r.pingGapMs]));
    const lost = rows.flatMap((r) => (r.diskWritesLost === null ? [] : [r.diskWritesLost]));
    const summary: DemoSummary = {
      rollout: plan.name,
      state: result ? result.outcome : progress.status,
      vms: rows.length,
      upgraded: count('upgraded'),
      rolledBack: count('rolled-back'),
      failed: rows.length - count('upgraded') - count('rolled-back') - count('not started'),
      strategies,
      guestPauseMsP50: median(rows.flatMap((r) => (r.guestPauseMs === null ? [] : [r.guestPauseMs]))),
      ...(mode === 'real'
        ? {
            pingGapMsMax: gaps.length ? Math.max(...gaps) : null,
            diskWritesLost: lost.length === rows.length ? lost.reduce((a, b) => a + b, 0) : null,
          }
        : {}),
      durationMs: Date.now() - started,
      perVm: rows,
    };
    if (o.keep) {
      const kept: KeptDemo = {
        base,
        removeBase: !o.runtimeDir,
        ...(server ? { devServer: { pid: server.pid, address: server.address, uiAddress: server.uiAddress } } : {}),
        // Simulated VMs live inside the host workers, which stop with the demo: only real ones are left.
        vms: mode === 'real' ? keptVms : [],
        netns: networks.map((n) => n.ns),
        stop: `fleet-upgrade demo --stop ${base}`,
      };
      writeFileSync(path.join(base, KEPT_FILE), `${JSON.stringify(kept, null, 2)}\n`, { mode: 0o600 });
      summary.kept = kept;
      keepIt = true;
      server?.detach();
      for (const line of describeKept(kept)) say(line);
    }
    const expectedState = o.injectFailures >= (o.failureBudget ?? Infinity) ? 'paused' : 'completed';
    return {
      summary,
      ok:
        summary.state === expectedState &&
        summary.upgraded + summary.rolledBack + count('not started') === rows.length &&
        (summary.diskWritesLost ?? 0) === 0,
    };
  } catch (err) {
    if (interrupted || err instanceof DemoInterrupted) await new Promise(() => undefined); // the handler exits
    throw err;
  } finally {
    if (!interrupted) await stopAll(keepIt);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** SIGKILLs every process whose command line names a path under `prefix` (a demo's QEMUs). */
function killProcessesNaming(prefix: string): string[] {
  const killed: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(prefix))) {
        process.kill(Number(entry), 'SIGKILL');
        killed.push(entry);
      }
    } catch {
      /* gone */
    }
  }
  return killed;
}

export function describeKept(k: KeptDemo): string[] {
  const lines = ['left running (--keep):'];
  if (k.devServer)
    lines.push(
      `  Temporal dev server, pid ${k.devServer.pid}, at ${k.devServer.address}${k.devServer.uiAddress ? `, Web UI ${k.devServer.uiAddress}` : ''}`,
    );
  for (const v of k.vms) lines.push(`  ${v.vm}: QEMU ${v.label}, pid ${v.pid}, QMP ${v.qmpSocket}`);
  for (const ns of k.netns) lines.push(`  network namespace ${ns} (bridge br0 and the VMs' taps)`);
  lines.push(`  records, sockets, logs${k.devServer ? ' and the dev server database' : ''} under ${k.base}`);
  lines.push(
    k.vms.length
      ? 'the workers stopped with the demo.'
      : 'the workers stopped with the demo, and with them the simulated VMs they ran.',
  );
  lines.push(`stop all of it: ${k.stop}`);
  return lines;
}

/** `demo --stop <dir>`: stops what a `demo --keep` left running, as its `demo-kept.json` lists it. */
export async function stopKeptDemo(dir: string): Promise<{ stopped: string[]; kept: KeptDemo }> {
  const file = path.join(path.resolve(dir), KEPT_FILE);
  let kept: KeptDemo;
  try {
    kept = JSON.parse(readFileSync(file, 'utf8')) as KeptDemo;
  } catch (err) {
    throw new BadInputError(
      `--stop: ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no demo kept there' : (err as Error).message}`,
    );
  }
  if (!Array.isArray(kept.vms) || !Array.isArray(kept.netns) || typeof kept.base !== 'string')
    throw new BadInputError(`--stop: ${file}: not a demo-kept record`);
  const stopped: string[] = [];
  for (const v of kept.vms) {
    const how = await killQemu(v.pid, { graceMs: 1000, expectArg: v.qmpSocket }).catch(() => 'not-running');
    stopped.push(`${v.vm}: QEMU pid ${v.pid} ${how === 'not-running' ? 'was not running' : 'stopped'}`);
  }
  for (const ns of kept.netns) {
    deleteNetns(ns);
    stopped.push(`network namespace ${ns} deleted`);
  }
  if (kept.devServer) {
    const pid = kept.devServer.pid;
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      /* gone */
    }
    if (cmd.includes('temporal') && cmd.includes('start-dev')) {
      process.kill(pid, 'SIGTERM');
      const until = Date.now() + 10_000;
      while (Date.now() < until && isProcessAlive(pid)) await sleep(100);
      if (isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
      stopped.push(`Temporal dev server pid ${pid} stopped`);
    } else stopped.push(`Temporal dev server pid ${pid} was not running`);
  }
  for (const pid of killProcessesNaming(`${kept.base}/`)) stopped.push(`process ${pid} under ${kept.base} stopped`);
  if (kept.removeBase) {
    rmSync(kept.base, { recursive: true, force: true });
    stopped.push(`${kept.base} removed`);
  } else rmSync(file, { force: true });
  return { stopped, kept };
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
