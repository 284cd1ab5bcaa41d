// A rollout of 2,000 VMs with faults in 5 % of them, end to end: a real Temporal dev server, the orchestrator
// worker and four host workers, each its own process started through the CLI as in production
// (infra/worker-processes.ts). Each host's QEMU builds are in-process simulators with a ledger
// (activities/host/sim-launcher.ts): the host worker launches its 500 VMs at start and runs the saga's
// activities against them unchanged. Before the rollout starts, random faults (seeded: FLEET_SCALE_SEED=N
// replays a run) are armed over QMP in 5 % of the VMs: crashes, hangs, error replies and stalls in every
// phase the source can suffer them.
//
// What it proves, from the simulator's records and the VMs' own monitors rather than the workflows' belief:
// - continue-as-new keeps every history bounded: the rollout and every upgradeHost went through several
//   runs, none much longer than the plan's limit;
// - never more than `vmsPerHost` migrations at once on a host;
// - every VM is accounted for: upgraded, rolled back or failed with a reason; the faults hurt no other VM;
//   none runs in two processes, none resumes from a stale state, each runs where its record says, each tap
//   has one owner: the process that runs the guest.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { listVmRecords, type VmRecord } from '../../activities/host/vm-record';
import { QmpClient } from '../../activities/qmp/client';
import { startDevServer, type DevServer } from '../../infra/devserver';
import { readLedger, runningIntervals, type LedgerEvent } from '../../infra/simulator/ledger';
import { SOURCE_FAULTS, seededRandom, sourceFaultArgs, type SourceFault } from '../../infra/simulator/source-faults';
import { pool, startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../../infra/worker-processes';
import type { RolloutResult } from '../../workflows/rollout';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';
import { maxOverlap, migrationSpans, plan, startRolloutOf, waitFor } from './rollout-support';

jest.setTimeout(1_200_000);

const HOSTS = 4;
/** 500 in CI; FLEET_SCALE_VMS_PER_HOST=N for a quicker look while developing. */
const VMS_PER_HOST = Number(process.env.FLEET_SCALE_VMS_PER_HOST ?? 500);
const VMS = HOSTS * VMS_PER_HOST;
const FAULTY = Math.round(VMS * 0.05);
const AT_ONCE = 8;
const HISTORY_LIMIT = 1000;
/** A run ends at the first quiet moment past the limit: VMs in flight finish first and report. */
const HISTORY_SLACK = 250;
const OLD = '10.0.50';
const NEW = '10.1.50';
const SEED = Number(process.env.FLEET_SCALE_SEED ?? Date.now() % 1_000_000);

interface Host {
  hostId: string;
  runtimeDir: string;
  ledger: string;
  worker?: WorkerProcess;
}

const tapOf = (h: number, v: number) => `sc${h}t${v}`;

let tmp: TmpDir;
let server: DevServer | undefined;
let connection: Connection | undefined;
const workers: WorkerProcess[] = [];

beforeAll(() => {
  // The dev server's SQLite file and the ledgers on tmpfs: at this scale fsyncs, not the product, would set
  // the pace.
  tmp = makeTmpDir('scale', '/dev/shm');
});

afterAll(async () => {
  await connection?.close();
  // The VMs live inside the host workers: stopping them stops every simulated QEMU.
  await Promise.all(workers.map((w) => stopWorkerProcess(w)));
  await server?.stop();
  tmp?.cleanup();
});

test(`a rollout of ${VMS} VMs with faults in ${FAULTY}: continue-as-new keeps histories bounded, limits hold, every VM accounted for`, async () => {
  const rnd = seededRandom(SEED);
  process.stderr.write(`rollout-scale: seed ${SEED} (FLEET_SCALE_SEED=${SEED} replays it)\n`);
  server = await startDevServer({
    headless: true,
    searchAttributes: searchAttributeTypes,
    dbFile: path.join(tmp.path, 'temporal.db'),
    logFile: path.join(tmp.path, 'temporal-dev.log'),
  });
  const env = { ...process.env, TEMPORAL_ADDRESS: server.address, TEMPORAL_NAMESPACE: server.namespace };
  workers.push(
    await startWorkerProcess('orchestrator', ['orchestrator-worker'], env, path.join(tmp.path, 'orchestrator.log')),
  );

  const started = Date.now();
  const hosts: Host[] = Array.from({ length: HOSTS }, (_, h) => ({
    hostId: `scale-${h + 1}`,
    runtimeDir: path.join(tmp.path, `h${h + 1}`, 'rt'),
    ledger: path.join(tmp.path, `h${h + 1}`, 'ledger'),
  }));
  await Promise.all(
    hosts.map(async (host, h) => {
      mkdirSync(host.ledger, { recursive: true });
      const simulator = (version: string) => ({
        simulator: { dialect: 'local', version, ramRateMbps: 8000, stateDir: host.ledger },
      });
      const config = path.join(tmp.path, `${host.hostId}.json`);
      writeFileSync(
        config,
        JSON.stringify({
          hostId: host.hostId,
          runtimeDir: host.runtimeDir,
          binaries: { old: simulator(OLD), new: simulator(NEW) },
          limits: { maxConcurrentMigrations: AT_ONCE },
          launchAtStart: Array.from({ length: VMS_PER_HOST }, (_, v) => ({
            id: `vm${v}`,
            binary: 'old',
            machine: 'pc-i440fx-7.2',
            accel: 'tcg',
            memoryMiB: 16,
            netdevs: [{ id: 'net0', type: 'tap', ifname: tapOf(h, v) }],
            devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
          })),
        }),
      );
      host.worker = await startWorkerProcess(
        host.hostId,
        ['host-worker', '--config', config],
        env,
        path.join(tmp.path, `${host.hostId}.log`),
      );
      workers.push(host.worker);
      expect(host.worker.output()).toContain(`launched ${VMS_PER_HOST} VMs`);
    }),
  );
  process.stderr.write(`rollout-scale: ${HOSTS} host workers up with ${VMS} VMs in ${Date.now() - started} ms\n`);

  // Arm the faults while nothing else talks to the monitors.
  const all = hosts.flatMap((host, h) => Array.from({ length: VMS_PER_HOST }, (_, v) => ({ host, h, v })));
  const faulty = new Map<string, SourceFault>();
  while (faulty.size < FAULTY) {
    const { host, v } = all[Math.floor(rnd() * all.length)]!;
    const ref = `${host.hostId}/vm${v}`;
    if (!faulty.has(ref)) faulty.set(ref, SOURCE_FAULTS[Math.floor(rnd() * SOURCE_FAULTS.length)]!);
  }
  const recordsBefore = new Map<string, VmRecord>();
  for (const host of hosts) {
    for (const r of await listVmRecords(host.runtimeDir)) recordsBefore.set(`${host.hostId}/${r.id}`, r);
  }
  expect(recordsBefore.size).toBe(VMS);
  await pool([...faulty], 8, async ([ref, fault]) => {
    const q = await QmpClient.connect(recordsBefore.get(ref)!.qmpSocket, { timeoutMs: 10_000 });
    try {
      await q.execute('x-sim-inject-fault', sourceFaultArgs(fault));
    } finally {
      await q.close();
    }
  });

  // The rollout: one wave of all hosts (wave order is covered by rollout-sim.test.ts), a budget no fault
  // exhausts, a stall noticed after 5 s, and a history limit that forces many runs.
  connection = await Connection.connect({ address: server.address });
  const client = new Client({ connection, namespace: server.namespace });
  const p = plan({
    name: 'scale',
    hosts: hosts.map((h) => h.hostId),
    waves: [{ name: 'all', hosts: 'rest' }],
    concurrency: { hosts: HOSTS, vmsPerHost: AT_ONCE },
    failureBudget: VMS,
    policy: { strategies: ['backend-transfer', 'plain'], progressTimeoutSec: 5 },
    limits: { historyEvents: HISTORY_LIMIT },
  });
  const rolloutStarted = Date.now();
  const handle = await startRolloutOf(client, p);
  // The progress query answers across runs.
  const mid = await waitFor(client, handle.workflowId, (x) => x.runs >= 2, 600_000);
  expect(mid.status).toBe('running');
  const r = (await handle.result()) as RolloutResult;
  const rolloutSec = (Date.now() - rolloutStarted) / 1000;

  // Every VM accounted for, and only faulty VMs hurt.
  expect(r.outcome).toBe('completed');
  const { upgraded, 'rolled-back': rolledBack, failed } = r.vms;
  // A source that hangs mid-migration and stays silent is left to an operator.
  const needsOperator = r.vms['needs-operator'] ?? 0;
  expect(upgraded + rolledBack + failed + needsOperator).toBe(VMS);
  expect(r.vms).toMatchObject({ pending: 0, 'in-flight': 0, refused: 0, 'already-on-target': 0 });
  expect(r.failures).toHaveLength(rolledBack + failed + needsOperator);
  for (const f of r.failures) {
    expect(
      faulty.has(`${f.hostId}/${f.vmId}`) ? 'faulty' : `unfaulted VM ${f.hostId}/${f.vmId} failed: ${f.reason}`,
    ).toBe('faulty');
    expect(f.reason).toEqual(expect.stringMatching(/\S/));
  }
  const outcomeOf = new Map(r.failures.map((f) => [`${f.hostId}/${f.vmId}`, f]));

  // Where each guest runs, from the simulator's ledger, the VM records and the monitors.
  const violations: string[] = [];
  for (const [h, host] of hosts.entries()) {
    const ledger = readLedger(host.ledger);
    const byVm = new Map<string, LedgerEvent[]>();
    for (const e of ledger.events) byVm.set(String(e.vm), [...(byVm.get(String(e.vm)) ?? []), e]);
    const records = new Map((await listVmRecords(host.runtimeDir)).map((x) => [x.id, x]));
    await pool(
      Array.from({ length: VMS_PER_HOST }, (_, v) => v),
      16,
      async (v) => {
        const vmId = `vm${v}`;
        const ref = `${host.hostId}/${vmId}`;
        const say = (what: string) => violations.push(`${ref} (${faulty.get(ref) ?? 'no fault'}): ${what}`);
        const events = byVm.get(vmId) ?? [];
        const starts = events.filter((e) => e.event === 'start');
        const ended = new Set(events.filter((e) => ['quit', 'crash', 'exit'].includes(e.event)).map((e) => e.instance));
        const live = starts.filter((s) => !ended.has(s.instance));
        const intervals = runningIntervals(events).sort((a, b) => a.from - b.from);
        for (let i = 1; i < intervals.length; i++) {
          if (intervals[i]!.from < intervals[i - 1]!.to) say('two processes ran the guest at once');
        }
        const order = intervals.map((x) => x.instance).filter((x, i, a) => i === 0 || a[i - 1] !== x);
        if (new Set(order).size !== order.length) say('a process resumed after another had run the guest');
        const failure = outcomeOf.get(ref);
        const outcome = failure?.outcome ?? 'upgraded';
        if (live.length > 1) say(`${live.length} live processes`);
        if (live.length === 0) {
          if (outcome !== 'failed' || !/not running/i.test(failure?.reason ?? '')) {
            say(`runs nowhere, but the rollout says ${outcome}: ${failure?.reason ?? '-'}`);
          }
          return;
        }
        const runner = live[0]!;
        const expected = outcome === 'upgraded' ? NEW : outcome === 'rolled-back' ? OLD : undefined;
        if (expected && runner.version !== expected) say(`${outcome}, but runs on ${runner.version}`);
        const record = records.get(vmId);
        const label = runner.version === NEW ? 'new' : 'old';
        if (record?.binary.label !== label) say(`the record names ${record?.binary.label}, the guest runs on ${label}`);
        const tap = ledger.backends[`tap:${tapOf(h, v)}`];
        if (tap?.owner.instance !== runner.instance) say(`its tap is owned by ${tap?.owner.instance ?? 'nobody'}`);
        if (!record) return;
        // The monitor the record names answers, on the build the record names.
        try {
          const q = await QmpClient.connect(record.qmpSocket, { timeoutMs: 10_000 });
          try {
            const { qemu } = (await q.execute('query-version')) as {
              qemu: { major: number; minor: number; micro: number };
            };
            const status = (await q.execute('query-status')) as { status: string };
            const version = `${qemu.major}.${qemu.minor}.${qemu.micro}`;
            if (version !== runner.version) say(`its monitor answers ${version}, the ledger says ${runner.version}`);
            if (outcome !== 'failed' && outcome !== 'needs-operator' && status.status !== 'running') {
              say(`${outcome}, but ${status.status}`);
            }
          } finally {
            await q.close();
          }
        } catch (err) {
          // A source whose monitor hangs stays hung: the rollout must have said so.
          if (outcome !== 'failed' && outcome !== 'needs-operator') {
            say(`its monitor does not answer: ${(err as Error).message}`);
          }
        }
      },
    );
  }
  expect(violations).toEqual([]);

  // Never more than vmsPerHost migrations at once per host, per the ledger.
  const atOnce = hosts.map((host) => maxOverlap(migrationSpans(host)));
  for (const n of atOnce) expect(n).toBeLessThanOrEqual(AT_ONCE);
  expect(Math.max(...atOnce)).toBeGreaterThan(1);

  // Continue-as-new: several runs of the rollout and of each upgradeHost, each near the limit at most.
  const runsOf = async (workflowId: string) => {
    const lengths: number[] = [];
    for await (const w of client.workflow.list({ query: `WorkflowId = '${workflowId}'` }))
      lengths.push(w.historyLength);
    return lengths;
  };
  const rolloutRuns = await runsOf(handle.workflowId);
  expect(r.runs).toBeGreaterThanOrEqual(2);
  expect(rolloutRuns).toHaveLength(r.runs);
  expect(Math.max(...rolloutRuns)).toBeLessThan(HISTORY_LIMIT + HISTORY_SLACK);
  const hostRuns: number[][] = [];
  for (const host of r.hosts) {
    const lengths = await runsOf(host.workflowId!);
    hostRuns.push(lengths);
    expect(lengths.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...lengths)).toBeLessThan(HISTORY_LIMIT + HISTORY_SLACK);
  }

  const faultsByKind = new Map<string, number>();
  for (const f of faulty.values()) faultsByKind.set(f, (faultsByKind.get(f) ?? 0) + 1);
  process.stderr.write(
    `rollout-scale: ${VMS} VMs in ${rolloutSec.toFixed(1)} s (${(VMS / rolloutSec).toFixed(1)} VMs/s): ` +
      `${upgraded} upgraded, ${rolledBack} rolled back, ${failed} failed, ${needsOperator} need an operator; ` +
      `faults armed ` +
      `${[...faultsByKind].map(([k, n]) => `${k}×${n}`).join(' ')}; rollout runs ${rolloutRuns.length} ` +
      `(longest ${Math.max(...rolloutRuns)} events), upgradeHost runs ${hostRuns.map((x) => x.length).join('/')} ` +
      `(longest ${Math.max(...hostRuns.flat())}); most migrations at once per host ${atOnce.join('/')}\n`,
  );
});
