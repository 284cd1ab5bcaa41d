// Real VMs as people run them, upgraded through a real dev server and a real host worker: a Linux guest
// with a virtio-net NIC on a tap (on a bridge, in a network namespace of the test's own) and a qcow2 data
// disk it writes to all along, 7.2 → 10.0.2 and back. The host worker hands the tap and the guest RAM
// over from the live source process; the host pings the guest every 10 ms throughout.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { tapFdsOf } from '../../activities/host/fd-handover';
import { isProcessAlive, killQemu } from '../../activities/host/qemu-launcher';
import { readVmRecord } from '../../activities/host/vm-record';
import { launchVm } from '../../activities/host/vm-launch';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import { guestImage, guestKernelArgs, lostDiskWrites, parseConsole } from '../../infra/guest/linux-guest';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { killQemusUnder } from '../helpers/cleanup';
import { createTestNetwork, startPinger, type TestNetwork } from '../helpers/netns';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(300_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const repoRoot = path.resolve(__dirname, '../..');

describe('a real Linux guest with a tap NIC and a qcow2 disk on real QEMU', () => {
  let harness: Harness;
  let tmp: TmpDir;
  let net: TestNetwork;
  let config: HostConfig;

  beforeAll(async () => {
    requireQemu(qemu72);
    requireQemu(qemu10);
    guestImage(repoRoot);
    tmp = makeTmpDir('rvm');
    net = createTestNetwork(`fu-rvm-${process.pid}`);
    config = parseHostConfig({
      hostId: 'host-r',
      runtimeDir: path.join(tmp.path, 'rt'),
      netns: net.ns,
      binaries: {
        '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
        '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
      },
    });
    harness = await startHarness();
    await harness.startHost(config);
  });

  afterAll(async () => {
    await harness?.stop();
    if (tmp) killQemusUnder(tmp.path);
    net?.remove();
    tmp?.cleanup();
  });

  async function upgrade(
    vmId: string,
    target: string,
    runId: string,
    policy: Partial<MigrationPolicy> = {},
  ): Promise<UpgradeVmResult> {
    return (await harness.client.workflow.execute('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `upgrade-vm/${config.hostId}/${vmId}/${runId}`,
      args: [{ hostId: config.hostId, vmId, target, policy }],
    })) as UpgradeVmResult;
  }

  async function waitForConsole(file: string, ok: (c: ReturnType<typeof parseConsole>) => boolean, ms: number) {
    const until = Date.now() + ms;
    for (;;) {
      let text = '';
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        /* not written yet */
      }
      const c = parseConsole(text);
      if (ok(c)) return c;
      if (Date.now() > until)
        throw new Error(`guest console ${file} did not get there in ${ms} ms:\n${text.slice(-2000)}`);
      await sleep(200);
    }
  }

  test('7.2 → 10.0.2 → 7.2: tap and RAM handed over, pings answered throughout, no disk write lost', async () => {
    const { kernel, initrd } = guestImage(repoRoot);
    const disk = path.join(tmp.path, 'data.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
    net.addTap('futap0');
    const serialLog = path.join(tmp.path, 'console.log');
    const spec = parseVmSpec({
      id: 'vm1',
      binary: '7.2',
      machine: 'pc-i440fx-7.2',
      accel: 'tcg',
      memoryMiB: 256,
      kernel,
      initrd,
      append: guestKernelArgs({ ip: '10.77.0.2/24', disk: '/dev/vda' }),
      serialLog,
      drives: [{ id: 'data', file: disk, format: 'qcow2', interface: 'virtio' }],
      netdevs: [{ id: 'net0', type: 'tap', ifname: 'futap0' }],
      devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
    });
    const first = await launchVm({ config, spec });
    await waitForConsole(serialLog, (c) => c.ready && c.lastWrite > 0, 120_000);
    net.exec('ping', ['-c', '1', '-W', '5', '10.77.0.2']);

    const pinger = startPinger(net.ns, '10.77.0.2', 10);
    await sleep(500);
    const upStarted = Date.now();
    const up = await upgrade('vm1', '10.0.2', 'up');
    const upEnded = Date.now();
    const upRepliesAt = pinger.replies();
    await sleep(500);
    const down = await upgrade('vm1', '7.2', 'down');
    await sleep(500);
    const ping = await pinger.stop();

    for (const r of [up, down]) {
      expect(r).toMatchObject({ outcome: 'upgraded', strategy: 'plain', ram: 'shared' });
      expect(r.backends).toEqual([expect.objectContaining({ id: 'net0', mode: 'handover' })]);
      // Shared RAM: device state only on the stream, not the guest's 256 MiB.
      expect(r.migration!.transferredBytes).toBeLessThan(2 * 1024 * 1024);
    }
    const record = await readVmRecord(config.runtimeDir, 'vm1');
    expect(record).toMatchObject({ generation: 3, binary: { label: '7.2' } });
    expect(isProcessAlive(first.pid)).toBe(false);
    expect(isProcessAlive(record!.pid, record!.qmpSocket)).toBe(true);
    // The tap is the same interface, now held by the third process only.
    expect(net.hasLink('futap0')).toBe(true);
    expect(tapFdsOf(record!.pid).get('futap0')?.length).toBe(1);
    // Every QEMU of ours runs in QEMU's seccomp sandbox where the build has it (both do).
    expect(readFileSync(`/proc/${record!.pid}/cmdline`, 'utf8').split('\0')).toContain('-sandbox');
    // The guest answered before, between and after both upgrades.
    expect(upRepliesAt).toBeGreaterThan(10);
    expect(ping.replies).toBeGreaterThan(upRepliesAt + 10);
    const c = await waitForConsole(serialLog, (x) => x.lastWrite > 0, 1_000);
    const writesBefore = c.lastWrite;
    await waitForConsole(serialLog, (x) => x.lastWrite > writesBefore + 3, 30_000);

    // Stop the guest and read its disk: every write it saw complete is there.
    await killQemu(record!.pid, { graceMs: 5_000, expectArg: record!.qmpSocket });
    const last = parseConsole(readFileSync(serialLog, 'utf8')).lastWrite;
    expect(await lostDiskWrites(disk, 'qcow2', last)).toEqual([]);
    process.stderr.write(
      `real VM: up ${up.migration!.totalTimeMs} ms (downtime ${up.migration!.downtimeMs} ms, guest pause ${up.migration!.guestPauseMs} ms, ${up.migration!.transferredBytes} B), ` +
        `down ${down.migration!.totalTimeMs} ms (downtime ${down.migration!.downtimeMs} ms); ${ping.replies} replies, ` +
        `largest ping gap ${ping.largestGapMs} ms (ended ${Math.round(ping.largestGapEndedAt - upStarted)} ms after the first upgrade started, ` +
        `which took ${upEnded - upStarted} ms: ${up.phases.map((p) => `${p.phase} ${p.ms}`).join(', ')}); ${last} disk writes, none lost\n`,
    );
  });

  test('re-create mode: an excluded tap is replaced by a new one on the same bridge, the old one deleted', async () => {
    const { kernel, initrd } = guestImage(repoRoot);
    net.addTap('futap1');
    const serialLog = path.join(tmp.path, 'console2.log');
    const spec = parseVmSpec({
      id: 'vm2',
      binary: '7.2',
      machine: 'pc-i440fx-7.2',
      accel: 'tcg',
      memoryMiB: 256,
      kernel,
      initrd,
      append: guestKernelArgs({ ip: '10.77.0.3/24' }),
      serialLog,
      netdevs: [{ id: 'net0', type: 'tap', ifname: 'futap1', bridge: net.bridge }],
      devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
    });
    const first = await launchVm({ config, spec });
    await waitForConsole(serialLog, (c) => c.ready, 120_000);
    net.exec('ping', ['-c', '1', '-W', '5', '10.77.0.3']);

    const result = await upgrade('vm2', '10.0.2', 'recreate', { excludeBackends: ['nic0'] });
    if (result.outcome !== 'upgraded') process.stderr.write(`${JSON.stringify(result)}\n`);
    expect(result).toMatchObject({ outcome: 'upgraded', ram: 'shared' });
    expect(result.backends).toEqual([
      expect.objectContaining({ id: 'net0', mode: 'recreate', why: expect.stringContaining('bridge br0') }),
    ]);
    const record = await readVmRecord(config.runtimeDir, 'vm2');
    const newTap = record!.spec.netdevs[0]!.ifname!;
    expect(newTap).not.toBe('futap1');
    expect(net.hasLink(newTap)).toBe(true);
    expect(net.hasLink('futap1')).toBe(false);
    expect(isProcessAlive(first.pid)).toBe(false);
    // The guest is reachable through the new tap (the bridge learns its MAC again on its next frame).
    net.exec('ping', ['-c', '3', '-W', '5', '10.77.0.3']);
  });
});
