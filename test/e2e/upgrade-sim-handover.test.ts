// Handover on in-process simulated hosts, as the host worker does it on real released QEMU: `none`-dialect
// VMs with a tap, upgraded 7.2 → 10.1 (simulated) through upgradeVm on a real dev server and host worker.
// The worker takes the source's tap fd and RAM from the simulator (fd-handover's simulated access), the
// destination inherits the tap as `-netdev tap,fd=3` and maps the source's RAM through /proc, x-ignore-shared
// on both sides. The simulator's ledger shows the tap held by both, then owned by the destination alone; the
// stream carries the same bytes for 64 MiB and 16 GiB of guest RAM.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { simulatedQemuOf, stopSimulatedQemus } from '../../activities/host/sim-launcher';
import { launchAtStart } from '../../activities/host/vm-launch';
import { listVmRecords } from '../../activities/host/vm-record';
import { backendKey, readLedger, readLedgerEvents, runningIntervals } from '../../infra/simulator';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { counterOf } from '../helpers/real-upgrade';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(180_000);

const VMS = [
  { id: 'small', memoryMiB: 64 },
  { id: 'large', memoryMiB: 16 * 1024 },
];

describe('handover of taps and RAM on in-process simulated hosts', () => {
  let harness: Harness;
  let tmp: TmpDir;
  let config: HostConfig;
  let ledger: string;

  beforeAll(async () => {
    tmp = makeTmpDir('sho');
    harness = await startHarness();
    ledger = path.join(tmp.path, 'ledger');
    mkdirSync(ledger, { recursive: true });
    const simulator = (version: string) => ({ simulator: { dialect: 'none', version, stateDir: ledger } });
    config = parseHostConfig({
      hostId: 'sim-handover',
      runtimeDir: path.join(tmp.path, 'rt'),
      binaries: { 'sim-7.2': simulator('7.2.50'), 'sim-10.1': simulator('10.1.50') },
      launchAtStart: VMS.map((v) => ({
        id: v.id,
        binary: 'sim-7.2',
        machine: 'pc-i440fx-7.2',
        accel: 'tcg',
        memoryMiB: v.memoryMiB,
        netdevs: [{ id: 'net0', type: 'tap', ifname: `ho-${v.id}` }],
        devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
      })),
    });
    await harness.startHost(config);
  });

  afterAll(async () => {
    await harness?.stop();
    await stopSimulatedQemus();
    tmp?.cleanup();
  });

  test('the tap and the RAM are handed over; the stream is the same for 64 MiB and 16 GiB', async () => {
    expect(await launchAtStart(config)).toEqual({ launched: VMS.length, alreadyRunning: 0 });
    const before = new Map<string, { pid: number; counter: number; instance: string }>();
    for (const r of await listVmRecords(config.runtimeDir)) {
      before.set(r.id, {
        pid: r.pid,
        counter: await counterOf(r.qmpSocket),
        instance: simulatedQemuOf(r.pid)!.owner.instance,
      });
    }

    const results: Record<string, UpgradeVmResult> = {};
    for (const v of VMS) {
      results[v.id] = (await harness.client.workflow.execute('upgradeVm', {
        taskQueue: orchestratorTaskQueue,
        workflowId: `upgrade-vm/${config.hostId}/${v.id}`,
        args: [{ hostId: config.hostId, vmId: v.id, target: 'sim-10.1' }],
      })) as UpgradeVmResult;
    }

    const events = readLedgerEvents(ledger);
    const records = new Map((await listVmRecords(config.runtimeDir)).map((r) => [r.id, r]));
    for (const v of VMS) {
      const r = results[v.id]!;
      expect({ outcome: r.outcome, reason: r.reason }).toEqual({ outcome: 'upgraded', reason: undefined });
      expect(r.strategy).toBe('plain');
      expect(r.backends).toEqual([expect.objectContaining({ id: 'net0', mode: 'handover' })]);
      expect(r.ram).toBe('shared');

      const record = records.get(v.id)!;
      const was = before.get(v.id)!;
      expect(record).toMatchObject({ generation: 2, binary: { label: 'sim-10.1' } });
      expect(isProcessAlive(was.pid)).toBe(false);
      const dst = simulatedQemuOf(record.pid)!;
      // The destination runs on the source's own tap fd and RAM.
      expect(dst.cfg.netdevs[0]).toMatchObject({ id: 'net0', opts: { fd: '3' } });
      expect(dst.ram).toMatchObject({ id: `memfd:${was.instance}:pc.ram`, bytes: v.memoryMiB * 2 ** 20 });

      // Ledger: the tap was held by both, then owned by the destination alone once the source quit.
      const key = backendKey('tap', `ho-${v.id}`);
      expect(readLedger(ledger).backends[key]).toMatchObject({
        owner: { instance: dst.owner.instance },
        via: 'fd',
        alive: true,
      });
      expect(readLedger(ledger).backends[key]?.holders).toBeUndefined();
      const tapEvents = events.filter((e) => e.backend === key).map((e) => [e.event, e.instance]);
      expect(tapEvents).toEqual([
        ['backend-claim', was.instance],
        ['backend-hold', dst.owner.instance],
        ['backend-release', was.instance],
      ]);
      expect(events.filter((e) => e.event === 'ram-overwritten')).toEqual([]);
      // One instance ran the guest at a time, and it kept counting.
      const runs = runningIntervals(events.filter((e) => e.vm === v.id)).sort((a, b) => a.from - b.from);
      for (let k = 1; k < runs.length; k++) expect(runs[k]!.from).toBeGreaterThanOrEqual(runs[k - 1]!.to);
      expect(runs.at(-1)).toMatchObject({ instance: dst.owner.instance, to: Infinity });
      expect(await counterOf(record.qmpSocket)).toBeGreaterThan(was.counter);
    }

    const small = results.small!.migration!;
    const large = results.large!.migration!;
    console.log(
      `streamed: 64 MiB guest ${small.transferredBytes} B in ${small.totalTimeMs} ms; ` +
        `16 GiB guest ${large.transferredBytes} B in ${large.totalTimeMs} ms`,
    );
    expect(large.transferredBytes).toBe(small.transferredBytes);
    expect(large.transferredBytes).toBeLessThan(1024 * 1024);
    // Copied at the simulator's 2000 Mbit/s, 16 GiB would take over a minute.
    expect(large.totalTimeMs).toBeLessThan(5_000);
  });
});
