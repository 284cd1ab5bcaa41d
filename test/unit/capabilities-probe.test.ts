// probeVm over a real UNIX socket against a fake QEMU that serves a real 10.0.2 schema, patched into each
// dialect: version, status, concrete machine type, guest memory, strategies and the transferable backends,
// asked in each dialect's own way.
import path from 'node:path';
import { ZodError } from 'zod';
import { machineFromQomType, probeVm } from '../../activities/capabilities/probe';
import { QmpClient } from '../../activities/qmp/client';
import { QmpError } from '../../activities/qmp/errors';
import { qemu10 } from '../../infra/real-parts';
import {
  FakeQmpPeer,
  schemaInDialect,
  type ReceivedCommand,
  type SchemaEntry,
  type SyntheticDialect,
} from '../helpers/fake-qmp-peer';
import { killAllVms, realSchema } from '../helpers/real-vm';
import { useTmpDir } from '../helpers/tmp';

jest.setTimeout(60_000);

const tmp = useTmpDir('qfcp');
let raw10: SchemaEntry[];
const peers: FakeQmpPeer[] = [];
const clients: QmpClient[] = [];
let counter = 0;

beforeAll(async () => {
  raw10 = (await realSchema(qemu10, tmp())) as SchemaEntry[];
}, 60_000);
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(peers.splice(0).map((p) => p.close()));
});
afterAll(() => killAllVms());

interface FakeVm {
  schema: SchemaEntry[];
  status?: string;
  qomType?: string;
  /** The RAM backend object, or null where the machine has no memory-backend property (old builds). */
  memory?: { id: string; type: string; share: boolean } | null;
  /** null: the machine has no aux-ram-share property. */
  auxRamShare?: boolean | null;
  transferSupport?: unknown;
  /** Device id → its QOM properties and their values. */
  peripherals?: Record<string, Record<string, unknown>>;
  /** Commands answered with an error. */
  refuse?: string[];
}

function answer(vm: FakeVm, cmd: ReceivedCommand): object {
  const args = cmd.arguments ?? {};
  const ok = (value: unknown) => ({ return: value, id: cmd.id });
  const fail = (cls: string, desc: string) => ({ error: { class: cls, desc }, id: cmd.id });
  if (vm.refuse?.includes(cmd.execute)) return fail('GenericError', `${cmd.execute} refused`);
  const memory = vm.memory === undefined ? { id: 'ram0', type: 'memory-backend-memfd', share: true } : vm.memory;
  switch (cmd.execute) {
    case 'query-version':
      return ok({ qemu: { major: 10, minor: 0, micro: 2 }, package: ' Debian 1:10.0.2 ' });
    case 'query-status':
      return ok({ status: vm.status ?? 'running', running: (vm.status ?? 'running') === 'running' });
    case 'query-qmp-schema':
      return ok(vm.schema);
    case 'qom-get': {
      const key = `${String(args.path)}#${String(args.property)}`;
      if (key === '/machine#type') return ok(vm.qomType ?? 'pc-i440fx-10.0-machine');
      if (key === '/machine#memory-backend' && memory) return ok(memory.id);
      const aux = vm.auxRamShare === undefined ? true : vm.auxRamShare;
      if (key === '/machine#aux-ram-share' && aux !== null) return ok(aux);
      if (memory && key === `${memory.id}#type`) return ok(memory.type);
      if (memory && key === `${memory.id}#share`) return ok(memory.share);
      const device = /^\/machine\/peripheral\/([^/]+)#(.+)$/.exec(key);
      const props = device ? vm.peripherals?.[device[1]!] : undefined;
      if (device && props && device[2]! in props) return ok(props[device[2]!]);
      return fail('GenericError', `Property '${String(args.property)}' not found`);
    }
    case 'qom-list': {
      const peripherals = vm.peripherals ?? {};
      if (args.path === '/machine/peripheral') {
        return ok([
          { name: 'type', type: 'string' },
          ...Object.keys(peripherals).map((id) => ({ name: id, type: 'child<virtio-net-pci>' })),
        ]);
      }
      const id = String(args.path).replace('/machine/peripheral/', '');
      const props = peripherals[id];
      if (!props) return fail('DeviceNotFound', `Device '${id}' not found`);
      return ok([{ name: 'type', type: 'string' }, ...Object.keys(props).map((p) => ({ name: p, type: 'bool' }))]);
    }
    case 'query-backend-transfer-support':
      return ok(vm.transferSupport ?? []);
    default:
      return fail('CommandNotFound', `The command ${cmd.execute} has not been found`);
  }
}

async function probeFake(vm: FakeVm) {
  const peer = await FakeQmpPeer.start(path.join(tmp(), `v${counter++}.sock`), async (c) => {
    await c.negotiate(['oob']);
    for (;;) c.send(answer(vm, await c.nextCommand(60_000)));
  });
  peers.push(peer);
  const client = await QmpClient.connect(peer.socketPath, { timeoutMs: 5_000 });
  clients.push(client);
  const conn = await peer.nextConnection();
  return { caps: probeVm(client), conn };
}

const dialectSchema = (dialect: SyntheticDialect) => schemaInDialect(raw10, { dialect });

describe('probeVm (fake QEMU serving patched real schemas)', () => {
  it('dialect none on memfd RAM: cpr-transfer then plain, nothing transferable', async () => {
    const { caps } = await probeFake({ schema: raw10 });
    await expect(caps).resolves.toEqual({
      qemuVersion: '10.0.2',
      package: 'Debian 1:10.0.2',
      status: 'running',
      machine: 'pc-i440fx-10.0',
      strategies: ['cpr-transfer', 'plain'],
      backendTransfer: { dialect: 'none', transferable: [] },
      memory: { backend: 'memory-backend-memfd', shared: true, auxRamShare: true },
      features: { dialect: 'none', migrationModes: ['normal', 'cpr-reboot', 'cpr-transfer'], ignoreShared: true },
    });
  });

  it('backend-transfer-list: asks query-backend-transfer-support', async () => {
    const { caps, conn } = await probeFake({
      schema: dialectSchema('backend-transfer-list'),
      transferSupport: [{ path: 'net0' }, { path: '/machine/peripheral/vu0' }],
    });
    const c = await caps;
    expect(c.backendTransfer).toEqual({
      dialect: 'backend-transfer-list',
      transferable: ['net0', '/machine/peripheral/vu0'],
    });
    expect(c.strategies).toEqual(['backend-transfer', 'cpr-transfer', 'plain']);
    expect(conn.received.map((r) => r.execute)).toContain('query-backend-transfer-support');
  });

  it('backend-transfer-bool: the devices with the backend-transfer property (on)', async () => {
    const { caps } = await probeFake({
      schema: dialectSchema('backend-transfer-bool'),
      memory: { id: 'pc.ram', type: 'memory-backend-ram', share: false },
      peripherals: {
        net0: { mac: '52:54:00:12:34:56', netdev: 'hn0', 'backend-transfer': true },
        disk0: { drive: 'd0' },
        vu0: { chardev: 'c0', 'backend-transfer': true },
      },
    });
    const c = await caps;
    expect(c.backendTransfer).toEqual({ dialect: 'backend-transfer-bool', transferable: ['net0', 'vu0'] });
    expect(c.strategies).toEqual(['backend-transfer', 'plain']);
  });

  it('local: cannot tell which backends are transferable (null); the tap permit option is known', async () => {
    const { caps, conn } = await probeFake({ schema: dialectSchema('local') });
    const c = await caps;
    expect(c.backendTransfer).toEqual({ dialect: 'local', transferable: null });
    expect(c.features.tapPermitOption).toBe('x-permit-local-migration');
    expect(c.strategies).toEqual(['backend-transfer', 'cpr-transfer', 'plain']);
    expect(conn.received.map((r) => r.execute)).not.toContain('qom-list');
  });

  it('an old build without memory-backend and aux-ram-share properties: anonymous RAM, plain', async () => {
    const { caps } = await probeFake({
      schema: raw10,
      memory: null,
      auxRamShare: null,
      qomType: 'pc-i440fx-7.2-machine',
    });
    const c = await caps;
    expect(c.memory).toEqual({ backend: null, shared: false, auxRamShare: null });
    expect(c.machine).toBe('pc-i440fx-7.2');
    expect(c.strategies).toEqual(['plain']);
  });

  it('sends its independent questions together, before any answer', async () => {
    const peer = await FakeQmpPeer.start(path.join(tmp(), `v${counter++}.sock`), async (c) => {
      await c.negotiate();
      const first: ReceivedCommand[] = [];
      for (let i = 0; i < 6; i++) first.push(await c.nextCommand());
      expect(first.map((f) => f.execute).sort()).toEqual([
        'qom-get',
        'qom-get',
        'qom-get',
        'query-qmp-schema',
        'query-status',
        'query-version',
      ]);
      for (const f of first) c.send(answer({ schema: raw10 }, f));
      for (;;) c.send(answer({ schema: raw10 }, await c.nextCommand(60_000)));
    });
    peers.push(peer);
    const client = await QmpClient.connect(peer.socketPath, { timeoutMs: 5_000 });
    clients.push(client);
    await expect(probeVm(client)).resolves.toMatchObject({ strategies: ['cpr-transfer', 'plain'] });
    expect(peer.scriptErrors).toEqual([]);
  });

  it('a refused transferable query fails the probe with the QmpError, not a silent empty list', async () => {
    const { caps } = await probeFake({
      schema: dialectSchema('backend-transfer-list'),
      refuse: ['query-backend-transfer-support'],
    });
    await expect(caps).rejects.toBeInstanceOf(QmpError);
  });

  it('a transferable answer of the wrong shape fails with a ZodError', async () => {
    const { caps } = await probeFake({
      schema: dialectSchema('backend-transfer-list'),
      transferSupport: [{ id: 'net0' }],
    });
    await expect(caps).rejects.toBeInstanceOf(ZodError);
  });

  it('machineFromQomType strips the -machine suffix only', () => {
    expect(machineFromQomType('pc-i440fx-7.2-machine')).toBe('pc-i440fx-7.2');
    expect(machineFromQomType('pc-q35-10.0-machine')).toBe('pc-q35-10.0');
    expect(machineFromQomType('none-machine')).toBe('none');
    expect(machineFromQomType('x-machine-type')).toBe('x-machine-type');
  });
});
