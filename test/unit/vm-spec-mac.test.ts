// A NIC's MAC in the VM spec: on the source's and the destination's command line alike (the guest keeps its
// address across an upgrade), and refused unless it is a lower-case MAC.
import { buildQemuArgs, parseVmSpec } from '../../activities/host/vm-spec';

const spec = {
  id: 'vm1',
  binary: '7.2',
  machine: 'pc-i440fx-7.2',
  memoryMiB: 64,
  netdevs: [{ id: 'net0', type: 'tap', ifname: 'tap0' }],
  devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0', mac: '52:54:00:00:01:02' }],
};

const devices = (args: string[]) => args.flatMap((a, i) => (args[i - 1] === '-device' ? [a] : []));

test('the MAC is on the source and the destination alike', () => {
  const s = parseVmSpec(spec);
  const source = buildQemuArgs(s, { mode: 'source', qmpSocket: '/tmp/q.qmp' });
  const destination = buildQemuArgs(s, {
    mode: 'destination',
    qmpSocket: '/tmp/q2.qmp',
    machineType: 'pc-i440fx-7.2',
    incoming: { kind: 'defer' },
    paused: true,
    transferBackends: [],
    dialect: 'none',
  } as Parameters<typeof buildQemuArgs>[1]);
  expect(devices(source)).toEqual(['virtio-net-pci,id=nic0,netdev=net0,mac=52:54:00:00:01:02']);
  expect(devices(destination)).toEqual(devices(source));
});

test.each(['52:54:00:00:01', '52-54-00-00-01-02', '52:54:00:00:01:0G', '52:54:00:00:01:0A'])(
  'refuses MAC %s',
  (mac) => {
    expect(() => parseVmSpec({ ...spec, devices: [{ ...spec.devices[0], mac }] })).toThrow(
      /devices\[0\]\.mac|devices\.0\.mac/,
    );
  },
);
