import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  buildQemuArgs,
  concreteMachineType,
  parseVmSpec,
  parseVmSpecYaml,
  type DestinationArgsOptions,
  type VmSpecInput,
} from '../../activities/host/vm-spec';
import { ConfigError } from '../../activities/host/validate';
import { projectRoot } from '../../infra/real-parts';

const minimal: VmSpecInput = { id: 'vm1', binary: '7.2', machine: 'pc-i440fx-7.2', memoryMiB: 64 };
const full: VmSpecInput = {
  ...minimal,
  accel: 'tcg',
  drives: [{ id: 'disk0', file: '/images/vm1.img', format: 'raw', interface: 'ide' }],
  netdevs: [
    { id: 'net0', type: 'tap', ifname: 'tap-vm1', vnetHdr: true },
    { id: 'net1', type: 'user' },
  ],
  devices: [
    { id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' },
    { id: 'nic1', driver: 'e1000', netdev: 'net1' },
  ],
};
const qmp = '/run/qf/run/vm1.1.qmp';

/** The value following each occurrence of `flag`. */
const values = (args: string[], flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('VM spec', () => {
  it('applies defaults: shared memfd RAM, auto accel, one CPU, no devices', () => {
    expect(parseVmSpec(minimal)).toEqual({
      ...minimal,
      accel: 'auto',
      memoryBackend: 'memfd',
      memoryShared: true,
      cpus: 1,
      drives: [],
      netdevs: [],
      devices: [],
    });
  });

  it.each<[RegExp, VmSpecInput | Record<string, unknown>]>([
    [/^extraArgs: unknown field$/, { ...minimal, extraArgs: ['-monitor', 'stdio'] }],
    [/^id: must match/, { ...minimal, id: '../etc' }],
    [/^binary: must be a version label/, { ...minimal, binary: '/usr/bin/qemu' }],
    [/^machine: must be a QEMU machine type/, { ...minimal, machine: 'pc,accel=kvm' }],
    [/^memoryBackend: /, { ...minimal, memoryBackend: 'hugetlb' }],
    [
      /^drives\.0\.file: must be an absolute path/,
      { ...minimal, drives: [{ id: 'd', file: 'x.img', format: 'raw', interface: 'ide' }] },
    ],
    [
      /^drives\.0\.readonly: an IDE disk cannot be read-only/,
      { ...minimal, drives: [{ id: 'd', file: '/a', format: 'raw', interface: 'ide', readonly: true }] },
    ],
    [
      /^drives\.0\.file: must not contain NUL or commas/,
      { ...minimal, drives: [{ id: 'd', file: '/a,b', format: 'raw', interface: 'ide' }] },
    ],
    [/^netdevs\.0\.ifname: only for type tap/, { ...minimal, netdevs: [{ id: 'n', type: 'user', ifname: 'x' }] }],
    [
      /^netdevs\.0\.chardevPath: is required for type vhost-user/,
      { ...minimal, netdevs: [{ id: 'n', type: 'vhost-user' }] },
    ],
    [/^devices\.0\.netdev: no netdev n9/, { ...minimal, devices: [{ id: 'd', driver: 'e1000', netdev: 'n9' }] }],
    [
      /^devices\.1\.id: duplicate id n/,
      {
        ...minimal,
        netdevs: [{ id: 'n', type: 'user' }],
        devices: [
          { id: 'a', driver: 'e1000' },
          { id: 'n', driver: 'e1000' },
        ],
      },
    ],
    [
      /^memoryShared: vhost-user needs shared/,
      { ...minimal, memoryShared: false, netdevs: [{ id: 'n', type: 'vhost-user', chardevPath: '/s' }] },
    ],
  ])('rejects %s', (re, data) => {
    expect(configError(() => parseVmSpec(data)).message).toMatch(re);
  });

  it('parses YAML', () => {
    const s = parseVmSpecYaml('id: vm1\nbinary: "7.2"\nmachine: pc\nmemoryMiB: 64\n', 'vm1.yaml');
    expect(s.machine).toBe('pc');
    expect(() => parseVmSpecYaml('id: vm1\nbinary: 7.2\nmachine: pc\nmemoryMiB: 64\n', 'vm1.yaml')).toThrow(
      /^vm1\.yaml: binary: Invalid input: expected string, received number$/,
    );
  });
});

describe('buildQemuArgs, source', () => {
  it('builds the full command line', () => {
    // prettier-ignore
    expect(buildQemuArgs(parseVmSpec(full), { mode: 'source', qmpSocket: qmp })).toEqual([
      '-name', 'guest=vm1', '-nodefaults', '-no-user-config', '-display', 'none',
      '-qmp', `unix:${qmp},server=on,wait=off`,
      '-msg', 'timestamp=on',
      '-machine', 'pc-i440fx-7.2,memory-backend=pc.ram',
      '-accel', 'tcg',
      '-smp', '1', '-m', '64M',
      '-object', 'memory-backend-memfd,id=pc.ram,size=64M,share=on',
      '-drive', 'id=disk0,file=/images/vm1.img,format=raw,if=ide',
      '-netdev', 'tap,id=net0,ifname=tap-vm1,script=no,downscript=no,vnet_hdr=on',
      '-netdev', 'user,id=net1',
      '-device', 'virtio-net-pci,id=nic0,netdev=net0',
      '-device', 'e1000,id=nic1,netdev=net1',
    ]);
  });

  it('passes -L per data dir, aux-ram-share only when asked, kvm with tcg fallback for auto', () => {
    const args = buildQemuArgs(parseVmSpec(minimal), {
      mode: 'source',
      qmpSocket: qmp,
      dataDirs: ['/q/share', '/q/bios'],
      auxRamShare: true,
    });
    expect(args.slice(0, 4)).toEqual(['-L', '/q/share', '-L', '/q/bios']);
    expect(values(args, '-machine')).toEqual(['pc-i440fx-7.2,memory-backend=pc.ram,aux-ram-share=on']);
    expect(values(args, '-accel')).toEqual(['kvm', 'tcg']);
    expect(values(buildQemuArgs(parseVmSpec(minimal), { mode: 'source', qmpSocket: qmp }), '-machine')).toEqual([
      'pc-i440fx-7.2,memory-backend=pc.ram',
    ]);
    expect(args).not.toContain('-incoming');
    expect(args).not.toContain('-S');
  });

  it('builds file and private RAM backends; file needs a memFile', () => {
    const file = parseVmSpec({ ...minimal, memoryBackend: 'file' });
    expect(() => buildQemuArgs(file, { mode: 'source', qmpSocket: qmp })).toThrow(/memFile: memoryBackend file needs/);
    expect(
      values(buildQemuArgs(file, { mode: 'source', qmpSocket: qmp, memFile: '/r/mem/vm1.ram' }), '-object'),
    ).toEqual(['memory-backend-file,id=pc.ram,size=64M,mem-path=/r/mem/vm1.ram,share=on']);
    const ram = parseVmSpec({ ...minimal, memoryBackend: 'ram', memoryShared: false });
    expect(values(buildQemuArgs(ram, { mode: 'source', qmpSocket: qmp }), '-object')).toEqual([
      'memory-backend-ram,id=pc.ram,size=64M,share=off',
    ]);
  });

  it('adds vhost-user through a socket chardev', () => {
    const s = parseVmSpec({ ...minimal, netdevs: [{ id: 'vu0', type: 'vhost-user', chardevPath: '/run/vu0.sock' }] });
    const args = buildQemuArgs(s, { mode: 'source', qmpSocket: qmp });
    expect(values(args, '-chardev')).toEqual(['socket,id=chr-vu0,path=/run/vu0.sock']);
    expect(values(args, '-netdev')).toEqual(['vhost-user,id=vu0,chardev=chr-vu0']);
  });

  it('permits local migration of taps in the local dialect', () => {
    const args = buildQemuArgs(parseVmSpec(full), {
      mode: 'source',
      qmpSocket: qmp,
      dialect: 'local',
      tapPermitOption: 'local-migration-supported',
    });
    expect(values(args, '-netdev')[0]).toBe(
      'tap,id=net0,ifname=tap-vm1,script=no,downscript=no,vnet_hdr=on,local-migration-supported=on',
    );
  });

  it('refuses socket paths with commas', () => {
    expect(() => buildQemuArgs(parseVmSpec(minimal), { mode: 'source', qmpSocket: '/a,b/q' })).toThrow(
      /qmpSocket: socket path/,
    );
  });
});

describe('buildQemuArgs, destination', () => {
  const dst: DestinationArgsOptions = {
    mode: 'destination',
    qmpSocket: '/run/qf/run/vm1.2.qmp',
    machineType: 'pc-i440fx-7.2-machine',
    incoming: { kind: 'defer' },
    paused: true,
    transferBackends: [],
    dialect: 'none',
  };

  it('uses the concrete machine type of the source, -incoming defer and -S', () => {
    const args = buildQemuArgs(parseVmSpec({ ...full, machine: 'pc' }), dst);
    expect(values(args, '-machine')).toEqual(['pc-i440fx-7.2,memory-backend=pc.ram']);
    expect(values(args, '-incoming')).toEqual(['defer']);
    expect(args.at(-1)).toBe('-S');
    expect(values(args, '-qmp')).toEqual(['unix:/run/qf/run/vm1.2.qmp,server=on,wait=off']);
    // dialect none: every backend re-created as in the source
    expect(values(args, '-netdev')).toEqual([
      'tap,id=net0,ifname=tap-vm1,script=no,downscript=no,vnet_hdr=on',
      'user,id=net1',
    ]);
  });

  it('never accepts a machine alias or unversioned type', () => {
    for (const t of ['pc', 'q35', 'pc-machine', 'microvm', 'weird']) {
      expect(() => buildQemuArgs(parseVmSpec(minimal), { ...dst, machineType: t })).toThrow(
        /machineType: .* is not a concrete versioned machine type/,
      );
    }
    expect(concreteMachineType('pc-q35-10.0')).toBe('pc-q35-10.0');
  });

  it('takes two -incoming channels for cpr-transfer', () => {
    const cpr: DestinationArgsOptions = {
      ...dst,
      auxRamShare: true,
      incoming: { kind: 'cpr-transfer', mainSocket: '/r/run/vm1.2.mig', cprSocket: '/r/run/vm1.2.cpr' },
    };
    const args = buildQemuArgs(parseVmSpec(minimal), cpr);
    expect(values(args, '-incoming').map((v) => JSON.parse(v))).toEqual([
      { 'channel-type': 'main', addr: { transport: 'socket', type: 'unix', path: '/r/run/vm1.2.mig' } },
      { 'channel-type': 'cpr', addr: { transport: 'socket', type: 'unix', path: '/r/run/vm1.2.cpr' } },
    ]);
    expect(values(args, '-machine')).toEqual(['pc-i440fx-7.2,memory-backend=pc.ram,aux-ram-share=on']);
  });

  it('local dialect: a transferred tap comes without ifname/vnet_hdr and with the permit option; others re-created', () => {
    const args = buildQemuArgs(parseVmSpec(full), { ...dst, dialect: 'local', transferBackends: ['net0'] });
    expect(values(args, '-netdev')).toEqual([
      'tap,id=net0,script=no,downscript=no,x-permit-local-migration=on',
      'user,id=net1',
    ]);
    expect(values(args, '-device')).toEqual(['virtio-net-pci,id=nic0,netdev=net0', 'e1000,id=nic1,netdev=net1']);
  });

  it('backend-transfer-bool: the device of a transferred backend gets backend-transfer=on', () => {
    const args = buildQemuArgs(parseVmSpec(full), {
      ...dst,
      dialect: 'backend-transfer-bool',
      transferBackends: ['net0'],
    });
    expect(values(args, '-device')).toEqual([
      'virtio-net-pci,id=nic0,netdev=net0,backend-transfer=on',
      'e1000,id=nic1,netdev=net1',
    ]);
    expect(values(args, '-netdev')[0]).toBe('tap,id=net0,ifname=tap-vm1,script=no,downscript=no,vnet_hdr=on');
  });

  it('refuses to transfer under dialect none or an unknown backend', () => {
    expect(() => buildQemuArgs(parseVmSpec(full), { ...dst, transferBackends: ['net0'] })).toThrow(
      /dialect none cannot transfer/,
    );
    expect(() => buildQemuArgs(parseVmSpec(full), { ...dst, dialect: 'local', transferBackends: ['net7'] })).toThrow(
      /no netdev net7/,
    );
  });
});

describe('examples', () => {
  it('infra/examples/vm.yaml is a valid spec', () => {
    const file = path.join(projectRoot, 'infra/examples/vm.yaml');
    const s = parseVmSpecYaml(readFileSync(file, 'utf8'), file);
    expect(s).toMatchObject({ id: 'web-01', binary: '7.2', machine: 'pc-i440fx-7.2', memoryMiB: 1024 });
    expect(buildQemuArgs(s, { mode: 'source', qmpSocket: '/r/run/web-01.1.qmp' })).toContain(
      'virtio-net-pci,id=nic0,netdev=net0',
    );
  });
});
