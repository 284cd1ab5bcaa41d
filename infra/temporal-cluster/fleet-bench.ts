// The fleet benchmark's workload on both services, side by side: the Temporal CLI's dev server (one process,
// SQLite) and the real cluster of infra/temporal-cluster (temporal-server on PostgreSQL 15, mTLS). Each run:
// an orchestrator worker and simulated hosts (in-process VMs, launched by the host workers), every VM upgraded
// by its own upgradeVm workflow; reported: upgrades/s, history events per VM, and the CPU share of the
// Temporal processes (dev server; or temporal-server plus every PostgreSQL process) while the upgrades ran.
// Usage: node dist/infra/temporal-cluster/fleet-bench.js [--hosts 4] [--vms-per-host 25] [--concurrency 16] [--json]
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client, type Connection } from '@temporalio/client';
import { historyFigures, machineCpuSec, procCpuSec } from '../bench/fleet';
import { startDevServer } from '../devserver';
import { projectRoot } from '../real-parts';
import { pool, startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../worker-processes';
import { connectClient, settingsFromEnv, type TemporalSettings } from '../../workers/temporal-connection';
import { upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import { workflowIds } from '../../workflows/names';

export interface Options {
  hosts: number;
  vmsPerHost: number;
  concurrency: number;
  json: boolean;
}

export interface ServiceFigures {
  service: 'dev server' | 'cluster (PostgreSQL, mTLS)';
  vms: number;
  upgraded: number;
  wallSec: number;
  upgradesPerSec: number;
  eventsPerVm: number;
  /** CPU seconds of the Temporal processes while the upgrades ran, and their share of all CPU used. */
  temporalCpuSec: number;
  temporalCpuShare: number;
  machineBusyShare: number;
}

const say = (line: string) => process.stderr.write(`${line}\n`);
const searchAttributeTypes = Object.fromEntries(
  ['FleetHost', 'FleetVm', 'FleetPhase', 'FleetTarget', 'FleetRollout'].map((n) => [n, 'Keyword' as const]),
);

/** The postmaster and every process under it (PostgreSQL's backends live as long as their connections). */
function postgresPids(dataDir: string): number[] {
  const master = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const pids = [master];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === master) pids.push(Number(e));
    } catch {
      /* gone */
    }
  }
  return pids;
}

async function runOn(
  service: ServiceFigures['service'],
  settings: TemporalSettings,
  temporalPids: () => number[],
  o: Options,
  dir: string,
): Promise<ServiceFigures> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('TEMPORAL_')) delete env[k];
  env.TEMPORAL_ADDRESS = settings.address;
  env.TEMPORAL_NAMESPACE = settings.namespace;
  if (settings.tls?.serverRootCACertFile) env.TEMPORAL_TLS_CA = settings.tls.serverRootCACertFile;
  if (settings.tls?.clientCertFile) env.TEMPORAL_TLS_CERT = settings.tls.clientCertFile;
  if (settings.tls?.clientKeyFile) env.TEMPORAL_TLS_KEY = settings.tls.clientKeyFile;
  if (settings.tls?.serverName) env.TEMPORAL_TLS_SERVER_NAME = settings.tls.serverName;
  const workers: WorkerProcess[] = [];
  let connection: Connection | undefined;
  try {
    workers.push(await startWorkerProcess('orchestrator', ['orchestrator-worker'], env, path.join(dir, 'orch.log')));
    const sim = (version: string) => ({ simulator: { dialect: 'local', version, ramRateMbps: 8000 } });
    for (let h = 0; h < o.hosts; h++) {
      const hostId = `fb-${h}`;
      const file = path.join(dir, `${hostId}.json`);
      writeFileSync(
        file,
        JSON.stringify({
          hostId,
          runtimeDir: path.join(dir, `h${h}`),
          binaries: { 'sim-old': sim('10.0.50'), 'sim-new': sim('10.1.50') },
          launchAtStart: Array.from({ length: o.vmsPerHost }, (_, v) => ({
            id: `vm${v}`,
            binary: 'sim-old',
            machine: 'pc-i440fx-7.2',
            accel: 'tcg',
            memoryMiB: 16,
          })),
        }),
      );
      workers.push(
        await startWorkerProcess(hostId, ['host-worker', '--config', file], env, path.join(dir, `${hostId}.log`)),
      );
    }
    connection = await connectClient(settings);
    const client = new Client({ connection, namespace: settings.namespace });
    const vms: { hostId: string; vmId: string }[] = [];
    for (let v = 0; v < o.vmsPerHost; v++)
      for (let h = 0; h < o.hosts; h++) vms.push({ hostId: `fb-${h}`, vmId: `vm${v}` });

    const cpuOf = (pids: number[]) =>
      new Map(
        pids.map((p) => {
          try {
            return [p, procCpuSec(p)];
          } catch {
            return [p, 0];
          }
        }),
      );
    const allPids = () => [...temporalPids(), ...workers.map((w) => w.child.pid!)];
    const before = cpuOf(allPids());
    const clientBefore = process.cpuUsage();
    const machineBefore = machineCpuSec();
    const started = Date.now();
    const results = await pool(
      vms,
      o.concurrency,
      ({ hostId, vmId }) =>
        client.workflow.execute('upgradeVm', {
          taskQueue: 'fleet-upgrade',
          workflowId: workflowIds.upgradeVm(hostId, vmId),
          args: [{ hostId, vmId, target: 'sim-new' }],
          typedSearchAttributes: upgradeVmSearchAttributes({ hostId, vmId, target: 'sim-new' }),
        }) as Promise<{ outcome: string }>,
    );
    const wallSec = (Date.now() - started) / 1000;
    const machineAfter = machineCpuSec();
    const clientCpu = process.cpuUsage(clientBefore);
    const delta = (pids: number[]) => {
      const after = cpuOf(pids);
      return pids.reduce((a, p) => a + (after.get(p) ?? 0) - (before.get(p) ?? 0), 0);
    };
    const temporalCpu = delta(temporalPids());
    const totalCpu = delta(allPids()) + (clientCpu.user + clientCpu.system) / 1e6;
    const sample = vms.slice(0, Math.min(20, vms.length));
    let events = 0;
    for (const { hostId, vmId } of sample) {
      events += historyFigures(
        await client.workflow.getHandle(workflowIds.upgradeVm(hostId, vmId)).fetchHistory(),
      ).events;
    }
    return {
      service,
      vms: vms.length,
      upgraded: results.filter((r) => r.outcome === 'upgraded').length,
      wallSec: Math.round(wallSec * 10) / 10,
      upgradesPerSec: Math.round((vms.length / wallSec) * 10) / 10,
      eventsPerVm: Math.round((events / sample.length) * 10) / 10,
      temporalCpuSec: Math.round(temporalCpu * 10) / 10,
      temporalCpuShare: Math.round((temporalCpu / totalCpu) * 100) / 100,
      machineBusyShare:
        Math.round(((machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total)) * 100) / 100,
    };
  } finally {
    await connection?.close().catch(() => undefined);
    for (const w of workers) await stopWorkerProcess(w);
  }
}

export async function runClusterFleetBench(o: Options): Promise<ServiceFigures[]> {
  const base = mkdtempSync('/tmp/fb-');
  chmodSync(base, 0o711); // as root, the cluster's PostgreSQL runs as user postgres, who must reach it
  const out: ServiceFigures[] = [];
  try {
    say(`dev server: ${o.hosts} hosts × ${o.vmsPerHost} VMs`);
    // As npm run bench runs it: SQLite on tmpfs, where its fsyncs cost nothing (PostgreSQL commits without
    // waiting for its WAL flush: synchronous_commit=off).
    const devDb = path.join(existsSync('/dev/shm') ? mkdtempSync('/dev/shm/fb-') : base, 'dev.db');
    const dev = await startDevServer({
      headless: true,
      searchAttributes: searchAttributeTypes,
      dbFile: devDb,
    });
    try {
      const d = path.join(base, 'dev');
      spawnSync('mkdir', ['-p', d]);
      out.push(await runOn('dev server', { address: dev.address, namespace: dev.namespace }, () => [dev.pid], o, d));
    } finally {
      await dev.stop();
      if (devDb.startsWith('/dev/shm/')) rmSync(path.dirname(devDb), { recursive: true, force: true });
    }
    say(`cluster: ${o.hosts} hosts × ${o.vmsPerHost} VMs`);
    const state = path.join(base, 'cluster');
    const clusterDir = path.join(projectRoot, 'infra', 'temporal-cluster');
    const r = spawnSync('bash', [path.join(clusterDir, 'start.sh'), state], { encoding: 'utf8', timeout: 240_000 });
    try {
      if (r.status !== 0) throw new Error(`start.sh failed:\n${r.stderr}`);
      const env = Object.fromEntries(
        readFileSync(path.join(state, 'client.env'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      const serverPid = Number(readFileSync(path.join(state, 'temporal.pid'), 'utf8'));
      const d = path.join(base, 'cl');
      spawnSync('mkdir', ['-p', d]);
      out.push(
        await runOn(
          'cluster (PostgreSQL, mTLS)',
          settingsFromEnv(env),
          () => [serverPid, ...postgresPids(path.join(state, 'pg', 'data'))],
          o,
          d,
        ),
      );
    } finally {
      spawnSync('bash', [path.join(clusterDir, 'stop.sh'), state], { timeout: 60_000 });
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
  return out;
}

if (require.main === module) {
  const o: Options = { hosts: 4, vmsPerHost: 25, concurrency: 16, json: false };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const next = () => Number(argv[++i]);
    if (argv[i] === '--hosts') o.hosts = next();
    else if (argv[i] === '--vms-per-host') o.vmsPerHost = next();
    else if (argv[i] === '--concurrency') o.concurrency = next();
    else if (argv[i] === '--json') o.json = true;
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  runClusterFleetBench(o).then(
    (figures) => {
      if (o.json) process.stdout.write(`${JSON.stringify(figures)}\n`);
      else console.table(figures);
    },
    (err: unknown) => {
      say(String((err as Error).stack ?? err));
      process.exitCode = 1;
    },
  );
}
