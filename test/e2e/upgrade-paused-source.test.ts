// A paused VM is not upgraded behind the operator's back: upgradeVm refuses it (the switchover would resume
// the guest on the destination, a rollback would resume the source), touching nothing; once resumed, the
// same VM upgrades. On an in-process simulated host through a real dev server and host worker.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseHostConfig } from '../../activities/host/config';
import { simulatedInstances, stopSimulatedQemus } from '../../activities/host/sim-launcher';
import { launchAtStart } from '../../activities/host/vm-launch';
import { readVmRecord } from '../../activities/host/vm-record';
import { readLedgerEvents } from '../../infra/simulator';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { qmpOf } from '../helpers/real-upgrade';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(120_000);

let harness: Harness;
let tmp: TmpDir;

afterAll(async () => {
  await harness?.stop();
  await stopSimulatedQemus();
  tmp?.cleanup();
});

test('a paused source is refused with nothing touched; resumed, it upgrades', async () => {
  tmp = makeTmpDir('pau');
  const ledger = path.join(tmp.path, 'ledger');
  mkdirSync(ledger, { recursive: true });
  const simulator = (version: string) => ({ simulator: { dialect: 'local', version, stateDir: ledger } });
  const config = parseHostConfig({
    hostId: 'paused-host',
    runtimeDir: path.join(tmp.path, 'rt'),
    binaries: { old: simulator('10.0.50'), new: simulator('10.1.50') },
    launchAtStart: [{ id: 'vm1', binary: 'old', machine: 'pc-i440fx-7.2', accel: 'tcg', memoryMiB: 16 }],
  });
  harness = await startHarness();
  await harness.startHost(config);
  await launchAtStart(config);
  const before = (await readVmRecord(config.runtimeDir, 'vm1'))!;
  await qmpOf(before.qmpSocket, (q) => q.execute('stop'));

  const upgrade = (run: number) =>
    harness.client.workflow.execute('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `upgrade-vm/paused-host/vm1/${run}`,
      args: [{ hostId: 'paused-host', vmId: 'vm1', target: 'new' }],
    }) as Promise<UpgradeVmResult>;

  const refused = await upgrade(1);
  expect(refused.outcome).toBe('refused');
  expect(refused.reason).toMatch(/^source QEMU of vm1 is paused: upgrading would resume it/);
  // Nothing touched: the same record, the same single instance, still paused; no destination was started.
  expect(await readVmRecord(config.runtimeDir, 'vm1')).toEqual(before);
  expect(simulatedInstances().map((i) => i.handle)).toEqual([before.pid]);
  expect(await qmpOf(before.qmpSocket, (q) => q.execute('query-status'))).toMatchObject({ status: 'paused' });
  expect(readLedgerEvents(ledger).filter((e) => e.event === 'start')).toHaveLength(1);

  await qmpOf(before.qmpSocket, (q) => q.execute('cont'));
  const upgraded = await upgrade(2);
  expect(upgraded.outcome).toBe('upgraded');
  const after = (await readVmRecord(config.runtimeDir, 'vm1'))!;
  expect(after).toMatchObject({ generation: 2, binary: { label: 'new' } });
  expect(await qmpOf(after.qmpSocket, (q) => q.execute('query-status'))).toMatchObject({ status: 'running' });
});
