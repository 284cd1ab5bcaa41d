// An upgrade that could not tell which process holds the guest keeps both and marks the record; the VM is
// then refused by every upgrade until an operator picks one (`fleet-upgrade vm resolve`). Real QEMU.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { ApplicationFailure } from '@temporalio/common';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive, launchQemu } from '../../activities/host/qemu-launcher';
import { socketPath } from '../../activities/host/paths';
import { buildQemuArgs } from '../../activities/host/vm-spec';
import { readVmRecord, writeVmRecord } from '../../activities/host/vm-record';
import { inspectSource } from '../../activities/upgrade/inspect-source';
import { resolveVm } from '../../activities/upgrade/resolve';
import { qemu72, requireQemu } from '../../infra/real-parts';
import { killQemusUnder } from '../helpers/cleanup';
import { fleetUpgrade } from '../helpers/cli';
import { launchCounterVm } from '../helpers/real-upgrade';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(60_000);

describe('vm resolve', () => {
  let tmp: TmpDir;
  let config: HostConfig;

  beforeAll(() => {
    requireQemu(qemu72);
    tmp = makeTmpDir('rsv');
    config = parseHostConfig({
      hostId: 'host-r',
      runtimeDir: path.join(tmp.path, 'rt'),
      binaries: { '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs } },
    });
  });

  afterAll(() => {
    if (tmp) killQemusUnder(tmp.path);
    tmp?.cleanup();
  });

  test('keeps the process the operator names, stops the other, and the VM can be upgraded again', async () => {
    // The operator found the guest in generation 1 (the destination, 2, never got its state).
    const first = await launchCounterVm(config, tmp.path, 'vm1');
    // A second process of the same VM, as a destination the upgrade could not judge would be.
    const qmpSocket = socketPath(config.runtimeDir, 'vm1', 2, 'qmp');
    const second = await launchQemu({
      binary: qemu72.binary,
      args: buildQemuArgs(first.spec, {
        mode: 'destination',
        qmpSocket,
        dataDirs: qemu72.dataDirs,
        machineType: 'pc-i440fx-7.2',
        incoming: { kind: 'defer' },
        paused: true,
        transferBackends: [],
        dialect: 'none',
      }),
      runtimeDir: config.runtimeDir,
      vmId: 'vm1',
      role: 'destination',
      generation: 2,
    });
    await writeVmRecord(config.runtimeDir, {
      ...first,
      attention: {
        reason: 'the destination may have run the guest and is not answering its monitor: both processes were kept',
        since: new Date().toISOString(),
        processes: [
          { generation: 1, label: '7.2', pid: first.pid, qmpSocket: first.qmpSocket },
          { generation: 2, label: '7.2', pid: second.pid, qmpSocket },
        ],
      },
    });

    // Every upgrade is refused, touching nothing, and says what to do.
    const refused = await inspectSource(config, { vmId: 'vm1' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ApplicationFailure);
    expect((refused as ApplicationFailure).type).toBe('NotAllowed');
    expect((refused as Error).message).toMatch(
      /waits for an operator.*vm resolve --config <host config> --vm vm1 --keep/,
    );

    await expect(resolveVm(config, 'vm1', 3, { resume: false })).rejects.toThrow(
      /^keep: generation 3 is not one the upgrade kept \(1, 2\)$/,
    );
    // Generation 2 never got the guest's state: keeping it is refused.
    await expect(resolveVm(config, 'vm1', 2, { resume: true })).rejects.toThrow(/never received the guest's state/);
    const outcome = await resolveVm(config, 'vm1', 1, { resume: true });
    expect(outcome).toMatchObject({
      kept: { generation: 1, pid: first.pid },
      stopped: [second.pid],
      status: 'running',
    });
    expect(isProcessAlive(second.pid)).toBe(false);
    const record = await readVmRecord(config.runtimeDir, 'vm1');
    expect(record).toMatchObject({ generation: 1, pid: first.pid });
    expect(record?.attention).toBeUndefined();
    // Nothing left to resolve; the VM is an ordinary VM again.
    await expect(resolveVm(config, 'vm1', 1, { resume: false })).rejects.toThrow(/does not wait for an operator/);
    await expect(inspectSource(config, { vmId: 'vm1' })).resolves.toMatchObject({ process: { generation: 1 } });

    // The command says so in one line, exit 2, and touches nothing.
    const file = path.join(tmp.path, 'host.yaml');
    writeFileSync(file, stringify({ hostId: config.hostId, runtimeDir: config.runtimeDir, binaries: config.binaries }));
    const cli = fleetUpgrade('vm', 'resolve', '--config', file, '--vm', 'vm1', '--keep', '1');
    expect(cli.status).toBe(2);
    expect(cli.stderr.trim().split('\n')).toHaveLength(1);
    expect(cli.stderr).toMatch(/VM vm1 does not wait for an operator: nothing to resolve/);
    expect(isProcessAlive(first.pid, first.qmpSocket)).toBe(true);
  });
});
