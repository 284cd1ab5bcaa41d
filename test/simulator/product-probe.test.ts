// The product's own QMP client and capability probe against simulated QEMUs: dialect detection (by schema
// shape only), machine type, guest memory and transferable backends come out as each dialect defines them.
import path from 'node:path';
import { probeVm } from '../../activities/capabilities/probe';
import { QmpClient } from '../../activities/qmp/client';
import { launchSimulatedQemu, SimulatedQemu } from '../../infra/simulator';
import type { DialectName } from '../../infra/simulator/dialects';
import { makeTmpDir, TmpDir } from '../helpers/tmp';
import { vmArgv, writeBootImage } from './harness';

let tmp: TmpDir;
const vms: SimulatedQemu[] = [];
beforeAll(() => {
  tmp = makeTmpDir('qsimp');
  writeBootImage(path.join(tmp.path, 'boot.img'));
});
afterAll(async () => {
  await Promise.all(vms.map((v) => v.stop()));
  tmp.cleanup();
});

const NIC = (dialect: DialectName): string[] => [
  '-netdev',
  `tap,id=net0,ifname=p-${dialect},script=no,downscript=no${dialect === 'local' ? ',x-permit-local-migration=on' : ''}`,
  '-device',
  `virtio-net-pci,netdev=net0,id=nic0${dialect === 'backend-transfer-bool' ? ',backend-transfer=on' : ''}`,
];

test.each(['none', 'backend-transfer-bool', 'backend-transfer-list', 'local'] as DialectName[])(
  'probe of a %s simulator',
  async (dialect) => {
    const { argv, qmp } = vmArgv({
      dir: tmp.path,
      name: `p-${dialect}`,
      sim: ['--sim-dialect', dialect, '--sim-version', '10.1.50'],
      extra: NIC(dialect),
    });
    const vm = await launchSimulatedQemu(argv, { stderr: () => undefined });
    vms.push(vm);
    const client = await QmpClient.connect(qmp);
    try {
      const caps = await probeVm(client);
      expect(caps.qemuVersion).toBe('10.1.50');
      expect(caps.machine).toBe('pc-i440fx-7.2');
      expect(caps.status).toBe('running');
      expect(caps.backendTransfer.dialect).toBe(dialect);
      expect(caps.memory).toEqual({ backend: 'memory-backend-memfd', shared: true, auxRamShare: true });
      expect(caps.strategies).toContain('cpr-transfer');
      expect(caps.strategies.includes('backend-transfer')).toBe(dialect !== 'none');
      const transferable = {
        none: [],
        'backend-transfer-bool': ['nic0'],
        'backend-transfer-list': ['/machine/peripheral/nic0/virtio-backend'],
        local: null,
      };
      expect(caps.backendTransfer.transferable).toEqual(transferable[dialect]);
      if (dialect === 'local') expect(caps.features.tapPermitOption).toBe('x-permit-local-migration');
    } finally {
      await client.close();
    }
  },
);

test('probe of a simulated 7.2 (served the real 7.2 schema): no cpr-transfer, no aux-ram-share', async () => {
  const { argv, qmp } = vmArgv({ dir: tmp.path, name: 'p-72', sim: ['--sim-version', '7.2.22'] });
  // 7.2 has no aux-ram-share machine property.
  const vm = await launchSimulatedQemu(
    argv.map((a) => a.replace(',aux-ram-share=on', '')),
    { stderr: () => undefined },
  );
  vms.push(vm);
  const client = await QmpClient.connect(qmp);
  try {
    const caps = await probeVm(client);
    expect(caps.qemuVersion).toBe('7.2.22');
    expect(caps.backendTransfer.dialect).toBe('none');
    expect(caps.memory.auxRamShare).toBeNull();
    expect(caps.strategies).toEqual(['plain']);
  } finally {
    client.close();
  }
});
