// Fleet scale in one process: two hosts whose binaries are in-process simulators (host config `simulator`
// entries), 25 VMs each launched by launchAtStart inside this process, all 50 upgraded at once through
// upgradeVm on a real dev server and real host workers. Every VM is accounted for afterwards (one live
// instance each, the one its record names, nothing left over), each ran in exactly one instance at a time
// (the simulator's ledger), its tap moved to the new instance, and its guest kept counting.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { simulatedInstances, simulatedQemuOf, stopSimulatedQemus } from '../../activities/host/sim-launcher';
import { launchAtStart } from '../../activities/host/vm-launch';
import { listVmRecords, type VmRecord } from '../../activities/host/vm-record';
import { QmpClient } from '../../activities/qmp/client';
import { backendKey, backendOwner, readLedgerEvents, runningIntervals } from '../../infra/simulator';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { parseCounter } from '../../infra/guest/counter-guest';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(300_000);

const HOSTS = 2;
const VMS_PER_HOST = 25;

async function counterOf(qmpSocket: string): Promise<number> {
  const q = await QmpClient.connect(qmpSocket);
  try {
    return parseCounter(String(await q.execute('human-monitor-command', { 'command-line': 'x /1wx 0x7e00' })));
  } finally {
    await q.close();
  }
}

describe('upgradeVm at fleet scale on in-process simulated hosts', () => {
  let harness: Harness;
  let tmp: TmpDir;
  const hosts: { config: HostConfig; ledger: string }[] = [];

  beforeAll(async () => {
    tmp = makeTmpDir('sip');
    harness = await startHarness();
    for (let h = 0; h < HOSTS; h++) {
      const ledger = path.join(tmp.path, `h${h}`, 'ledger');
      mkdirSync(ledger, { recursive: true });
      const simulator = (version: string) => ({ simulator: { dialect: 'local', version, stateDir: ledger } });
      const config = parseHostConfig({
        hostId: `sim-ip-${h}`,
        runtimeDir: path.join(tmp.path, `h${h}`, 'rt'),
        binaries: { 'sim-old': simulator('10.0.50'), 'sim-new': simulator('10.1.50') },
        limits: { maxConcurrentMigrations: 4 },
        launchAtStart: Array.from({ length: VMS_PER_HOST }, (_, v) => ({
          id: `vm${v}`,
          binary: 'sim-old',
          machine: 'pc-i440fx-7.2',
          accel: 'tcg',
          memoryMiB: 16,
          netdevs: [{ id: 'net0', type: 'tap', ifname: `ip${h}t${v}` }],
          devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
        })),
      });
      hosts.push({ config, ledger });
      await harness.startHost(config);
    }
  });

  afterAll(async () => {
    await harness?.stop();
    await stopSimulatedQemus();
    tmp?.cleanup();
  });

  test(`${HOSTS} hosts × ${VMS_PER_HOST} VMs upgraded at once; every VM accounted for, one instance at a time`, async () => {
    const before = new Map<string, { record: VmRecord; counter: number }>();
    for (const { config } of hosts) {
      expect(await launchAtStart(config)).toEqual({ launched: VMS_PER_HOST, alreadyRunning: 0 });
      for (const record of await listVmRecords(config.runtimeDir)) {
        before.set(`${config.hostId}/${record.id}`, { record, counter: await counterOf(record.qmpSocket) });
      }
    }
    expect(before.size).toBe(HOSTS * VMS_PER_HOST);
    expect(simulatedInstances()).toHaveLength(HOSTS * VMS_PER_HOST);

    const started = Date.now();
    const results = await Promise.all(
      [...before.keys()].map(async (key) => {
        const [hostId, vmId] = key.split('/') as [string, string];
        return (await harness.client.workflow.execute('upgradeVm', {
          taskQueue: orchestratorTaskQueue,
          workflowId: `upgrade-vm/${hostId}/${vmId}`,
          args: [{ hostId, vmId, target: 'sim-new' }],
        })) as UpgradeVmResult;
      }),
    );
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `${results.length} VMs upgraded in ${seconds.toFixed(1)} s (${(results.length / seconds).toFixed(1)}/s)`,
    );

    for (const r of results) {
      expect({ vm: `${r.hostId}/${r.vmId}`, outcome: r.outcome, reason: r.reason }).toEqual({
        vm: `${r.hostId}/${r.vmId}`,
        outcome: 'upgraded',
        reason: undefined,
      });
      expect(r.strategy).toBe('backend-transfer');
      expect(r.transferredBackends).toEqual(['net0']);
    }

    // Every VM accounted for: its record names the new instance, alive; the old one is gone; nothing else lives.
    const live = new Set(simulatedInstances().map((i) => i.handle));
    const named = new Set<number>();
    for (const [h, { config, ledger }] of hosts.entries()) {
      const events = readLedgerEvents(ledger);
      for (const record of await listVmRecords(config.runtimeDir)) {
        const was = before.get(`${config.hostId}/${record.id}`)!;
        expect(record).toMatchObject({ generation: 2, binary: { label: 'sim-new' } });
        expect(isProcessAlive(record.pid, record.qmpSocket)).toBe(true);
        expect(isProcessAlive(was.record.pid)).toBe(false);
        named.add(record.pid);
        const instance = simulatedQemuOf(record.pid)!.owner.instance;
        // The tap was handed over to the new instance, which is its only owner.
        const v = Number(record.id.slice(2));
        expect(backendOwner(ledger, backendKey('tap', `ip${h}t${v}`))?.instance).toBe(instance);
        // Exactly one instance at a time ran the guest, and it runs in the new one now.
        const intervals = runningIntervals(events.filter((e) => e.vm === record.id)).sort((a, b) => a.from - b.from);
        expect(new Set(intervals.map((i) => i.instance)).size).toBe(2);
        for (let k = 1; k < intervals.length; k++) {
          expect(intervals[k]!.from).toBeGreaterThanOrEqual(intervals[k - 1]!.to);
        }
        expect(intervals.at(-1)).toMatchObject({ instance, to: Infinity });
        // The guest kept its state across the move.
        expect(await counterOf(record.qmpSocket)).toBeGreaterThan(was.counter);
      }
    }
    expect(named.size).toBe(HOSTS * VMS_PER_HOST);
    expect(live).toEqual(named);
  });
});
