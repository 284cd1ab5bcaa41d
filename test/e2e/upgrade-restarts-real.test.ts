// upgradeVm on real QEMU (7.2 → 10.0.2) while the Temporal side restarts under it: the orchestrator worker
// killed mid-migration (a new one started at once, or only after the switchover), and the dev server killed
// mid-migration and started again on its SQLite file and port. The orchestrator and the host worker are real
// separate processes (`bin/fleet-upgrade.js`, built into dist/). Each case ends with the VM upgraded, running
// in exactly one QEMU process that its record names, and the counter guest still counting.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { stringify } from 'yaml';
import { hostTaskQueue, parseHostConfig, type HostConfig } from '../../activities/host/config';
import { hostsQueue } from '../../workers/presence';
import { activityPollers } from '../../activities/fleet/task-queues';
import { socketPath } from '../../activities/host/paths';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { readVmRecord, type VmRecord } from '../../activities/host/vm-record';
import type { MigrationProgress } from '../../activities/upgrade/api';
import { resumeMarkerFile } from '../../activities/host/paths';
import { startDevServer, type DevServer } from '../../infra/devserver';
import { startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../../infra/worker-processes';
import { qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { connectClient } from '../../workers/temporal-connection';
import { killQemusUnder } from '../helpers/cleanup';
import { counterOf, launchCounterVm, qemuProcessesOf } from '../helpers/real-upgrade';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(150_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value other than undefined; fails with `what` at the deadline. */
async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not after ${timeoutMs} ms${last ? ` (last error: ${String(last)})` : ''}`);
    }
    await sleep(everyMs);
  }
}

/** The destination's pid once the saga has started it (its process file appears under run/). */
function waitForDestination(config: HostConfig, vmId: string, generation: number): Promise<number> {
  const file = path.join(config.runtimeDir, 'run', `${vmId}.${generation}.proc.json`);
  return until(
    `destination process file ${file}`,
    60_000,
    async () => JSON.parse(readFileSync(file, 'utf8')).pid as number,
    25,
  );
}

interface ActivityTimes {
  /**
   * When the migrate activity's last attempt started, and which attempt it was. Temporal writes a retried
   * activity's started event only when the attempt closes, so these come with the completion.
   */
  started?: number;
  attempt?: number;
  /** When its completion reached the server. */
  completed?: number;
}

/** The activities that migrate: `startAndMigrate` in the grouped shape, `migrate` before it. */
const migrationActivities = new Set(['migrate', 'startAndMigrate']);

/** What the workflow's history says of the migrate activity (read from the server, no worker involved). */
async function migrateActivity(handle: WorkflowHandle): Promise<ActivityTimes> {
  const history = await handle.fetchHistory();
  // Protobuf int64 fields arrive as Long objects: through their decimal text.
  const num = (x: unknown) => (x === null || x === undefined ? -1 : Number(String(x)));
  const ms = (t: { seconds?: unknown; nanos?: number | null } | null | undefined) =>
    t ? num(t.seconds) * 1000 + Math.round((t.nanos ?? 0) / 1e6) : undefined;
  let scheduled: number | undefined;
  const times: ActivityTimes = {};
  for (const e of history.events ?? []) {
    const id = num(e.eventId);
    const type = e.activityTaskScheduledEventAttributes?.activityType?.name;
    if (type && migrationActivities.has(type) && scheduled === undefined) {
      scheduled = id;
    }
    if (scheduled === undefined) continue;
    if (num(e.activityTaskStartedEventAttributes?.scheduledEventId) === scheduled) {
      times.started = ms(e.eventTime);
      times.attempt = e.activityTaskStartedEventAttributes?.attempt ?? undefined;
    }
    if (num(e.activityTaskCompletedEventAttributes?.scheduledEventId) === scheduled) {
      times.completed = ms(e.eventTime);
    }
  }
  return times;
}

/**
 * The migration's pace: the counter guest's RAM is zero pages, a few bytes each, so 0.05 MiB/s keeps a
 * 64 MiB VM migrating for seconds.
 */
const slow = 0.05; // MiB/s

describe('upgradeVm while Temporal restarts (real QEMU)', () => {
  let tmp: TmpDir;
  let server: DevServer;
  let client: Client;
  let config: HostConfig;
  let env: NodeJS.ProcessEnv;
  let host: WorkerProcess | undefined;
  const workers = new Set<WorkerProcess>();
  let n = 0;

  const logOf = (name: string) => path.join(tmp.path, `${name}.log`);
  const orchestrator = async () => {
    const w = await startWorkerProcess('orchestrator', ['orchestrator-worker'], env, logOf('orchestrator'), [], 90_000);
    workers.add(w);
    return w;
  };

  beforeAll(async () => {
    requireQemu(qemu72);
    requireQemu(qemu10);
    tmp = makeTmpDir('rst');
    config = parseHostConfig({
      hostId: 'host-r',
      runtimeDir: path.join(tmp.path, 'rt'),
      binaries: {
        '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
        '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
      },
    });
    server = await startDevServer({
      headless: true,
      searchAttributes: searchAttributeTypes,
      dbFile: path.join(tmp.path, 'temporal.db'),
    });
    client = new Client({
      connection: await connectClient({ address: server.address, namespace: server.namespace }),
      namespace: server.namespace,
    });
    env = { ...process.env, TEMPORAL_ADDRESS: server.address, TEMPORAL_NAMESPACE: server.namespace };
    const configFile = path.join(tmp.path, 'host.yaml');
    writeFileSync(
      configFile,
      stringify({
        hostId: config.hostId,
        runtimeDir: config.runtimeDir,
        binaries: config.binaries,
        temporal: { address: server.address, namespace: server.namespace },
      }),
    );
    host = await startWorkerProcess(
      'host worker',
      ['host-worker', '--config', configFile],
      env,
      logOf('host-worker'),
      [],
      90_000,
    );
  });

  afterAll(async () => {
    for (const w of workers) await stopWorkerProcess(w, 'SIGKILL');
    await stopWorkerProcess(host);
    await client?.connection.close().catch(() => undefined);
    await server?.stop();
    if (tmp) killQemusUnder(tmp.path);
    tmp?.cleanup();
  });

  afterEach(async () => {
    for (const w of workers) await stopWorkerProcess(w, 'SIGKILL');
    workers.clear();
  });

  function launch(memoryMiB = 64): Promise<VmRecord> {
    return launchCounterVm(config, tmp.path, `vm${++n}`, memoryMiB);
  }

  function start(vmId: string, policy: Partial<MigrationPolicy>) {
    return client.workflow.start('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `upgrade-vm/${config.hostId}/${vmId}`,
      args: [{ hostId: config.hostId, vmId, target: '10.0.2', policy }],
    });
  }

  /**
   * The QEMU migration is under way: the migrate activity runs on the host worker and has heartbeated a
   * progress that is not `completed` (it heartbeats only after issuing `migrate`). Asked of the server,
   * never of the source's monitor, which the activity holds.
   */
  async function waitForActiveMigration(handle: WorkflowHandle, vm: VmRecord): Promise<MigrationProgress> {
    await waitForDestination(config, vm.id, vm.generation + 1);
    return until(
      'migration in progress',
      60_000,
      async () => {
        const { raw } = await handle.describe();
        const pending = raw.pendingActivities?.find((a) => migrationActivities.has(a.activityType?.name ?? ''));
        const payload = pending?.heartbeatDetails?.payloads?.[0];
        if (pending?.state !== temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED || !payload) {
          return undefined;
        }
        const progress = defaultPayloadConverter.fromPayload<MigrationProgress>(payload);
        if (progress.status === 'completed') throw new Error('the migration completed before the fault');
        // Before QEMU migrates, the activity waits for a slot or starts the destination.
        return ['queued', 'starting-destination'].includes(progress.status) ? undefined : progress;
      },
      50,
    );
  }

  /** When the destination was resumed (the marker migrate writes just before its `cont`), if it was. */
  const resumedAt = (vm: VmRecord): number | undefined => {
    try {
      return statSync(resumeMarkerFile(config.runtimeDir, vm.id, vm.generation + 1)).mtimeMs;
    } catch {
      return undefined;
    }
  };

  /** The result, asked again while the server is unreachable. */
  async function resultOf(handle: WorkflowHandle): Promise<UpgradeVmResult> {
    return until('workflow result', 120_000, async () => (await handle.result()) as UpgradeVmResult, 500);
  }

  /** The invariants at the end: upgraded, one QEMU process, the record names it, the guest counts on. */
  async function expectUpgraded(vm: VmRecord, counted: number, result: UpgradeVmResult): Promise<VmRecord> {
    expect(result).toMatchObject({
      outcome: 'upgraded',
      from: { label: '7.2' },
      to: { label: '10.0.2', version: expect.stringMatching(/^10\.0\.2/) },
    });
    expect(result.migration).toBeDefined();
    const after = await readVmRecord(config.runtimeDir, vm.id);
    expect(after).toMatchObject({ generation: vm.generation + 1, binary: { label: '10.0.2' } });
    expect(qemuProcessesOf(config.runtimeDir, vm.id)).toEqual([after!.pid]);
    expect(isProcessAlive(vm.pid)).toBe(false);
    const a = await counterOf(after!.qmpSocket);
    expect(a).toBeGreaterThan(counted);
    await until('the counter rises on the destination', 10_000, async () =>
      (await counterOf(after!.qmpSocket)) > a ? true : undefined,
    );
    expect(host?.alive()).toBe(true);
    return after!;
  }

  test('the orchestrator worker is killed mid-migration and a new one started: the VM is upgraded', async () => {
    const first = await orchestrator();
    const vm = await launch();
    const counted = await counterOf(vm.qmpSocket);
    const handle = await start(vm.id, { bandwidthLimitMiBps: slow });
    const progress = await waitForActiveMigration(handle, vm);
    const killedAt = Date.now();
    first.child.kill('SIGKILL');
    await first.exited;
    await orchestrator();
    const result = await resultOf(handle);
    // The migration ran on past the orchestrator's death.
    const migrate = await migrateActivity(handle);
    expect(migrate.completed).toBeGreaterThan(killedAt);
    await expectUpgraded(vm, counted, result);
    console.log(
      `orchestrator killed mid-migration (${progress.status}, ${progress.transferredBytes} B sent), new one started: ` +
        `upgraded, migrate completed ${migrate.completed! - killedAt} ms after the kill; guest pause ` +
        `${result.migration?.guestPauseMs?.toFixed(1)} ms, QEMU downtime ${result.migration?.downtimeMs} ms`,
    );
  });

  test('the orchestrator worker is down through the switchover: the guest resumes without it, its pause stays short', async () => {
    const first = await orchestrator();
    const vm = await launch();
    const counted = await counterOf(vm.qmpSocket);
    const handle = await start(vm.id, { bandwidthLimitMiBps: slow });
    await waitForActiveMigration(handle, vm);
    const killedAt = Date.now();
    first.child.kill('SIGKILL');
    await first.exited;
    // The host worker migrates and switches over on its own; the server records the activity's completion.
    await until(
      'migrate completed without an orchestrator',
      60_000,
      async () => (await migrateActivity(handle)).completed,
    );
    expect(resumedAt(vm)).toBeGreaterThan(killedAt);
    // No activity runs now (nothing schedules one), so the destination's monitor is free: the guest runs there.
    const destinationQmp = socketPath(config.runtimeDir, vm.id, vm.generation + 1, 'qmp');
    const onDestination = await counterOf(destinationQmp);
    expect(onDestination).toBeGreaterThan(counted);
    await until('the guest counts on the destination, no orchestrator running', 10_000, async () =>
      (await counterOf(destinationQmp)) > onDestination ? true : undefined,
    );
    const downMs = Date.now() - killedAt;
    await orchestrator();
    const result = await resultOf(handle);
    await expectUpgraded(vm, onDestination, result);
    // The switchover did not wait for the orchestrator: the pause is QEMU's, not the seconds it was down.
    const pause = result.migration?.guestPauseMs;
    expect(pause).toEqual(expect.any(Number));
    expect(pause!).toBeLessThan(1_000);
    expect(pause!).toBeLessThan(downMs / 4);
    console.log(
      `orchestrator down ${downMs} ms through the switchover: upgraded; guest pause ${pause!.toFixed(1)} ms, ` +
        `QEMU downtime ${result.migration?.downtimeMs} ms, switchover gap ${result.migration?.switchoverGapMs?.toFixed(1)} ms`,
    );
  });

  /**
   * Kills the dev server (SIGKILL) while the migration is active and keeps it down until the host worker has
   * switched over with no server to report to (the resume marker precedes the destination's `cont`), then
   * `downAfterSwitchoverMs` more (and 4 s in all at least); then starts it again on the same SQLite file and
   * port. The migrate activity's heartbeats and its completion meet a dead server.
   */
  async function serverRestartedMidMigration(downAfterSwitchoverMs: number, expectRetry: boolean) {
    const orch = await orchestrator();
    const vm = await launch();
    const counted = await counterOf(vm.qmpSocket);
    const handle = await start(vm.id, { bandwidthLimitMiBps: slow });
    await waitForActiveMigration(handle, vm);
    const killedAt = Date.now();
    process.kill(server.pid, 'SIGKILL');
    const switchedAt = await until('the switchover, with the server down', 60_000, async () => resumedAt(vm), 50);
    expect(switchedAt).toBeGreaterThan(killedAt);
    await sleep(Math.max(downAfterSwitchoverMs, killedAt + 4_000 - Date.now(), 0));
    await server.restart();
    const upAt = Date.now();
    const result = await resultOf(handle);
    const migrate = await migrateActivity(handle);
    // Recorded by the restarted server: the switchover happened while it was down.
    expect(migrate.completed).toBeGreaterThan(switchedAt);
    await expectUpgraded(vm, counted, result);
    expect(orch.alive()).toBe(true);
    // The host worker polls both its queues again: its own, and the presence queue `fleet-upgrade hosts` and
    // the rollout preflight read (the restarted server knows only the polls made since it came back).
    const identity = `host-worker/${config.hostId}/${host!.child.pid}`;
    const queues = [hostTaskQueue(config), hostsQueue];
    await until(
      'the host worker polls its queues again',
      60_000,
      async () => {
        const pollers = await activityPollers(client.workflowService, server.namespace, queues);
        return queues.every((q) => pollers[q]?.some((p) => p.identity === identity)) ? true : undefined;
      },
      500,
    );
    const m = result.migration!;
    // The SDK retries the completion for a few seconds, then drops it ("Network error while completing
    // activity" in the host worker's log): the restarted server retries the activity on its heartbeat timeout.
    if (expectRetry) expect(migrate.attempt).toBeGreaterThan(1);
    // A retried attempt finds the switchover done and says so; the pause it did not watch, QEMU measured.
    expect(m.reconciled).toBe(migrate.attempt! > 1);
    expect(m.guestPauseMs ?? m.downtimeMs).toEqual(expect.any(Number));
    expect(m.guestPauseMs ?? m.downtimeMs!).toBeLessThan(1_000);
    console.log(
      `dev server SIGKILLed mid-migration, down ${upAt - killedAt} ms (switchover ${Math.round(switchedAt - killedAt)} ms ` +
        `after the kill): upgraded; migrate attempt ${migrate.attempt}, reconciled ${m.reconciled}; ` +
        `guest pause ${m.guestPauseMs?.toFixed(1) ?? 'not watched'} ms, QEMU downtime ${m.downtimeMs} ms`,
    );
  }

  test('the dev server is killed mid-migration and restarted on its SQLite file after the switchover: the workers reconnect, the VM is upgraded', () =>
    serverRestartedMidMigration(0, false));

  test('the dev server stays down past the migrate activity’s completion retries and heartbeat timeout: the retry reconciles, the VM is upgraded', () =>
    serverRestartedMidMigration(20_000, true));
});
