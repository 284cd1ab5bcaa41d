// upgradeVm end to end through a real Temporal dev server and real host workers: a VM on real QEMU 7.2
// running the counter guest is upgraded to QEMU 10.0.2 on the same host.
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import { workflowsPath } from '../../workers/orchestrator-worker';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { readVmRecord } from '../../activities/host/vm-record';
import { launchVm } from '../../activities/host/vm-launch';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { QmpClient } from '../../activities/qmp/client';
import { qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import { upgradeVm, upgradeVmProgressQuery } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { phaseKey, upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import { parseCounter, writeCounterGuest } from '../../infra/guest/counter-guest';
import { recordHistory } from '../helpers/record-history';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { killQemusUnder } from '../helpers/cleanup';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(180_000);

async function readCounter(qmpSocket: string): Promise<number> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    return parseCounter(String(await qmp.execute('human-monitor-command', { 'command-line': 'x /1wx 0x7e00' })));
  } finally {
    await qmp.close();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('upgradeVm on real QEMU', () => {
  let harness: Harness;
  let tmp: TmpDir;
  let config: HostConfig;

  beforeAll(async () => {
    requireQemu(qemu72);
    requireQemu(qemu10);
    tmp = makeTmpDir('e2e');
    config = parseHostConfig({
      hostId: 'host-a',
      runtimeDir: path.join(tmp.path, 'rt'),
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
    tmp?.cleanup();
  });

  test('7.2 → 10.0.2: the guest keeps counting in the new process, the old one is gone', async () => {
    const disk = writeCounterGuest(path.join(tmp.path, 'counter.img'));
    const spec = parseVmSpec({
      id: 'vm1',
      binary: '7.2',
      machine: 'pc-i440fx-7.2',
      accel: 'tcg',
      memoryMiB: 64,
      drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
    });
    const before = await launchVm({ config, spec });
    expect(before.machineType).toBe('pc-i440fx-7.2');
    await sleep(300);
    const counted = await readCounter(before.qmpSocket);

    const handle = await harness.client.workflow.start(upgradeVm, {
      taskQueue: orchestratorTaskQueue,
      workflowId: 'upgrade-vm/host-a/vm1',
      args: [{ hostId: 'host-a', vmId: 'vm1', target: '10.0.2' }],
      typedSearchAttributes: upgradeVmSearchAttributes({ hostId: 'host-a', vmId: 'vm1', target: '10.0.2' }),
    });
    const result = await handle.result();
    expect(result).toMatchObject({
      outcome: 'upgraded',
      from: { label: '7.2' },
      to: { label: '10.0.2', version: '10.0.2' },
    });
    expect(result.strategy).toBe('plain');
    expect(result.migration?.downtimeMs).toEqual(expect.any(Number));
    expect(result.migration?.guestPauseMs).toEqual(expect.any(Number));
    expect((await handle.query(upgradeVmProgressQuery)).phase).toBe('done');
    // FleetPhase, as the Web UI filters by it: inspect from the start, then only the milestones.
    const upserted = ((await handle.fetchHistory()).events ?? []).flatMap((e) => {
      const fields = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields;
      const phase = fields?.FleetPhase?.data;
      return phase ? [JSON.parse(Buffer.from(phase).toString()) as string | string[]].flat() : [];
    });
    expect(upserted).toEqual(['migrate', 'done']);
    // The grouped shape: three activities, one patch marker, and no search-attribute upsert but FleetPhase's.
    const events = (await handle.fetchHistory()).events ?? [];
    const scheduled = events.flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
    expect(scheduled).toEqual(['inspectAndProbe', 'startAndMigrate', 'verifyAndFinalize']);
    expect(events.filter((e) => e.markerRecordedEventAttributes).length).toBe(1);
    expect(events.filter((e) => e.upsertWorkflowSearchAttributesEventAttributes).length).toBe(upserted.length + 1);
    expect(result.phases.map((p) => p.phase)).toEqual([
      'inspect',
      'decide',
      'start-destination',
      'migrate',
      'verify',
      'finalize',
    ]);
    expect((await handle.describe()).typedSearchAttributes.get(phaseKey)).toBe('done');

    const after = await readVmRecord(config.runtimeDir, 'vm1');
    expect(after).toMatchObject({ generation: 2, binary: { label: '10.0.2', path: qemu10.binary } });
    expect(after!.pid).not.toBe(before.pid);
    expect(isProcessAlive(after!.pid, after!.qmpSocket)).toBe(true);
    expect(isProcessAlive(before.pid)).toBe(false);

    const first = await readCounter(after!.qmpSocket);
    await sleep(300);
    const second = await readCounter(after!.qmpSocket);
    expect(first).toBeGreaterThan(counted);
    expect(second).toBeGreaterThan(first);
    const qmp = await QmpClient.connect(after!.qmpSocket);
    try {
      expect(await qmp.execute('query-version')).toMatchObject({ qemu: { major: 10, minor: 0, micro: 2 } });
    } finally {
      await qmp.close();
    }

    // Determinism: the recorded history replays against the current workflow code.
    const history = await handle.fetchHistory();
    await expect(Worker.runReplayHistory({ workflowsPath: workflowsPath() }, history)).resolves.toBeUndefined();
    recordHistory(harness, handle.workflowId, 'upgrade-vm-real-grouped.json');
  });
});
