// Real VMs as people run them, upgraded through a real dev server and a real host worker: a Linux guest
// with a virtio-net NIC on a tap (on a bridge, in a network namespace of the test's own) and a qcow2 data
// disk it writes to all along, 7.2 → 10.0.2 and back. The host worker hands the tap and the guest RAM
// over from the live source process; the host pings the guest every 10 ms throughout.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { tapFdsOf } from '../../activities/host/fd-handover';
import { isProcessAlive, killQemu } from '../../activities/host/qemu-launcher';
import { readVmRecord } from '../../activities/host/vm-record';
import { launchVm } from '../../activities/host/vm-launch';
import { parseVmSpec, type VmSpecInput } from '../../activities/host/vm-spec';
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
  let shm: string | undefined;

  beforeAll(async () => {
    requireQemu(qemu72);
    requireQemu(qemu10);
    guestImage(repoRoot);
    tmp = makeTmpDir('rvm');
    net = createTestNetwork(`fu-rvm-${process.pid}`);
    shm = mkdtempSync('/dev/shm/fu-rvm-');
    config = parseHostConfig({
      hostId: 'host-r',
      runtimeDir: path.join(tmp.path, 'rt'),
      netns: net.ns,
      memoryDir: shm,
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
    if (shm) killQemusUnder(shm);
    if (shm) rmSync(shm, { recursive: true, force: true });
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
      // Each guest its own MAC: guests on one bridge with QEMU's default one would take each other's frames.
      devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0', mac: '52:54:00:77:00:02' }],
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
      devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0', mac: '52:54:00:77:00:03' }],
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

  /** A Linux guest with a NIC on a new tap `ifname`, booted and answering pings at `ip`. */
  async function bootGuest(vmId: string, ifname: string, ip: string, over: Partial<VmSpecInput> = {}, mq = false) {
    const { kernel, initrd } = guestImage(repoRoot);
    net.addTap(ifname, { multiQueue: mq });
    const serialLog = path.join(tmp.path, `${vmId}.console.log`);
    const vm = await launchVm({
      config,
      spec: parseVmSpec({
        id: vmId,
        binary: '7.2',
        machine: 'pc-i440fx-7.2',
        accel: 'tcg',
        memoryMiB: 256,
        kernel,
        initrd,
        append: guestKernelArgs({ ip: `${ip}/24` }),
        serialLog,
        netdevs: [{ id: 'net0', type: 'tap', ifname, bridge: net.bridge }],
        devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0', mac: `52:54:00:77:00:0${ip.split('.')[3]}` }],
        ...over,
      }),
    });
    await waitForConsole(serialLog, (c) => c.ready, 120_000);
    net.exec('ping', ['-c', '1', '-W', '5', ip]);
    return vm;
  }

  test('a multiqueue tap (4 queues) is not handed over: re-created on its bridge, the guest reachable', async () => {
    const first = await bootGuest(
      'vm3',
      'futap3',
      '10.77.0.4',
      { netdevs: [{ id: 'net0', type: 'tap', ifname: 'futap3', bridge: 'br0', queues: 4 }] },
      true,
    );
    const result = await upgrade('vm3', '10.0.2', 'mq');
    expect(result).toMatchObject({ outcome: 'upgraded', ram: 'shared' });
    expect(result.backends).toEqual([
      expect.objectContaining({ id: 'net0', mode: 'recreate', why: expect.stringContaining('multiqueue') }),
    ]);
    const record = await readVmRecord(config.runtimeDir, 'vm3');
    const newTap = record!.spec.netdevs[0]!.ifname!;
    expect(net.hasLink('futap3')).toBe(false);
    // Four queues on the new tap, all held by the new process.
    expect(tapFdsOf(record!.pid).get(newTap)?.length).toBe(4);
    expect(isProcessAlive(first.pid)).toBe(false);
    net.exec('ping', ['-c', '3', '-W', '5', '10.77.0.4']);
  });

  test('file-backed RAM in the host memoryDir (/dev/shm): shared by both processes, never copied', async () => {
    const first = await bootGuest('vm4', 'futap4', '10.77.0.5', { memoryBackend: 'file' });
    const result = await upgrade('vm4', '10.0.2', 'file');
    expect(result).toMatchObject({ outcome: 'upgraded', ram: 'shared' });
    expect(result.migration!.transferredBytes).toBeLessThan(2 * 1024 * 1024);
    const record = await readVmRecord(config.runtimeDir, 'vm4');
    const links = readdirSync(`/proc/${record!.pid}/fd`).map((fd) => {
      try {
        return readlinkSync(`/proc/${record!.pid}/fd/${fd}`);
      } catch {
        return '';
      }
    });
    // The same RAM file (a QEMU in the namespace sees it relative to the tmpfs, as `ip netns exec` mounts it).
    expect(links.some((l) => l.endsWith(`${path.basename(shm!)}/fleet-upgrade-host-r/vm4.ram`))).toBe(true);
    expect(isProcessAlive(first.pid)).toBe(false);
    net.exec('ping', ['-c', '3', '-W', '5', '10.77.0.5']);
  });

  test('a rollback mid-migration leaves the guest on its old process, with its tap, answering', async () => {
    // Private RAM, copied slowly, so the destination can be killed while the migration runs.
    const first = await bootGuest('vm5', 'futap5', '10.77.0.6', { memoryShared: false });
    const handle = await harness.client.workflow.start('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `upgrade-vm/${config.hostId}/vm5/rollback`,
      args: [{ hostId: config.hostId, vmId: 'vm5', target: '10.0.2', policy: { bandwidthLimitMiBps: 0.05 } }],
    });
    const procFile = path.join(config.runtimeDir, 'run', 'vm5.2.proc.json');
    let destination: number | undefined;
    for (let i = 0; i < 600 && destination === undefined; i++) {
      try {
        destination = (JSON.parse(readFileSync(procFile, 'utf8')) as { pid: number }).pid;
      } catch {
        await sleep(25);
      }
    }
    await sleep(700);
    process.kill(destination!, 'SIGKILL');
    const result = (await handle.result()) as UpgradeVmResult;
    expect(result).toMatchObject({ outcome: 'rolled-back', ram: 'copied' });
    expect(result.backends).toEqual([expect.objectContaining({ id: 'net0', mode: 'handover' })]);
    const record = await readVmRecord(config.runtimeDir, 'vm5');
    expect(record).toMatchObject({ generation: 1, pid: first.pid });
    expect(tapFdsOf(first.pid).get('futap5')?.length).toBe(1);
    net.exec('ping', ['-c', '3', '-W', '5', '10.77.0.6']);
  });
});
