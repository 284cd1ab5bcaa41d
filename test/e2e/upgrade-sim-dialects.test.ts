// upgradeVm in each backend-transfer dialect, on the QEMU simulator (no QEMU binary speaks them), through
// a real dev server and a real host worker. The list each side was given is the intersection of what both
// sides report minus exclusions, and backend ownership moved to the new process for exactly those.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { probeVm } from '../../activities/capabilities/probe';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { launchVm } from '../../activities/host/vm-launch';
import { readVmRecord } from '../../activities/host/vm-record';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { backendKey, backendOwner, readLedgerEvents, runningIntervals } from '../../infra/simulator';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { killQemusUnder } from '../helpers/cleanup';
import { writeCounterGuest } from '../../infra/guest/counter-guest';
import { writeSimBinary } from '../helpers/sim-binaries';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { counterOf, qmpOf } from '../helpers/real-upgrade';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(180_000);

const dialects = ['backend-transfer-bool', 'backend-transfer-list', 'local'] as const;

describe('upgradeVm on the simulator, per backend-transfer dialect', () => {
  let harness: Harness;
  let tmp: TmpDir;
  const hosts = new Map<string, { config: HostConfig; ledger: string }>();

  beforeAll(async () => {
    tmp = makeTmpDir('sim');
    harness = await startHarness();
    for (const [i, dialect] of dialects.entries()) {
      const dir = path.join(tmp.path, `h${i}`);
      const ledger = path.join(dir, 'ledger');
      mkdirSync(ledger, { recursive: true });
      const config = parseHostConfig({
        hostId: `sim-${i}`,
        runtimeDir: path.join(dir, 'rt'),
        binaries: {
          old: { path: writeSimBinary(dir, 'qemu-old', { dialect, version: '10.0.50', ledger }) },
          new: { path: writeSimBinary(dir, 'qemu-new', { dialect, version: '10.1.50', ledger }) },
        },
      });
      hosts.set(dialect, { config, ledger });
      await harness.startHost(config);
    }
  });

  afterAll(async () => {
    await harness?.stop();
    if (tmp) killQemusUnder(tmp.path);
    tmp?.cleanup();
  });

  async function launch(dialect: (typeof dialects)[number], vmId: string) {
    const { config } = hosts.get(dialect)!;
    mkdirSync(config.runtimeDir, { recursive: true, mode: 0o700 });
    const disk = writeCounterGuest(path.join(config.runtimeDir, `${vmId}.img`));
    const i = dialects.indexOf(dialect);
    const spec = parseVmSpec({
      id: vmId,
      binary: 'old',
      machine: 'pc-i440fx-7.2',
      accel: 'tcg',
      memoryMiB: 64,
      drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
      netdevs: [
        { id: 'net0', type: 'tap', ifname: `fu${i}${vmId}a` },
        { id: 'net1', type: 'tap', ifname: `fu${i}${vmId}b` },
      ],
      devices: [
        { id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' },
        { id: 'nic1', driver: 'virtio-net-pci', netdev: 'net1' },
      ],
    });
    return launchVm({ config, spec });
  }

  async function upgrade(dialect: string, vmId: string, policy: Partial<MigrationPolicy> = {}) {
    const { config } = hosts.get(dialect)!;
    return (await harness.client.workflow.execute('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `upgrade-vm/${config.hostId}/${vmId}`,
      args: [{ hostId: config.hostId, vmId, target: 'new', policy }],
    })) as UpgradeVmResult;
  }

  test.each(dialects)('%s: the agreed list is handed over and ownership moves to the new process', async (dialect) => {
    const { config, ledger } = hosts.get(dialect)!;
    const before = await launch(dialect, 'v1');
    const caps = await qmpOf(before.qmpSocket, (q) => probeVm(q));
    expect(caps.backendTransfer.dialect).toBe(dialect);
    // The source's own answer (or, where the dialect cannot say, the taps it was launched with).
    const sourceList = caps.backendTransfer.transferable ?? ['net0', 'net1'];
    expect(sourceList.length).toBe(2);

    const result = await upgrade(dialect, 'v1');
    expect(result.outcome).toBe('upgraded');
    expect(result.strategy).toBe('backend-transfer');
    // Both sides run the same dialect and backends: the intersection is the source's list.
    expect(result.transferredBackends).toEqual([...sourceList].sort());

    const after = await readVmRecord(config.runtimeDir, 'v1');
    expect(after).toMatchObject({ generation: 2, binary: { label: 'new' } });
    expect(isProcessAlive(before.pid)).toBe(false);
    for (const ifname of ['fu' + dialects.indexOf(dialect) + 'v1a', 'fu' + dialects.indexOf(dialect) + 'v1b']) {
      expect(backendOwner(ledger, backendKey('tap', ifname))?.pid).toBe(after!.pid);
    }
    const events = readLedgerEvents(ledger).filter((e) => e.vm === 'v1');
    // Never two processes running the guest at once.
    const intervals = runningIntervals(events).sort((a, b) => a.from - b.from);
    for (let k = 1; k < intervals.length; k++) expect(intervals[k]!.from).toBeGreaterThanOrEqual(intervals[k - 1]!.to);
    const counter = await counterOf(after!.qmpSocket);
    expect(counter).toBeGreaterThan(0);
  });

  test('local: a VM with no NIC moves by cpr-transfer; an x-ignore-shared left on its source is turned off', async () => {
    const { config } = hosts.get('local')!;
    mkdirSync(config.runtimeDir, { recursive: true, mode: 0o700 });
    const disk = writeCounterGuest(path.join(config.runtimeDir, 'bare.img'));
    const before = await launchVm({
      config,
      spec: parseVmSpec({
        id: 'bare',
        binary: 'old',
        machine: 'pc-i440fx-7.2',
        accel: 'tcg',
        memoryMiB: 64,
        drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
      }),
    });
    // As an earlier plain migration with shared RAM would have left it: cpr-transfer must run without it.
    await qmpOf(before.qmpSocket, (q) =>
      q.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }),
    );
    const result = await upgrade('local', 'bare');
    expect({ outcome: result.outcome, reason: result.reason, strategy: result.strategy, ram: result.ram }).toEqual({
      outcome: 'upgraded',
      reason: undefined,
      strategy: 'cpr-transfer',
      ram: 'shared',
    });
    const after = await readVmRecord(config.runtimeDir, 'bare');
    expect(after).toMatchObject({ generation: 2, binary: { label: 'new' } });
    expect(isProcessAlive(before.pid)).toBe(false);
    expect(await counterOf(after!.qmpSocket)).toBeGreaterThan(0);
  });

  test('excluding every transferable backend with requireBackendTransfer refuses and touches nothing', async () => {
    const dialect = 'backend-transfer-list';
    const { config } = hosts.get(dialect)!;
    const before = await launch(dialect, 'v2');
    const caps = await qmpOf(before.qmpSocket, (q) => probeVm(q));
    const result = await upgrade(dialect, 'v2', {
      excludeBackends: caps.backendTransfer.transferable ?? [],
      requireBackendTransfer: true,
    });
    expect(result.outcome).toBe('refused');
    expect(result.reason).toMatch(
      /^requireBackendTransfer cannot be met: backend-transfer: no backend is transferable/,
    );
    expect(await readVmRecord(config.runtimeDir, 'v2')).toMatchObject({ generation: 1, pid: before.pid });
    expect(isProcessAlive(before.pid, before.qmpSocket)).toBe(true);
  });

  test('excluding one backend of a VM without a bridge: refused up front, nothing touched', async () => {
    const dialect = 'backend-transfer-list';
    const { config, ledger } = hosts.get(dialect)!;
    const before = await launch(dialect, 'v3');
    const caps = await qmpOf(before.qmpSocket, (q) => probeVm(q));
    const [, exclude] = caps.backendTransfer.transferable!;
    const result = await upgrade(dialect, 'v3', { excludeBackends: [exclude!] });
    // The excluded tap would have to be re-created while the live source holds it (EBUSY, as a real tap):
    // with no bridge to make a new one on, and no fds to take from a simulated QEMU, the plan refuses.
    expect(result.outcome).toBe('refused');
    expect(result.reason).toMatch(/can be neither handed over \(excluded by policy\) nor re-created/);
    expect(await readVmRecord(config.runtimeDir, 'v3')).toMatchObject({ generation: 1, pid: before.pid });
    expect(isProcessAlive(before.pid, before.qmpSocket)).toBe(true);
    const ownerOf = (suffix: string) => backendOwner(ledger, backendKey('tap', `fu1v3${suffix}`))?.pid;
    expect(ownerOf('a')).toBe(before.pid);
    expect(ownerOf('b')).toBe(before.pid);
  });
});
