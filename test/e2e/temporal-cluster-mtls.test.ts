// The product against a real Temporal server (not the dev server): the server built from go.temporal.io/server
// by infra/install.sh, on its own PostgreSQL 15, with mTLS required on the frontend, a namespace of its own and
// the search attributes registered through the operator API — all started by infra/temporal-cluster/start.sh.
// The orchestrator worker and two host workers are separate processes connecting with client certificates: one
// host worker only through its host config's `temporal:` section, the other only through TEMPORAL_* variables.
// A rollout (started by the CLI, also over mTLS) upgrades a counter-guest VM on real QEMU 7.2 → 10.0.2 on one
// host and two simulated VMs on the other. A worker without a client certificate, and one whose certificate
// comes from another CA, are refused with one line and exit code 3; no key or password reaches any log.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { launchVm } from '../../activities/host/vm-launch';
import { readVmRecord } from '../../activities/host/vm-record';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { QmpClient } from '../../activities/qmp/client';
import { projectRoot, qemu10, qemu72, requireQemu, requireRealPart } from '../../infra/real-parts';
import { startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../../infra/worker-processes';
import { connectClient, settingsFromEnv } from '../../workers/temporal-connection';
import { killQemusUnder } from '../helpers/cleanup';
import { parseCounter, writeCounterGuest } from '../../infra/guest/counter-guest';
import { writeSimBinary } from '../helpers/sim-binaries';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';
import { ensureSimulatorBuilt } from './rollout-support';

jest.setTimeout(300_000);

const clusterDir = path.join(projectRoot, 'infra', 'temporal-cluster');
const cli = path.join(projectRoot, 'bin', 'fleet-upgrade.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let tmp: TmpDir;
let state: string;
let clusterEnv: Record<string, string>;
const workers: WorkerProcess[] = [];
const outputs: string[] = [];
let startMs = 0;

/** The environment of a child process, without any Temporal setting of the test's own environment. */
function baseEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TEMPORAL_')) env[k] = v;
  return { ...env, ...extra };
}

function run(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(t);
      outputs.push(stdout, stderr);
      resolve({ code, stdout, stderr });
    });
  });
}

async function readCounter(qmpSocket: string): Promise<number> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    return parseCounter(String(await qmp.execute('human-monitor-command', { 'command-line': 'x /1wx 0x7e00' })));
  } finally {
    await qmp.close();
  }
}

function yamlOf(data: unknown): string {
  return JSON.stringify(data, null, 2); // JSON is YAML
}

let realHost: HostConfig;
let simHostConfig: HostConfig;
let realConfigFile: string;
let simConfigFile: string;

beforeAll(async () => {
  requireQemu(qemu72);
  requireQemu(qemu10);
  requireRealPart('the Temporal server', path.join(projectRoot, '.cache', 'temporal-server', 'bin', 'temporal-server'));
  ensureSimulatorBuilt();
  tmp = makeTmpDir('tc');
  chmodSync(tmp.path, 0o711); // as root, the cluster's PostgreSQL runs as user postgres, who must reach it
  state = path.join(tmp.path, 'cluster');

  // The cluster: fails loudly (with the logs' tails) when any part is missing or does not start.
  startMs = Date.now();
  const r = spawnSync('bash', [path.join(clusterDir, 'start.sh'), state, '--namespace', 'fleet-e2e'], {
    encoding: 'utf8',
    timeout: 240_000,
    env: baseEnv(),
  });
  if (r.status !== 0) throw new Error(`start.sh failed (${r.status ?? r.signal}):\n${r.stderr}\n${r.stdout}`);
  outputs.push(r.stdout, r.stderr);
  startMs = Date.now() - startMs;
  clusterEnv = Object.fromEntries(
    readFileSync(path.join(state, 'client.env'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );

  // Host hv-real: real QEMU 7.2 and 10.0.2; its worker reaches Temporal only through its config.
  realHost = parseHostConfig({
    hostId: 'hv-real',
    runtimeDir: path.join(tmp.path, 'real'),
    binaries: {
      old: { path: qemu72.binary, dataDirs: qemu72.dataDirs },
      new: { path: qemu10.binary, dataDirs: qemu10.dataDirs },
    },
    temporal: {
      address: clusterEnv.TEMPORAL_ADDRESS,
      namespace: clusterEnv.TEMPORAL_NAMESPACE,
      tls: {
        serverName: clusterEnv.TEMPORAL_TLS_SERVER_NAME,
        serverRootCACertFile: clusterEnv.TEMPORAL_TLS_CA,
        clientCertFile: clusterEnv.TEMPORAL_TLS_CERT,
        clientKeyFile: clusterEnv.TEMPORAL_TLS_KEY,
      },
    },
  });
  realConfigFile = path.join(tmp.path, 'hv-real.yaml');
  writeFileSync(realConfigFile, yamlOf(realHost));

  // Host hv-sim: simulated builds; no `temporal:` section, so only the environment can bring it to the cluster.
  const simDir = path.join(tmp.path, 'sim');
  const ledger = path.join(simDir, 'ledger');
  const sim = (name: string, version: string) =>
    writeSimBinary(simDir, name, { dialect: 'none', version, ledger, extra: ['--sim-ram-rate-mbps', '2000'] });
  spawnSync('mkdir', ['-p', ledger]);
  const simData = {
    hostId: 'hv-sim',
    runtimeDir: path.join(simDir, 'rt'),
    binaries: { old: { path: sim('qemu-old', '10.0.50') }, new: { path: sim('qemu-new', '10.1.50') } },
    limits: { killGraceMs: 500 },
  };
  simHostConfig = parseHostConfig(simData);
  simConfigFile = path.join(tmp.path, 'hv-sim.yaml');
  writeFileSync(simConfigFile, yamlOf(simData));
}, 300_000);

afterAll(async () => {
  for (const w of workers) await stopWorkerProcess(w, 'SIGKILL').catch(() => undefined);
  if (state) spawnSync('bash', [path.join(clusterDir, 'stop.sh'), state], { timeout: 60_000 });
  if (tmp) {
    killQemusUnder(tmp.path);
    tmp.cleanup();
  }
});

test('workers on mTLS (config section and environment), a rollout of real and simulated VMs completes', async () => {
  const t0 = Date.now();
  const disk = writeCounterGuest(path.join(tmp.path, 'counter.img'));
  const realBefore = await launchVm({
    config: realHost,
    spec: parseVmSpec({
      id: 'vm1',
      binary: 'old',
      machine: 'pc-i440fx-7.2',
      accel: 'tcg',
      memoryMiB: 64,
      drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
    }),
  });
  for (const id of ['vm1', 'vm2']) {
    await launchVm({
      config: simHostConfig,
      spec: parseVmSpec({
        id,
        binary: 'old',
        machine: 'pc-i440fx-7.2',
        accel: 'tcg',
        memoryMiB: 16,
        memoryBackend: 'ram',
        memoryShared: false,
      }),
      auxRamShare: false,
    });
  }
  const counted = await readCounter(realBefore.qmpSocket);

  const log = (n: string) => path.join(tmp.path, `${n}.log`);
  workers.push(await startWorkerProcess('orchestrator', ['orchestrator-worker'], baseEnv(clusterEnv), log('orch')));
  workers.push(
    await startWorkerProcess('hv-real', ['host-worker', '--config', realConfigFile], baseEnv(), log('hv-real')),
  );
  workers.push(
    await startWorkerProcess('hv-sim', ['host-worker', '--config', simConfigFile], baseEnv(clusterEnv), log('hv-sim')),
  );
  expect(workers[1]!.output()).toContain(`on ${clusterEnv.TEMPORAL_ADDRESS}`);
  expect(workers[2]!.output()).toContain(`on ${clusterEnv.TEMPORAL_ADDRESS}`);

  // The CLI, a client with the operator's certificate: both hosts live, with their labels.
  const hosts = await run(['hosts', '--json'], baseEnv(clusterEnv));
  expect(hosts.stderr).toBe('');
  expect(hosts.code).toBe(0);
  const rows = JSON.parse(hosts.stdout) as Array<{ hostId: string; live: boolean; labels?: string[] }>;
  expect(rows.map((h) => [h.hostId, h.live, h.labels?.slice().sort()])).toEqual([
    ['hv-real', true, ['new', 'old']],
    ['hv-sim', true, ['new', 'old']],
  ]);

  const planFile = path.join(tmp.path, 'plan.yaml');
  writeFileSync(
    planFile,
    yamlOf({
      name: 'mtls',
      target: 'new',
      hosts: ['hv-real', 'hv-sim'],
      waves: [{ name: 'all', hosts: 'rest' }],
      concurrency: { hosts: 2, vmsPerHost: 1 },
    }),
  );
  const rollout = await run(['rollout', 'start', '--plan', planFile, '--wait', '--json'], baseEnv(clusterEnv), 240_000);
  expect({ code: rollout.code, stderrTail: rollout.stderr.split('\n').slice(-5) }).toMatchObject({ code: 0 });
  const result = JSON.parse(rollout.stdout.trim().split('\n').pop()!) as {
    outcome: string;
    vms: Record<string, number>;
  };
  expect(result.outcome).toBe('completed');
  expect(result.vms).toMatchObject({ upgraded: 3, failed: 0, 'rolled-back': 0, pending: 0, 'in-flight': 0 });

  // The real VM runs on QEMU 10.0.2 and its guest kept counting; the simulated ones run the new build.
  const after = await readVmRecord(realHost.runtimeDir, 'vm1');
  expect(after).toMatchObject({ generation: 2, binary: { label: 'new', path: qemu10.binary } });
  expect(isProcessAlive(realBefore.pid)).toBe(false);
  const first = await readCounter(after!.qmpSocket);
  expect(first).toBeGreaterThan(counted);
  const qmp = await QmpClient.connect(after!.qmpSocket);
  try {
    expect(await qmp.execute('query-version')).toMatchObject({ qemu: { major: 10, minor: 0, micro: 2 } });
  } finally {
    await qmp.close();
  }
  for (const id of ['vm1', 'vm2']) expect((await readVmRecord(simHostConfig.runtimeDir, id))?.binary.label).toBe('new');

  // The search attributes the operator registered, as the Web UI and `temporal workflow list` query them
  // (SQL visibility: written by the history service shortly after each change).
  const connection = await connectClient(settingsFromEnv(clusterEnv));
  try {
    const client = new Client({ connection, namespace: clusterEnv.TEMPORAL_NAMESPACE });
    let done: string[] = [];
    for (let i = 0; i < 50; i++) {
      done = [];
      for await (const w of client.workflow.list({ query: `FleetRollout = 'mtls' AND FleetPhase = 'done'` }))
        done.push(w.workflowId);
      if (done.length === 3) break;
      await sleep(200);
    }
    expect(done.sort()).toEqual(['upgrade-vm/hv-real/vm1', 'upgrade-vm/hv-sim/vm1', 'upgrade-vm/hv-sim/vm2']);
  } finally {
    await connection.close();
  }
  process.stderr.write(
    `temporal-cluster e2e: cluster up in ${startMs} ms, workers and rollout of 3 VMs in ${Date.now() - t0} ms\n`,
  );
});

test('a worker without a client certificate, or with one of another CA, is refused: one line, exit 3', async () => {
  // Another CA, and a client certificate it signed (the cluster does not trust it).
  const other = path.join(tmp.path, 'other-ca');
  const mk = (...a: string[]) => spawnSync('bash', [path.join(clusterDir, 'make-certs.sh'), other, ...a]);
  expect(mk('--ca-only').status).toBe(0);
  expect(mk('--client', 'rogue').status).toBe(0);

  const noCert = baseEnv({
    TEMPORAL_ADDRESS: clusterEnv.TEMPORAL_ADDRESS!,
    TEMPORAL_NAMESPACE: clusterEnv.TEMPORAL_NAMESPACE!,
    TEMPORAL_TLS_CA: clusterEnv.TEMPORAL_TLS_CA!,
    TEMPORAL_TLS_SERVER_NAME: clusterEnv.TEMPORAL_TLS_SERVER_NAME!,
  });
  const rogue = {
    ...noCert,
    TEMPORAL_TLS_CERT: path.join(other, 'rogue.pem'),
    TEMPORAL_TLS_KEY: path.join(other, 'rogue.key'),
  };
  for (const [what, env] of [
    ['no client certificate', noCert],
    ['a certificate of another CA', rogue],
  ] as const) {
    for (const args of [['host-worker', '--config', simConfigFile], ['orchestrator-worker']]) {
      const r = await run(args, env, 90_000);
      const lines = r.stderr.trimEnd().split('\n');
      expect({ what, args, code: r.code, lines: lines.length, stdout: r.stdout }).toEqual({
        what,
        args,
        code: 3,
        lines: 1,
        stdout: '',
      });
      expect(lines[0]).toMatch(new RegExp(`^fleet-upgrade: cannot reach Temporal at ${clusterEnv.TEMPORAL_ADDRESS}: `));
    }
  }
});

test('a namespace without the search attributes: rollout start and vm upgrade fail with one line, exit 3', async () => {
  const connection = await connectClient(settingsFromEnv(clusterEnv));
  try {
    await connection.workflowService.registerNamespace({
      namespace: 'bare',
      workflowExecutionRetentionPeriod: msToTs('1 day'),
    });
    for (let i = 0; i < 100; i++) {
      try {
        await connection.workflowService.describeNamespace({ namespace: 'bare' });
        break;
      } catch {
        await sleep(100);
      }
    }
  } finally {
    await connection.close();
  }
  const planFile = path.join(tmp.path, 'bare-plan.yaml');
  writeFileSync(planFile, yamlOf({ name: 'bare', target: 'new', hosts: ['hv-sim'] }));
  const env = baseEnv({ ...clusterEnv, TEMPORAL_NAMESPACE: 'bare' });
  for (const args of [
    ['rollout', 'start', '--plan', planFile],
    ['vm', 'upgrade', '--host', 'hv-sim', '--vm', 'vm1', '--to', 'new'],
  ]) {
    let r = await run(args, env);
    // The new namespace reaches the frontend's cache within seconds.
    for (let i = 0; i < 20 && /not found/i.test(r.stderr); i++) {
      await sleep(500);
      r = await run(args, env);
    }
    expect({ args, code: r.code, lines: r.stderr.trimEnd().split('\n').length }).toEqual({ args, code: 3, lines: 1 });
    expect(r.stderr).toMatch(
      /^fleet-upgrade: .*no mapping defined for search attribute Fleet\w+ \(register the search attributes/,
    );
  }
});

test('nothing secret in any log: no private key, no database password', () => {
  const secrets = [readFileSync(path.join(state, 'db-password'), 'utf8').trim()];
  for (const f of readdirSync(path.join(state, 'tls')).filter((n) => n.endsWith('.key'))) {
    // The key's base64 body, line by line (any line of it would be a leak).
    const body = readFileSync(path.join(state, 'tls', f), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('-----'));
    secrets.push(...body.filter((l) => l.length >= 40));
  }
  expect(secrets.length).toBeGreaterThan(4);
  const logs = [
    ...outputs,
    ...workers.map((w) => w.output()),
    readFileSync(path.join(state, 'temporal.log'), 'utf8'),
    readFileSync(path.join(state, 'pg.log'), 'utf8'),
  ];
  for (const text of logs) {
    expect(text).not.toContain('PRIVATE KEY');
    for (const s of secrets) expect(text.includes(s)).toBe(false);
  }
});
