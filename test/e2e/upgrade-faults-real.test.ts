// upgradeVm under real faults, on real QEMU through a real dev server: a destination that crashes
// mid-migration, a migration whose progress stalls, a source whose monitor stops answering, and a host worker
// killed mid-migration and restarted.
// Each ends with the VM running in exactly one process and the workflow's result saying what happened.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { readVmRecord, type VmRecord } from '../../activities/host/vm-record';
import { projectRoot, qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { killQemusUnder } from '../helpers/cleanup';
import { fleetUpgrade } from '../helpers/cli';
import { counterOf, launchCounterVm, qmpOf, qemuProcessesOf } from '../helpers/real-upgrade';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(240_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The destination's pid once the saga has started it (its process file appears under run/). */
async function waitForDestination(config: HostConfig, vmId: string, generation: number): Promise<number> {
  const file = path.join(config.runtimeDir, 'run', `${vmId}.${generation}.proc.json`);
  for (let i = 0; i < 400; i++) {
    try {
      return JSON.parse(require('node:fs').readFileSync(file, 'utf8')).pid as number;
    } catch {
      await sleep(25);
    }
  }
  throw new Error(`no destination process file ${file}`);
}

/**
 * Lets the migration get going. The source's monitor is held by the migrate activity (a QEMU monitor
 * serves one client at a time), so the test does not ask it; the bandwidth limit keeps the migration
 * active for seconds (the counter guest's RAM is zero pages, a few bytes each).
 */
const waitForActiveMigration = () => sleep(700);

const slow = 0.05; // MiB/s

describe('upgradeVm under faults (real QEMU)', () => {
  let harness: Harness;
  let tmp: TmpDir;
  let config: HostConfig;
  let configFile: string;
  let n = 0;

  beforeAll(async () => {
    requireQemu(qemu72);
    requireQemu(qemu10);
    tmp = makeTmpDir('flt');
    config = parseHostConfig({
      hostId: 'host-f',
      runtimeDir: path.join(tmp.path, 'rt'),
      binaries: {
        '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
        '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
      },
    });
    harness = await startHarness();
    configFile = path.join(tmp.path, 'host.yaml');
    writeFileSync(
      configFile,
      stringify({
        hostId: config.hostId,
        runtimeDir: config.runtimeDir,
        binaries: config.binaries,
        temporal: { address: harness.server.address, namespace: harness.server.namespace },
      }),
    );
  });

  afterAll(async () => {
    // Host workers a test left running (it timed out before its finally): they would keep Jest alive.
    for (const w of spawnedWorkers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await harness?.stop();
    if (tmp) killQemusUnder(tmp.path);
    tmp?.cleanup();
  });

  /** `fleet-upgrade host-worker` processes the tests started, each registered for afterAll. */
  const spawnedWorkers: ChildProcess[] = [];

  function hostWorkerProcess(env: NodeJS.ProcessEnv): ChildProcess {
    const cli = path.join(projectRoot, 'bin', 'fleet-upgrade.js');
    const child = spawn(process.execPath, [cli, 'host-worker', '--config', configFile], { env, stdio: 'ignore' });
    spawnedWorkers.push(child);
    return child;
  }

  function launch(memoryMiB = 64): Promise<VmRecord> {
    return launchCounterVm(config, tmp.path, `vm${++n}`, memoryMiB);
  }

  function start(vmId: string, policy: Partial<MigrationPolicy>) {
    return harness.client.workflow.start('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `upgrade-vm/${config.hostId}/${vmId}`,
      args: [{ hostId: config.hostId, vmId, target: '10.0.2', policy }],
    });
  }

  async function expectStillOnSource(before: VmRecord): Promise<void> {
    const record = await readVmRecord(config.runtimeDir, before.id);
    expect(record).toMatchObject({ generation: before.generation, pid: before.pid, binary: { label: '7.2' } });
    expect(qemuProcessesOf(config.runtimeDir, before.id)).toEqual([before.pid]);
    const status = await qmpOf(before.qmpSocket, (q) => q.execute('query-status'));
    expect(status).toMatchObject({ status: 'running', running: true });
    const a = await counterOf(before.qmpSocket);
    await sleep(200);
    expect(await counterOf(before.qmpSocket)).toBeGreaterThan(a);
  }

  test('the destination crashes mid-migration: rolled back, the source keeps running', async () => {
    await harness.startHost(config);
    const vm = await launch();
    const handle = await start(vm.id, { bandwidthLimitMiBps: slow });
    const destination = await waitForDestination(config, vm.id, vm.generation + 1);
    await waitForActiveMigration();
    process.kill(destination, 'SIGKILL');
    const result = (await handle.result()) as UpgradeVmResult;
    expect(result.outcome).toBe('rolled-back');
    expect(result.reason).toMatch(/destination|failed/i);
    expect(result.rollback?.runningIn).toEqual({ generation: vm.generation, label: '7.2' });
    await expectStillOnSource(vm);
  });

  test('progress stalls (destination frozen): cancelled after the progress timeout, rolled back', async () => {
    const vm = await launch();
    const handle = await start(vm.id, { bandwidthLimitMiBps: slow, progressTimeoutSec: 2 });
    const destination = await waitForDestination(config, vm.id, vm.generation + 1);
    await waitForActiveMigration();
    process.kill(destination, 'SIGSTOP');
    const result = (await handle.result()) as UpgradeVmResult;
    expect(result.outcome).toBe('rolled-back');
    expect(result.reason).toMatch(/no progress for 2 s/);
    expect(result.rollback?.actions.join('; ')).toMatch(/killed the destination/);
    await expectStillOnSource(vm);
    await harness.stopHost(config.hostId);
  });

  test('the source stops answering mid-migration (SIGSTOP): left to an operator, who resumes it with vm resolve', async () => {
    // Short QMP timeouts keep the two silences (the migration's, the rollback's) to seconds.
    await harness.startHost({ ...config, limits: { ...config.limits, qmpTimeoutMs: 2_000 } });
    const vm = await launch();
    let stopped = false;
    try {
      const handle = await start(vm.id, { bandwidthLimitMiBps: slow });
      const destination = await waitForDestination(config, vm.id, vm.generation + 1);
      await waitForActiveMigration();
      process.kill(vm.pid, 'SIGSTOP');
      stopped = true;
      const result = (await handle.result()) as UpgradeVmResult;
      expect(result.outcome).toBe('needs-operator');
      expect(result.reason).toMatch(/no answer to .* within 2000 ms/);
      expect(result.reason).toMatch(/did not answer its monitor twice.*the destination never ran and was removed/);
      expect(result.reason).toMatch(new RegExp(`Kept generation ${vm.generation} \\(QEMU 7\\.2, pid ${vm.pid}\\)`));
      // The destination never ran and is gone; the source is kept, named in the record for the operator.
      expect(qemuProcessesOf(config.runtimeDir, vm.id)).toEqual([vm.pid]);
      expect(() => process.kill(destination, 0)).toThrow();
      const record = await readVmRecord(config.runtimeDir, vm.id);
      expect(record).toMatchObject({ generation: vm.generation, pid: vm.pid });
      expect(record?.attention?.processes.map((p) => p.pid)).toEqual([vm.pid]);

      // Its monitor answers again; the operator keeps it, and it is an ordinary VM again.
      process.kill(vm.pid, 'SIGCONT');
      stopped = false;
      const cli = fleetUpgrade(
        'vm',
        'resolve',
        '--config',
        configFile,
        '--vm',
        vm.id,
        '--keep',
        String(vm.generation),
        '--resume',
      );
      expect({ status: cli.status, stderr: cli.stderr }).toEqual({ status: 0, stderr: expect.any(String) });
      expect((await readVmRecord(config.runtimeDir, vm.id))?.attention).toBeUndefined();
      await expectStillOnSource(vm);
    } finally {
      if (stopped) process.kill(vm.pid, 'SIGCONT');
      await harness.stopHost(config.hostId);
    }
  });

  test('a capability left on the source by an earlier migration does not carry over: copied RAM is sent', async () => {
    await harness.startHost(config);
    try {
      const vm = await launch();
      // As an earlier attempt with shared RAM would have left it: capabilities outlive a migration in QEMU.
      await qmpOf(vm.qmpSocket, (q) =>
        q.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }),
      );
      const before = await counterOf(vm.qmpSocket);
      const result = (await (await start(vm.id, {})).result()) as UpgradeVmResult;
      expect({ outcome: result.outcome, reason: result.reason, ram: result.ram }).toEqual({
        outcome: 'upgraded',
        reason: undefined,
        ram: 'copied',
      });
      const after = await readVmRecord(config.runtimeDir, vm.id);
      expect(after).toMatchObject({ generation: vm.generation + 1, binary: { label: '10.0.2' } });
      // The guest's RAM arrived: its counter goes on from where it was.
      expect(await counterOf(after!.qmpSocket)).toBeGreaterThanOrEqual(before);
    } finally {
      await harness.stopHost(config.hostId);
    }
  });

  test('the host worker is killed mid-migration and restarted: the retry continues, the VM is upgraded', async () => {
    const vm = await launch();
    const env = { ...process.env, TEMPORAL_ADDRESS: harness.server.address };
    const worker = (): ChildProcess => hostWorkerProcess(env);
    let first: ChildProcess | undefined = worker();
    let second: ChildProcess | undefined;
    try {
      const handle = await start(vm.id, { bandwidthLimitMiBps: slow });
      await waitForDestination(config, vm.id, vm.generation + 1);
      await waitForActiveMigration();
      first.kill('SIGKILL');
      first = undefined;
      second = worker();
      const result = (await handle.result()) as UpgradeVmResult;
      expect(result.outcome).toBe('upgraded');
      expect(result.migration?.reconciled).toBe(true);
      const after = await readVmRecord(config.runtimeDir, vm.id);
      expect(after).toMatchObject({ generation: vm.generation + 1, binary: { label: '10.0.2' } });
      expect(qemuProcessesOf(config.runtimeDir, vm.id)).toEqual([after!.pid]);
      const a = await counterOf(after!.qmpSocket);
      await sleep(200);
      expect(await counterOf(after!.qmpSocket)).toBeGreaterThan(a);
    } finally {
      first?.kill('SIGKILL');
      second?.kill('SIGTERM');
    }
  });

  test('the host worker is stopped (SIGTERM) mid-migration: the migration finishes before the worker exits', async () => {
    const vm = await launch();
    const env = { ...process.env, TEMPORAL_ADDRESS: harness.server.address };
    const worker = (): ChildProcess => hostWorkerProcess(env);
    let first: ChildProcess | undefined = worker();
    let second: ChildProcess | undefined;
    try {
      const handle = await start(vm.id, { bandwidthLimitMiBps: slow });
      await waitForDestination(config, vm.id, vm.generation + 1);
      await waitForActiveMigration();
      const exited = new Promise<void>((r) => first!.once('exit', () => r()));
      first.kill('SIGTERM');
      await exited;
      first = undefined;
      // The stopping worker took no new task but let its migration run to the switchover: the destination
      // runs the guest already, before any worker is back.
      const dst = path.join(config.runtimeDir, 'run', `${vm.id}.${vm.generation + 1}.qmp`);
      expect(await qmpOf(dst, (q) => q.execute('query-status'))).toMatchObject({ status: 'running' });
      second = worker();
      const result = (await handle.result()) as UpgradeVmResult;
      expect(result.outcome).toBe('upgraded');
      expect(result.migration?.reconciled).toBe(false);
      const after = await readVmRecord(config.runtimeDir, vm.id);
      expect(qemuProcessesOf(config.runtimeDir, vm.id)).toEqual([after!.pid]);
    } finally {
      first?.kill('SIGKILL');
      second?.kill('SIGTERM');
    }
  });
});
