// The destination narrows the plan: upgradeVm on in-process simulated builds of the backend-transfer-list
// dialect, through a real dev server and a real host worker. The source build takes both of the dialect's
// backend kinds and reports a VM's tap and vhost-user backends as transferable, so the plan hands over both;
// the destination build takes vhost-user only (host config `transferableKinds`). Its own answer
// (query-backend-transfer-support) is narrower: the startAndMigrate activity returns `narrowed` without
// migrating, the workflow rolls that never-run destination back, decides again with the narrowed list and
// starts a second destination. The tap, no longer transferred, is handed over by the host worker (its fd
// taken from the source). The other way round (a destination taking taps only) cannot end upgraded on the
// simulator: the narrowed plan re-creates the vhost-user backend, and the destination's connect fails with
// EBUSY at the end of the load while the source still holds it. A narrowed plan the policy refuses ends
// `refused` with only the source left.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { simulatedInstances, simulatedQemuOf, stopSimulatedQemus } from '../../activities/host/sim-launcher';
import { launchVm } from '../../activities/host/vm-launch';
import { readVmRecord, type VmRecord } from '../../activities/host/vm-record';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { backendKey, backendOwner, readLedger, readLedgerEvents, runningIntervals } from '../../infra/simulator';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { counterOf, qmpOf } from '../helpers/real-upgrade';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(180_000);

const DIALECT = 'backend-transfer-list';
/** What the destination build takes: one of the dialect's two kinds. */
const DESTINATION_KINDS = ['vhost-user'] as const;

const tapPath = '/machine/peripheral/nic0/virtio-backend';
const vhostPath = '/machine/peripheral/nic1/virtio-backend';

/** The activity types the workflow scheduled, in order. */
async function scheduledActivities(handle: WorkflowHandle): Promise<string[]> {
  const { events } = await handle.fetchHistory();
  return (events ?? []).flatMap((e) => {
    const name = e.activityTaskScheduledEventAttributes?.activityType?.name;
    return name ? [name] : [];
  });
}

/**
 * Every in-process destination of a VM launched while `run` runs, in launch order: the registry is read every
 * millisecond, and a destination lives at least from its launch through the support query, the activity's
 * completion and the rollback's scheduling.
 */
async function watchDestinations<T>(
  vmId: string,
  run: () => Promise<T>,
): Promise<{ result: T; destinations: { handle: number; generation: number; instance: string }[] }> {
  const seen = new Map<number, { handle: number; generation: number; instance: string }>();
  const look = () => {
    for (const i of simulatedInstances()) {
      if (i.vmId === vmId && i.role === 'destination' && !seen.has(i.handle)) {
        seen.set(i.handle, { handle: i.handle, generation: i.generation, instance: i.vm.owner.instance });
      }
    }
  };
  const timer = setInterval(look, 1);
  try {
    const result = await run();
    look();
    return { result, destinations: [...seen.values()].sort((a, b) => a.handle - b.handle) };
  } finally {
    clearInterval(timer);
  }
}

describe('upgradeVm when the destination takes fewer backends than the source', () => {
  let harness: Harness;
  let tmp: TmpDir;
  let config: HostConfig;
  let ledger: string;

  beforeAll(async () => {
    tmp = makeTmpDir('snw');
    harness = await startHarness();
    ledger = path.join(tmp.path, 'ledger');
    mkdirSync(ledger, { recursive: true });
    config = parseHostConfig({
      hostId: 'sim-narrow',
      runtimeDir: path.join(tmp.path, 'rt'),
      binaries: {
        old: { simulator: { dialect: DIALECT, version: '10.0.50', stateDir: ledger } },
        narrow: {
          simulator: { dialect: DIALECT, version: '10.1.50', stateDir: ledger, transferableKinds: DESTINATION_KINDS },
        },
      },
    });
    await harness.startHost(config);
  });

  afterAll(async () => {
    await harness?.stop();
    await stopSimulatedQemus();
    tmp?.cleanup();
  });

  /** A VM on the old build with a tap (nic0) and a vhost-user backend (nic1). */
  async function launch(vmId: string): Promise<VmRecord> {
    const vhostSocket = path.join(tmp.path, `${vmId}.vhost`);
    writeFileSync(vhostSocket, ''); // the vhost-user server's socket: the simulator only checks it exists
    const spec = parseVmSpec({
      id: vmId,
      binary: 'old',
      machine: 'pc-i440fx-7.2',
      accel: 'tcg',
      memoryMiB: 64,
      netdevs: [
        { id: 'net0', type: 'tap', ifname: `nw-${vmId}` },
        { id: 'vu0', type: 'vhost-user', chardevPath: vhostSocket },
      ],
      devices: [
        { id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' },
        { id: 'nic1', driver: 'virtio-net-pci', netdev: 'vu0' },
      ],
    });
    return launchVm({ config, spec });
  }

  async function upgrade(vmId: string, policy: Partial<MigrationPolicy> = {}) {
    const handle = await harness.client.workflow.start('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `upgrade-vm/${config.hostId}/${vmId}`,
      args: [{ hostId: config.hostId, vmId, target: 'narrow', policy }],
    });
    return { handle, result: (await handle.result()) as UpgradeVmResult };
  }

  test('narrowed once: the first destination is rolled back, the second takes what it can', async () => {
    const before = await launch('v1');
    const sourceInstance = simulatedQemuOf(before.pid)!.owner.instance;
    // The source takes both kinds, and says so.
    expect(await qmpOf(before.qmpSocket, (q) => q.execute('query-backend-transfer-support'))).toEqual([
      { path: tapPath },
      { path: vhostPath },
    ]);
    const counterBefore = await counterOf(before.qmpSocket);

    const t0 = Date.now();
    const {
      result: { handle, result },
      destinations,
    } = await watchDestinations('v1', () => upgrade('v1'));
    console.log(`narrowed upgrade: ${Date.now() - t0} ms`);

    expect({ outcome: result.outcome, reason: result.reason }).toEqual({ outcome: 'upgraded', reason: undefined });
    expect(result.strategy).toBe('backend-transfer');
    expect(result.transferredBackends).toEqual([vhostPath]);
    expect(result.backends).toEqual([
      expect.objectContaining({ id: 'net0', mode: 'handover' }),
      expect.objectContaining({ id: 'vu0', mode: 'transfer' }),
    ]);
    expect(await scheduledActivities(handle)).toEqual([
      'inspectAndProbe',
      'startAndMigrate',
      'rollback',
      'startAndMigrate',
      'verifyAndFinalize',
    ]);

    // Two destinations of generation 2: the first is gone, the record names the second.
    expect(destinations.map((d) => d.generation)).toEqual([2, 2]);
    const first = destinations[0]!;
    const second = destinations[1]!;
    expect(isProcessAlive(first.handle)).toBe(false);
    expect(isProcessAlive(before.pid)).toBe(false);
    const after = (await readVmRecord(config.runtimeDir, 'v1'))!;
    expect(after).toMatchObject({ generation: 2, pid: second.handle, binary: { label: 'narrow' } });
    expect(isProcessAlive(after.pid, after.qmpSocket)).toBe(true);
    expect(
      simulatedInstances()
        .filter((i) => i.vmId === 'v1')
        .map((i) => i.handle),
    ).toEqual([second.handle]);

    // The simulator's side: the first destination never ran the guest and never held a backend; the second
    // owns both, the vhost-user connection from the stream and the tap by the fd the worker handed it.
    const events = readLedgerEvents(ledger).filter((e) => e.vm === 'v1');
    const ofFirst = events.filter((e) => e.instance === first.instance).map((e) => e.event);
    expect(ofFirst[0]).toBe('start');
    expect(ofFirst).not.toContain('backend-claim');
    expect(ofFirst).not.toContain('backend-transfer-in');
    const runs = runningIntervals(events).sort((a, b) => a.from - b.from);
    expect(runs.map((r) => r.instance)).toEqual([sourceInstance, second.instance]);
    expect(runs[1]!.from).toBeGreaterThanOrEqual(runs[0]!.to);
    const backends = readLedger(ledger).backends;
    expect(backends[backendKey('vhost-user', path.join(tmp.path, 'v1.vhost'))]).toMatchObject({
      owner: { instance: second.instance },
      via: 'transfer',
    });
    expect(backends[backendKey('tap', 'nw-v1')]).toMatchObject({ owner: { instance: second.instance }, via: 'fd' });
    expect(await counterOf(after.qmpSocket)).toBeGreaterThan(counterBefore);
  });

  test('a narrowed plan the policy refuses: refused after the rollback, the source untouched', async () => {
    const before = await launch('v2');
    const sourceInstance = simulatedQemuOf(before.pid)!.owner.instance;
    // With vhost-user excluded the plan hands over the tap alone: exactly what the destination cannot take.
    const {
      result: { handle, result },
      destinations,
    } = await watchDestinations('v2', () =>
      upgrade('v2', { excludeBackends: [vhostPath], requireBackendTransfer: true }),
    );

    expect(result.outcome).toBe('refused');
    expect(result.reason).toBe(
      'requireBackendTransfer cannot be met: backend-transfer: no backend is transferable on both sides after exclusions',
    );
    expect(await scheduledActivities(handle)).toEqual(['inspectAndProbe', 'startAndMigrate', 'rollback']);
    // Nothing moved, and the result does not speak of the first plan.
    expect(result.transferredBackends).toEqual([]);
    expect(result.strategy).toBeUndefined();
    expect(result.backends).toBeUndefined();

    // One destination was started and is gone; the source runs on, its record as it was, its backends its own.
    expect(destinations.map((d) => d.generation)).toEqual([2]);
    expect(isProcessAlive(destinations[0]!.handle)).toBe(false);
    expect(await readVmRecord(config.runtimeDir, 'v2')).toEqual(before);
    expect(isProcessAlive(before.pid, before.qmpSocket)).toBe(true);
    expect(
      simulatedInstances()
        .filter((i) => i.vmId === 'v2')
        .map((i) => i.handle),
    ).toEqual([before.pid]);
    expect(await qmpOf(before.qmpSocket, (q) => q.execute('query-status'))).toMatchObject({ status: 'running' });
    expect(backendOwner(ledger, backendKey('tap', 'nw-v2'))?.instance).toBe(sourceInstance);
    expect(backendOwner(ledger, backendKey('vhost-user', path.join(tmp.path, 'v2.vhost')))?.instance).toBe(
      sourceInstance,
    );
    const runs = runningIntervals(readLedgerEvents(ledger).filter((e) => e.vm === 'v2'));
    expect(runs).toEqual([expect.objectContaining({ instance: sourceInstance, to: Infinity })]);
  });
});
