// The QEMU simulator, exercised as the product will: real processes exec'd through the launcher, real
// UNIX sockets, QMP spoken raw. Plus many simulated VMs in this one process for fleet-scale use.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CommandLineError, SimulatedQemu, launchSimulatedQemu } from '../../infra/simulator';
import { DIALECTS, DialectName } from '../../infra/simulator/dialects';
import { backendOwner, readLedger, readLedgerEvents, runningIntervals } from '../../infra/simulator/ledger';
import { RawQmp } from '../../infra/simulator/raw-qmp';
import { loadBaseSchema, SchemaChecker, servedSchema, ServedSchema } from '../../infra/simulator/schema';
import { killQemusUnder } from '../helpers/cleanup';
import { makeTmpDir, TmpDir } from '../helpers/tmp';
import {
  buildSimulator,
  InProcessSim,
  startInProcess,
  readCounter,
  reap,
  RunningSim,
  runSim,
  sleep,
  spawnSim,
  startSim,
  until,
  vmArgv,
  writeBootImage,
} from './harness';

let tmp: TmpDir;
let dir: string;
let seq = 0;
const procs: Array<RunningSim | InProcessSim> = [];
const FAST = ['--sim-ram-rate-mbps', '8000'];

beforeAll(() => {
  buildSimulator();
  tmp = makeTmpDir('qsim');
  dir = tmp.path;
  writeBootImage(path.join(dir, 'boot.img'));
});
afterEach(() => reap(procs.splice(0)));

async function startHere(spec: Parameters<typeof startInProcess>[0]): Promise<InProcessSim> {
  const s = await startInProcess(spec);
  procs.push(s);
  return s;
}
afterAll(() => {
  // A daemonized simulator (-daemonize) is no child of ours: one a failed test left running goes here.
  killQemusUnder(dir);
  tmp.cleanup();
});

/** A fresh ledger folder and name prefix per test. */
function scope(): { state: string; tag: string } {
  seq++;
  return { state: path.join(dir, `st${seq}`), tag: `t${seq}` };
}

async function start(spec: Parameters<typeof startSim>[0]): Promise<RunningSim> {
  const s = await startSim(spec);
  procs.push(s);
  return s;
}

async function enableEvents(...qs: RawQmp[]): Promise<void> {
  for (const q of qs)
    await q.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
}

const migrationDone = (q: RawQmp, timeoutMs = 5000) =>
  q.waitEvent('MIGRATION', (d) => ['completed', 'failed', 'cancelled'].includes(String(d.status)), timeoutMs);

const describeType = (s: ServedSchema, t: string | undefined): string | undefined => {
  const e = t === undefined ? undefined : s.get(t);
  if (!e) return undefined;
  if (e['meta-type'] === 'array') return `[${describeType(s, e['element-type'])}]`;
  return e['meta-type'] === 'builtin' ? e.name : e['meta-type'];
};

describe('schema served per dialect', () => {
  const schemaOf = (d: DialectName, cpr = true) => servedSchema({ base: '10.0.2', dialect: DIALECTS[d], cpr });

  test('none is the real 10.0.2 dump, unchanged', () => {
    expect(schemaOf('none').entries).toEqual(loadBaseSchema('10.0.2'));
    expect(schemaOf('none').migModes()).toContain('cpr-transfer');
    expect(schemaOf('none', false).migModes()).toEqual(['normal', 'cpr-reboot']);
  });

  test('each dialect shows its shape, in SchemaInfo format', () => {
    const param = (s: ServedSchema, name: string) => ({
      set: describeType(s, s.member(s.migrateSetParametersType(), name)?.type),
      query: describeType(s, s.member(s.migrationParametersType(), name)?.type),
    });
    const bool = schemaOf('backend-transfer-bool');
    expect(param(bool, 'backend-transfer')).toEqual({ set: 'bool', query: 'bool' });
    expect(bool.member(bool.migrateSetParametersType(), 'backend-transfer')).toEqual({
      name: 'backend-transfer',
      default: null,
      type: 'bool',
      features: ['unstable'],
    });
    expect(bool.hasCommand('query-backend-transfer-support')).toBe(false);

    const list = schemaOf('backend-transfer-list');
    expect(param(list, 'backend-transfer')).toEqual({ set: '[str]', query: '[str]' });
    const support = list.get('query-backend-transfer-support');
    expect(support?.['meta-type']).toBe('command');
    const elem = list.get(list.get(support?.['ret-type'] as string)?.['element-type'] as string);
    expect(elem).toMatchObject({ 'meta-type': 'object', members: [{ name: 'path', type: 'str' }] });
    expect(elem?.name).toMatch(/^\d+$/);

    const local = schemaOf('local');
    expect(param(local, 'local')).toEqual({ set: 'bool', query: 'bool' });
    const tap = local.variantType(local.netdevUnion(), 'tap') as string;
    expect(local.member(tap, 'x-permit-local-migration')?.type).toBe('bool');
    expect(schemaOf('none').member(tap, 'x-permit-local-migration')).toBeUndefined();
    for (const d of ['none', 'backend-transfer-bool', 'backend-transfer-list'] as const) {
      expect(schemaOf(d).member(schemaOf(d).migrateSetParametersType(), 'local')).toBeUndefined();
    }
  });

  test('the 7.2 dump is served for versions before 10.0', () => {
    const s = servedSchema({ base: '7.2', dialect: DIALECTS.none, cpr: false });
    expect(s.entries).toEqual(loadBaseSchema('7.2'));
    expect(s.migModes()).toEqual([]);
    expect(s.member(s.argType('migrate'), 'channels')).toBeUndefined();
  });
});

describe('command line', () => {
  const bad = (argv: string[]): string => {
    try {
      new SimulatedQemu(argv, { stderr: () => undefined });
    } catch (e) {
      if (e instanceof CommandLineError) return e.message;
      throw e;
    }
    throw new Error(`accepted: ${argv.join(' ')}`);
  };

  test('errors read like QEMU and exit 1', async () => {
    const [r, m, s] = await Promise.all([
      runSim(['-machine', 'none', '-foo']),
      runSim(['-m']),
      runSim(['--sim-dialect', 'bogus', '-machine', 'none']),
    ]);
    expect(r).toEqual({ code: 1, stderr: 'qemu-system-x86_64: -foo: invalid option\n' });
    expect(m).toEqual({ code: 1, stderr: 'qemu-system-x86_64: -m: requires an argument\n' });
    expect(s.code).toBe(1);
    expect(s.stderr).toMatch(/^qemu-system-x86_64: --sim-dialect bogus: unknown dialect/);
  });

  test('option values are checked like QEMU checks them', () => {
    expect(bad(['-netdev', 'tap,id=t0,ifname=x,scrpt=no'])).toBe(
      "-netdev tap,id=t0,ifname=x,scrpt=no: Invalid parameter 'scrpt'",
    );
    expect(bad(['-netdev', 'bogus,id=t0'])).toBe("-netdev bogus,id=t0: Parameter 'type' does not accept value 'bogus'");
    expect(bad(['-netdev', 'tap,id=t0,vnet_hdr=maybe'])).toBe(
      "-netdev tap,id=t0,vnet_hdr=maybe: Parameter 'vnet_hdr' expects 'on' or 'off'",
    );
    expect(bad(['-object', 'memory-backend-memfd,size=64M'])).toBe(
      "-object memory-backend-memfd,size=64M: Parameter 'id' is missing",
    );
    expect(bad(['-object', 'memory-backend-memfd,id=r,size=abc'])).toBe(
      "-object memory-backend-memfd,id=r,size=abc: Parameter 'size' expects a size value",
    );
    expect(bad(['-machine', 'pc-i440fx-99.0'])).toBe(
      'unsupported machine type: "pc-i440fx-99.0"\nUse -machine help to list supported machines',
    );
    expect(bad(['-machine', 'pc-i440fx-7.2,foo=bar'])).toBe("Property 'pc-i440fx-7.2-machine.foo' not found");
    expect(bad(['-m', '64', '-machine', 'pc,memory-backend=r', '-object', 'memory-backend-memfd,id=r,size=128M'])).toBe(
      'Machine memory size does not match the size of the memory backend',
    );
    expect(bad(['-machine', 'pc,memory-backend=nope'])).toBe("Memory backend 'nope' not found");
    expect(bad(['-device', 'nosuchdev'])).toBe("-device nosuchdev: 'nosuchdev' is not a valid device model name");
    expect(bad(['-device', 'virtio-net-pci,netdev=nope'])).toBe(
      "-device virtio-net-pci,netdev=nope: Property 'virtio-net-device.netdev' can't find value 'nope'",
    );
    expect(bad(['-netdev', 'user,id=n', '-netdev', 'user,id=n'])).toBe(
      "-netdev user,id=n: Duplicate ID 'n' for netdev",
    );
    expect(bad(['-drive', 'file=/nonexist.img,format=raw,if=ide'])).toBe(
      "-drive file=/nonexist.img,format=raw,if=ide: Could not open '/nonexist.img': No such file or directory",
    );
    expect(bad(['-netdev', 'vhost-user,id=v0,chardev=nochr'])).toBe(
      '-netdev vhost-user,id=v0,chardev=nochr: chardev "nochr" not found',
    );
    expect(bad(['-incoming', 'bogus:'])).toBe('-incoming bogus:: unknown migration protocol: bogus:');
    expect(bad(['-machine', 'none', '--sim-cpr'])).toBe('--sim-cpr: simulator options must come before QEMU options');
    expect(bad(['--sim-fault', 'active:explode'])).toMatch(/^--sim-fault active:explode: expected PHASE:ACTION/);
  });

  test('dialect-specific options exist only in their dialect', () => {
    expect(bad(['-netdev', 'tap,id=t0,x-permit-local-migration=on'])).toBe(
      "-netdev tap,id=t0,x-permit-local-migration=on: Invalid parameter 'x-permit-local-migration'",
    );
    expect(
      () => new SimulatedQemu(['--sim-dialect', 'local', '-netdev', 'tap,id=t0,x-permit-local-migration=on']),
    ).not.toThrow();
    expect(bad(['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,backend-transfer=on'])).toBe(
      "-device virtio-net-pci,netdev=n0,backend-transfer=on: Property 'virtio-net-pci.backend-transfer' not found",
    );
    const vm = new SimulatedQemu([
      '--sim-dialect',
      'backend-transfer-bool',
      '-machine',
      'pc-i440fx-7.2',
      '-netdev',
      'user,id=n0',
      '-device',
      'virtio-net-pci,netdev=n0,id=nic0,backend-transfer=on',
      '-netdev',
      'user,id=n1',
      '-device',
      'virtio-net-pci,netdev=n1,id=nic1',
    ]);
    // v8's property is on by default, except on machine types before 10.2 (hw_compat_10_1).
    expect(vm.devices.map((d) => d.props['backend-transfer'])).toEqual([true, false]);
  });

  test('QEMU syntax: implied keys, ",," escapes, sizes, legacy -qmp, JSON -incoming', () => {
    const vm = new SimulatedQemu([
      '--sim-version',
      '10.0.2',
      '-M',
      'pc',
      '-m',
      'size=48M',
      '-name',
      'my,,vm',
      '-qmp',
      'unix:/tmp/x.sock,server,nowait',
      '-incoming',
      '{"channel-type":"cpr","addr":{"transport":"socket","type":"unix","path":"/tmp/c.sock"}}',
      '-incoming',
      'unix:/tmp/m.sock',
      '-smp',
      '2',
      '-S',
    ]);
    expect(vm.machineType).toBe('pc-i440fx-10.0');
    expect(vm.memBytes).toBe(48 * 2 ** 20);
    expect(vm.cfg.name).toBe('my,vm');
    expect(vm.cfg.monitors).toEqual([{ path: '/tmp/x.sock', wait: false }]);
    expect(vm.cfg.incoming.map((i) => i.kind)).toEqual(['cpr', 'main']);
    expect(vm.runState).toBe('inmigrate');
  });
});

describe('QMP like QEMU', () => {
  test('greeting, negotiation, errors, replies, events on the wire', async () => {
    const { tag } = scope();
    const vm = await start({ dir, name: `${tag}a`, sim: ['--sim-version', '10.1.50'], extra: ['-S'] });
    const q = vm.qmp;
    expect(q.greeting).toEqual({
      QMP: {
        version: { qemu: { micro: 50, minor: 1, major: 10 }, package: expect.any(String) },
        capabilities: ['oob'],
      },
    });
    // A second, raw connection: one client at a time, like QEMU's chardev. It is greeted when the first leaves.
    const raw = await new Promise<import('node:net').Socket>((resolve) => {
      const s = require('node:net').connect(vm.qmpPath, () => resolve(s));
    });
    let rawText = '';
    raw.setEncoding('utf8');
    raw.on('data', (d: string) => (rawText += d));
    await sleep(100);
    expect(rawText).toBe('');
    q.close();
    await until(
      () => rawText,
      (t) => t.includes('\r\n'),
    );
    expect(rawText).toMatch(
      /^\{"QMP": \{"version": \{"qemu": \{"micro": 50, "minor": 1, "major": 10\}, "package": ".*"\}, "capabilities": \["oob"\]\}\}\r\n$/,
    );
    rawText = '';
    raw.write('{"execute":"query-status","id":5}\n');
    await until(
      () => rawText,
      (t) => t.endsWith('\r\n'),
    );
    expect(rawText).toBe(
      `{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}, "id": 5}\r\n`,
    );
    rawText = '';
    // Two commands in one write, split across no newline: QEMU's JSON streamer copes.
    raw.write('{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}{"execute":"query-status","id":"x"}');
    await until(
      () => rawText,
      (t) => t.split('\r\n').length === 3,
    );
    expect(rawText).toBe('{"return": {}}\r\n{"return": {"status": "prelaunch", "running": false}, "id": "x"}\r\n');
    raw.destroy();

    const c = await RawQmp.connect(vm.qmpPath);
    const err = async (name: string, args?: Record<string, unknown>) => (await c.execute(name, args)).error;
    expect(await err('qmp_capabilities')).toEqual({
      class: 'CommandNotFound',
      desc: 'Capabilities negotiation is already complete, command ignored',
    });
    expect(await err('nosuch')).toEqual({ class: 'CommandNotFound', desc: 'The command nosuch has not been found' });
    expect(await err('query-status', { a: 1 })).toEqual({ class: 'GenericError', desc: "Parameter 'a' is unexpected" });
    expect(await err('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: 1 }] })).toEqual({
      class: 'GenericError',
      desc: "Invalid parameter type for 'capabilities[0].state', expected: boolean",
    });
    expect(await err('migrate-set-capabilities', { capabilities: [{ capability: 'eventz', state: true }] })).toEqual({
      class: 'GenericError',
      desc: "Parameter 'capability' does not accept value 'eventz'",
    });
    expect(await err('migrate-set-capabilities', { capabilities: [{ state: true }] })).toEqual({
      class: 'GenericError',
      desc: "Parameter 'capabilities[0].capability' is missing",
    });
    expect(await err('migrate-set-parameters', { 'backend-transfer': true })).toEqual({
      class: 'GenericError',
      desc: "Parameter 'backend-transfer' is unexpected",
    });
    expect(await err('migrate', {})).toEqual({
      class: 'GenericError',
      desc: "need either 'uri' or 'channels' argument",
    });
    expect(await err('qom-get', { path: '/nope', property: 'type' })).toEqual({
      class: 'DeviceNotFound',
      desc: "Device '/nope' not found",
    });
    expect(await err('qom-get', { path: '/machine', property: 'nope' })).toEqual({
      class: 'GenericError',
      desc: "Property 'pc-i440fx-7.2-machine.nope' not found",
    });

    expect(await c.cmd('query-status')).toEqual({ status: 'prelaunch', running: false });
    expect(await c.cmd('query-name')).toEqual({ name: `${tag}a` });
    expect(await c.cmd('qom-get', { path: '/machine', property: 'type' })).toBe('pc-i440fx-7.2-machine');
    expect(await c.cmd('qom-get', { path: '/machine', property: 'memory-backend' })).toBe('/objects/ram0');
    expect(await c.cmd('qom-get', { path: '/machine', property: 'aux-ram-share' })).toBe(true);
    expect(await c.cmd('qom-get', { path: 'ram0', property: 'type' })).toBe('memory-backend-memfd');
    expect(await c.cmd('qom-get', { path: '/objects/ram0', property: 'share' })).toBe(true);
    expect(await c.cmd('qom-get', { path: '/objects/ram0', property: 'size' })).toBe(32 * 2 ** 20);
    expect(await c.cmd('human-monitor-command', { 'command-line': 'info status' })).toBe(
      'VM status: paused (prelaunch)\r\n',
    );
    expect(await c.cmd('human-monitor-command', { 'command-line': 'xyz' })).toBe("unknown command: 'xyz'\r\n");

    // The guest counter: frozen before cont, rising after; the HMP output is QEMU's.
    expect(await readCounter(c)).toBe(0);
    await c.cmd('cont');
    const resume = await c.waitEvent('RESUME');
    expect(resume.timestamp).toEqual({ seconds: expect.any(Number), microseconds: expect.any(Number) });
    const c1 = await readCounter(c);
    await sleep(30);
    const c2 = await readCounter(c);
    expect(c2).toBeGreaterThan(c1);
    expect(await c.cmd('human-monitor-command', { 'command-line': 'x /2wx 0x7e00' })).toMatch(
      /^0000000000007e00: 0x[0-9a-f]{8} 0x00000000\r\n$/,
    );
    await c.cmd('stop');
    await c.waitEvent('STOP');
    const frozen = await readCounter(c);
    await sleep(20);
    expect(await readCounter(c)).toBe(frozen);

    // quit: SHUTDOWN, then the reply, then the process ends with status 0.
    const reply = c.execute('quit');
    expect((await reply).return).toEqual({});
    expect(c.events.map((e) => e.event)).toContain('SHUTDOWN');
    expect(c.events.find((e) => e.event === 'SHUTDOWN')?.data).toEqual({ guest: false, reason: 'host-qmp-quit' });
    expect(await vm.exited).toEqual({ code: 0, signal: null });
  });

  test('replies conform to the schema the simulator serves', async () => {
    const { tag } = scope();
    const vm = await startHere({
      dir,
      name: `${tag}s`,
      sim: ['--sim-dialect', 'backend-transfer-list'],
      extra: [
        '-netdev',
        `tap,id=net0,ifname=${tag}s0,script=no,downscript=no`,
        '-device',
        'virtio-net-pci,netdev=net0,id=nic0',
      ],
    });
    const schema = servedSchema({ base: '10.0.2', dialect: DIALECTS['backend-transfer-list'], cpr: true });
    const checker = new SchemaChecker(schema);
    const served = await vm.qmp.cmd<unknown[]>('query-qmp-schema');
    expect(served).toEqual(schema.entries);
    for (const cmd of [
      'query-version',
      'query-status',
      'query-name',
      'query-migrate',
      'query-migrate-parameters',
      'query-migrate-capabilities',
      'query-backend-transfer-support',
      'query-kvm',
    ]) {
      const ret = await vm.qmp.cmd(cmd);
      expect([cmd, checker.checkValue(schema.retType(cmd), ret)]).toEqual([cmd, undefined]);
    }
    expect(await vm.qmp.cmd('query-backend-transfer-support')).toEqual([
      { path: '/machine/peripheral/nic0/virtio-backend' },
    ]);
    expect(await vm.qmp.cmd('qom-list', { path: '/machine/peripheral' })).toEqual([
      { name: 'type', type: 'string' },
      { name: 'nic0', type: 'child<virtio-net-pci>' },
    ]);
    expect(await vm.qmp.cmd('qom-get', { path: '/machine/peripheral/nic0/virtio-backend', property: 'type' })).toBe(
      'virtio-net-device',
    );
    expect(await vm.qmp.cmd('qom-get', { path: '/machine/peripheral/nic0', property: 'mac' })).toBe(
      '52:54:00:12:34:56',
    );
    expect(await vm.qmp.cmd('qom-get', { path: '/machine/peripheral/nic0', property: 'netdev' })).toBe('net0');
    const caps = await vm.qmp.cmd<Array<{ capability: string }>>('query-migrate-capabilities');
    expect(caps.map((c) => c.capability)).toContain('x-ignore-shared');
  });
});

// ---------------------------------------------------------------------------------------------------------
// Migration in each dialect. Source: net0 (to hand over where the dialect can) and net1 (re-created on the
// destination under a new name, as the change-one-backend use case). Expected owners afterwards:
// transferred taps -> destination; the others -> source (until it quits) and the new names -> destination.

interface DialectCase {
  dialect: DialectName;
  srcNet0: (tag: string) => string;
  dstNet0: (tag: string) => string;
  srcDev0: string;
  configure: (q: RawQmp, transfer: string[]) => Promise<void>;
  transfers: boolean;
}

const tapOpts = 'script=no,downscript=no';
const CASES: DialectCase[] = [
  {
    dialect: 'none',
    srcNet0: (t) => `tap,id=net0,ifname=${t}s0,${tapOpts}`,
    dstNet0: (t) => `tap,id=net0,ifname=${t}d0,${tapOpts}`,
    srcDev0: 'virtio-net-pci,netdev=net0,id=nic0',
    configure: async () => undefined,
    transfers: false,
  },
  {
    dialect: 'backend-transfer-bool',
    srcNet0: (t) => `tap,id=net0,ifname=${t}s0,${tapOpts}`,
    dstNet0: (t) => `tap,id=net0,ifname=${t}s0,${tapOpts}`,
    srcDev0: 'virtio-net-pci,netdev=net0,id=nic0,backend-transfer=on',
    configure: async (q) => void (await q.cmd('migrate-set-parameters', { 'backend-transfer': true })),
    transfers: true,
  },
  {
    dialect: 'backend-transfer-list',
    srcNet0: (t) => `tap,id=net0,ifname=${t}s0,${tapOpts}`,
    dstNet0: (t) => `tap,id=net0,ifname=${t}s0,${tapOpts}`,
    srcDev0: 'virtio-net-pci,netdev=net0,id=nic0',
    configure: async (q, transfer) => void (await q.cmd('migrate-set-parameters', { 'backend-transfer': transfer })),
    transfers: true,
  },
  {
    dialect: 'local',
    srcNet0: (t) => `tap,id=net0,ifname=${t}s0,${tapOpts},x-permit-local-migration=on`,
    // On the destination the tap is added without ifname: its fd comes from the stream.
    dstNet0: () => `tap,id=net0,${tapOpts},x-permit-local-migration=on`,
    srcDev0: 'virtio-net-pci,netdev=net0,id=nic0',
    configure: async (q) => void (await q.cmd('migrate-set-parameters', { local: true })),
    transfers: true,
  },
];

describe('migration between two simulator processes', () => {
  test.each(CASES)('$dialect: counter carries over, backends end with the right owners', async (c) => {
    const { state, tag } = scope();
    const sim = ['--sim-dialect', c.dialect, '--sim-state-dir', state, ...FAST];
    const [src, dst] = await Promise.all([
      start({
        dir,
        name: `${tag}src`,
        sim,
        extra: [
          '-netdev',
          c.srcNet0(tag),
          '-device',
          c.srcDev0,
          '-netdev',
          `tap,id=net1,ifname=${tag}s1,${tapOpts}`,
          '-device',
          'virtio-net-pci,netdev=net1,id=nic1',
        ],
      }),
      start({ dir, name: `${tag}dst`, sim, extra: ['-S', '-incoming', 'defer'] }),
    ]);
    expect(await dst.qmp.cmd('query-status')).toEqual({ status: 'inmigrate', running: false });
    // Hotplug before incoming, as the product configures the destination.
    const dev0 = c.srcDev0.replace(/^virtio-net-pci,/, '').split(',');
    const devArgs = Object.fromEntries(dev0.map((kv) => kv.split('=')).map(([k, v]) => [k, v === 'on' ? true : v]));
    const netdevArgs = (spec: string) =>
      Object.fromEntries(
        spec
          .split(',')
          .slice(1)
          .map((kv) => kv.split('='))
          .map(([k, v]) => [k, v === 'on' ? true : v]),
      );
    await dst.qmp.cmd('netdev_add', { type: 'tap', ...netdevArgs(c.dstNet0(tag)) });
    await dst.qmp.cmd('device_add', { driver: 'virtio-net-pci', ...devArgs });
    await dst.qmp.cmd('netdev_add', { type: 'tap', id: 'net1', ifname: `${tag}d1`, script: 'no', downscript: 'no' });
    await dst.qmp.cmd('device_add', { driver: 'virtio-net-pci', netdev: 'net1', id: 'nic1' });

    // What to hand over: Daniel's recipe where the dialect can say (intersection of both sides).
    let transfer: string[] = [];
    if (c.dialect === 'backend-transfer-list') {
      const s = await src.qmp.cmd<Array<{ path: string }>>('query-backend-transfer-support');
      const d = await dst.qmp.cmd<Array<{ path: string }>>('query-backend-transfer-support');
      transfer = s.map((x) => x.path).filter((p) => d.some((y) => y.path === p) && !p.includes('/nic1/'));
      expect(transfer).toEqual(['/machine/peripheral/nic0/virtio-backend']);
    }
    await enableEvents(src.qmp, dst.qmp);
    await c.configure(src.qmp, transfer);
    await c.configure(dst.qmp, transfer);

    const before = await readCounter(src.qmp);
    const migSock = path.join(dir, `${tag}.mig`);
    await dst.qmp.cmd('migrate-incoming', { uri: `unix:${migSock}` });
    await src.qmp.cmd('migrate', { uri: `unix:${migSock}` });
    const done = await migrationDone(src.qmp);
    expect(done.data).toEqual({ status: 'completed' });
    await dst.qmp.waitEvent('MIGRATION', (d) => d.status === 'completed');

    const statuses = (q: RawQmp) => q.events.filter((e) => e.event === 'MIGRATION').map((e) => e.data?.status);
    expect(statuses(src.qmp)).toEqual(['setup', 'active', 'completed']);
    expect(statuses(dst.qmp)).toEqual(['setup', 'active', 'completed']);
    expect(src.qmp.events.filter((e) => e.event === 'STOP')).toHaveLength(1);
    expect(await src.qmp.cmd('query-status')).toEqual({ status: 'postmigrate', running: false });
    expect(await dst.qmp.cmd('query-status')).toEqual({ status: 'paused', running: false });
    const info = await src.qmp.cmd<Record<string, unknown>>('query-migrate');
    expect(info).toMatchObject({
      status: 'completed',
      'setup-time': expect.any(Number),
      downtime: expect.any(Number),
      'total-time': expect.any(Number),
    });
    expect(info.ram).toMatchObject({ total: 32 * 2 ** 20 + 794624, remaining: 0 });

    // The destination continues the guest from the source's state.
    const landed = await readCounter(dst.qmp);
    expect(landed).toBeGreaterThan(before);
    await dst.qmp.cmd('cont');
    await sleep(30);
    expect(await readCounter(dst.qmp)).toBeGreaterThan(landed);

    // Ownership, from the ledger.
    const owners = readLedger(state).backends;
    const ownerOf = (ifname: string) => owners[`tap:${ifname}`]?.owner.pid;
    const srcPid = src.proc.pid;
    const dstPid = dst.proc.pid;
    expect(ownerOf(`${tag}s0`)).toBe(c.transfers ? dstPid : srcPid);
    expect(ownerOf(`${tag}s1`)).toBe(srcPid);
    expect(ownerOf(`${tag}d1`)).toBe(dstPid);
    if (!c.transfers) expect(ownerOf(`${tag}d0`)).toBe(dstPid);
    const events = readLedgerEvents(state);
    const moved = events.filter((e) => e.event === 'backend-transfer-in').map((e) => e.backend);
    expect(moved).toEqual(c.transfers ? [`tap:${tag}s0`] : []);

    // The source quits: what it still held is free; what moved stays with the destination.
    await src.qmp.cmd('quit');
    await src.exited;
    expect(backendOwner(state, `tap:${tag}s1`)).toBeUndefined();
    expect(backendOwner(state, `tap:${tag}s0`)?.pid).toBe(c.transfers ? dstPid : undefined);
    // The guest ran in one process at a time.
    const runs = runningIntervals(events).filter((r) => r.vm?.startsWith(tag));
    for (const a of runs) for (const b of runs) if (a !== b) expect(a.to <= b.from || b.to <= a.from).toBe(true);
  });

  test('a destination re-creating a TAP a live source owns fails with EBUSY, in every dialect', async () => {
    const { state, tag } = scope();
    // Upstream: the tap is opened when the netdev is created.
    const src = await start({
      dir,
      name: `${tag}src`,
      sim: ['--sim-state-dir', state],
      extra: ['-netdev', `tap,id=net0,ifname=${tag}s0,${tapOpts}`],
    });
    const { argv } = vmArgv({
      dir,
      name: `${tag}dup`,
      sim: ['--sim-state-dir', state],
      extra: ['-netdev', `tap,id=net0,ifname=${tag}s0,${tapOpts}`],
    });
    const r = await runSim(argv);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `qemu-system-x86_64: -netdev tap,id=net0,ifname=${tag}s0,${tapOpts}: could not configure /dev/net/tun (${tag}s0): Device or resource busy\n`,
    );
    const hot = await src.qmp.execute('netdev_add', { type: 'tap', id: 'net9', ifname: `${tag}s0` });
    expect(hot.error).toBeUndefined(); // the owner itself may open it again (same process)

    // A transfer dialect defers opening on the destination; a backend not handed over is opened at the end
    // of the load, and fails there while the source lives: the incoming migration fails, the source runs on.
    const sim = ['--sim-dialect', 'backend-transfer-bool', '--sim-state-dir', state, ...FAST];
    const [bsrc, bdst] = await Promise.all([
      start({
        dir,
        name: `${tag}bs`,
        sim,
        extra: [
          '-netdev',
          `tap,id=net0,ifname=${tag}b0,${tapOpts}`,
          '-device',
          'virtio-net-pci,netdev=net0,id=nic0,backend-transfer=off',
        ],
      }),
      start({
        dir,
        name: `${tag}bd`,
        sim,
        extra: [
          '-netdev',
          `tap,id=net0,ifname=${tag}b0,${tapOpts}`,
          '-device',
          'virtio-net-pci,netdev=net0,id=nic0,backend-transfer=off',
          '-S',
          '-incoming',
          'defer',
        ],
      }),
    ]);
    await enableEvents(bsrc.qmp, bdst.qmp);
    const mig = path.join(dir, `${tag}.mig`);
    await bdst.qmp.cmd('migrate-incoming', { uri: `unix:${mig}` });
    await bsrc.qmp.cmd('migrate', { uri: `unix:${mig}` });
    expect((await migrationDone(bsrc.qmp)).data).toEqual({ status: 'failed' });
    expect(await bdst.exited).toEqual({ code: 1, signal: null });
    expect(bdst.stderr()).toContain(`could not configure /dev/net/tun (${tag}b0): Device or resource busy`);
    expect(await bsrc.qmp.cmd('query-status')).toEqual({ status: 'running', running: true });
    expect(await bsrc.qmp.cmd('query-migrate')).toEqual({
      status: 'failed',
      'error-desc': 'Unable to write to socket: Broken pipe',
    });
    expect(backendOwner(state, `tap:${tag}b0`)?.pid).toBe(bsrc.proc.pid);
  });

  test('machine type or devices that differ fail the load like QEMU', async () => {
    const { tag } = scope();
    const [src, dst, dst2] = await Promise.all([
      start({
        dir,
        name: `${tag}src`,
        sim: FAST,
        extra: ['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,id=nic0'],
      }),
      start({
        dir,
        name: `${tag}dst`,
        sim: FAST,
        machine: 'pc-i440fx-10.0',
        extra: ['-S', '-incoming', `unix:${dir}/${tag}.a`],
      }),
      start({ dir, name: `${tag}d2`, sim: FAST, extra: ['-S', '-incoming', `unix:${dir}/${tag}.b`] }),
    ]);
    await enableEvents(src.qmp);
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.a` });
    expect((await migrationDone(src.qmp)).data).toEqual({ status: 'failed' });
    expect(await dst.exited).toEqual({ code: 1, signal: null });
    expect(dst.stderr()).toBe(
      "qemu-system-x86_64: Machine type received is 'pc-i440fx-7.2' and local is 'pc-i440fx-10.0'\n" +
        'qemu-system-x86_64: load of migration failed: Invalid argument\n',
    );
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.b` });
    expect(await dst2.exited).toEqual({ code: 1, signal: null });
    expect(dst2.stderr()).toContain("Unknown savevm section or instance '0000:00:02.0/virtio-net' 0.");
    expect(await src.qmp.cmd('query-status')).toEqual({ status: 'running', running: true });
  });

  test('vhost-user backends move too (list dialect), by the path the destination reports', async () => {
    const { state, tag } = scope();
    const vhost = path.join(dir, `${tag}.vhost`);
    writeFileSync(vhost, ''); // the vhost-user server's socket (the simulator only checks it exists)
    const sim = ['--sim-dialect', 'backend-transfer-list', '--sim-state-dir', state, ...FAST];
    const net = [
      '-chardev',
      `socket,id=chr0,path=${vhost}`,
      '-netdev',
      'vhost-user,id=net0,chardev=chr0',
      '-device',
      'virtio-net-pci,netdev=net0,id=nic0',
    ];
    const [src, dst] = await Promise.all([
      startHere({ dir, name: `${tag}src`, sim, extra: net }),
      startHere({ dir, name: `${tag}dst`, sim, extra: [...net, '-S', '-incoming', `unix:${dir}/${tag}.mig`] }),
    ]);
    expect(backendOwner(state, `vhost-user:${vhost}`)?.instance).toBe(src.vm.owner.instance);
    const paths = (await dst.qmp.cmd<Array<{ path: string }>>('query-backend-transfer-support')).map((p) => p.path);
    expect(paths).toEqual(['/machine/peripheral/nic0/virtio-backend']);
    // An ID that names the proxy, not the virtio device, is accepted but transfers nothing (the seed's "vnet.1").
    await src.qmp.cmd('migrate-set-parameters', { 'backend-transfer': ['nic0'] });
    expect((await src.qmp.execute('migrate-set-parameters', { 'backend-transfer': ['nope'] })).error).toEqual({
      class: 'DeviceNotFound',
      desc: "Device 'nope' not found",
    });
    expect(await src.qmp.cmd('query-migrate-parameters')).toMatchObject({ 'backend-transfer': ['nic0'] });
    for (const q of [src.qmp, dst.qmp]) await q.cmd('migrate-set-parameters', { 'backend-transfer': paths });
    await enableEvents(src.qmp);
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.mig` });
    expect((await migrationDone(src.qmp)).data).toEqual({ status: 'completed' });
    expect(backendOwner(state, `vhost-user:${vhost}`)?.instance).toBe(dst.vm.owner.instance);
  });

  test('cpr-transfer: cpr channel first, the destination monitor appears only after migrate', async () => {
    const { tag } = scope();
    const src = await start({ dir, name: `${tag}src`, sim: ['--sim-version', '10.0.2'] });
    const main = path.join(dir, `${tag}.main`);
    const cpr = path.join(dir, `${tag}.cpr`);
    const { argv, qmp } = vmArgv({
      dir,
      name: `${tag}dst`,
      sim: ['--sim-version', '10.0.2'],
      extra: [
        '-S',
        '-incoming',
        `unix:${main}`,
        '-incoming',
        JSON.stringify({ 'channel-type': 'cpr', addr: { transport: 'socket', type: 'unix', path: cpr } }),
      ],
    });
    const dst = spawnSim(argv);
    procs.push({ ...dst, qmp: undefined as unknown as RawQmp, qmpPath: qmp });
    await until(
      () => existsSync(cpr),
      (x) => x,
    );
    await sleep(50);
    expect(existsSync(qmp)).toBe(false);

    await enableEvents(src.qmp);
    // Plain URI in cpr-transfer mode: refused, as QEMU does.
    await src.qmp.cmd('migrate-set-parameters', { mode: 'cpr-transfer' });
    expect((await src.qmp.execute('migrate', { uri: `unix:${main}` })).error?.desc).toBe(
      "missing 'cpr' migration channel",
    );
    const before = await readCounter(src.qmp);
    await src.qmp.cmd('migrate', {
      channels: [
        { 'channel-type': 'main', addr: { transport: 'socket', type: 'unix', path: main } },
        { 'channel-type': 'cpr', addr: { transport: 'socket', type: 'unix', path: cpr } },
      ],
    });
    const d = await RawQmp.connect(qmp);
    expect((await migrationDone(src.qmp)).data).toEqual({ status: 'completed' });
    const seen = src.qmp.events
      .filter((e) => ['MIGRATION', 'STOP'].includes(e.event as string))
      .map((e) => e.data?.status ?? e.event);
    expect(seen).toEqual(['setup', 'STOP', 'active', 'device', 'completed']);
    const info = await src.qmp.cmd<{ ram: { total: number } }>('query-migrate');
    expect(info.ram.total).toBe(0);
    await until(
      () => d.cmd<{ status: string }>('query-status'),
      (s) => s.status === 'paused',
    );
    expect(await readCounter(d)).toBeGreaterThanOrEqual(before);
    await d.cmd('cont');
    expect(await d.cmd('query-status')).toEqual({ status: 'running', running: true });
  });

  test('cpr-transfer needs shared fd-backed RAM and aux-ram-share', async () => {
    const vm = await launchSimulatedQemu(
      ['-machine', 'pc-i440fx-7.2', '-m', '32', '-qmp', `unix:${dir}/cprx.qmp,server=on,wait=off`],
      { stderr: () => undefined },
    );
    try {
      const q = await RawQmp.connect(`${dir}/cprx.qmp`);
      await q.cmd('migrate-set-parameters', { mode: 'cpr-transfer' });
      const channels = [
        { 'channel-type': 'main', addr: { transport: 'socket', type: 'unix', path: `${dir}/x.m` } },
        { 'channel-type': 'cpr', addr: { transport: 'socket', type: 'unix', path: `${dir}/x.c` } },
      ];
      expect((await q.execute('migrate', { channels })).error?.desc).toBe(
        'Memory region /rom@etc/acpi/rsdp is not compatible with CPR. share=on is required for memory-backend objects, and aux-ram-share=on is required.',
      );
      q.close();
    } finally {
      await vm.stop();
    }
  });

  test('migrate_cancel during active: cancelling -> cancelled, the source runs on, the destination exits', async () => {
    const { tag } = scope();
    const [src, dst] = await Promise.all([
      start({ dir, name: `${tag}src`, sim: ['--sim-ram-rate-mbps', '10'] }),
      start({ dir, name: `${tag}dst`, extra: ['-S', '-incoming', 'defer'] }),
    ]);
    await enableEvents(src.qmp, dst.qmp);
    await dst.qmp.cmd('migrate-incoming', { uri: `unix:${dir}/${tag}.mig` });
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.mig` });
    await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'active');
    await sleep(50);
    const mid = await src.qmp.cmd<{ status: string; ram: { transferred: number; remaining: number } }>('query-migrate');
    expect(mid.status).toBe('active');
    expect(mid.ram.transferred).toBeGreaterThan(0);
    expect(mid.ram.remaining).toBeGreaterThan(0);
    await src.qmp.cmd('migrate_cancel');
    await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'cancelled');
    const statuses = src.qmp.events.filter((e) => e.event === 'MIGRATION').map((e) => e.data?.status);
    expect(statuses).toEqual(['setup', 'active', 'cancelling', 'cancelled']);
    expect(await src.qmp.cmd('query-migrate')).toEqual({ status: 'cancelled' });
    expect(await src.qmp.cmd('query-status')).toEqual({ status: 'running', running: true });
    expect(await dst.exited).toEqual({ code: 1, signal: null });
    expect(dst.stderr()).toContain('load of migration failed');
  });
});

describe('faults', () => {
  test('crash: --sim-fault active:crash kills the source abruptly, no SHUTDOWN; its TAP is free again', async () => {
    const { state, tag } = scope();
    const [src, dst] = await Promise.all([
      start({
        dir,
        name: `${tag}src`,
        sim: ['--sim-state-dir', state, '--sim-fault', 'active:crash', ...FAST],
        extra: ['-netdev', `tap,id=net0,ifname=${tag}s0,${tapOpts}`],
      }),
      start({ dir, name: `${tag}dst`, sim: ['--sim-state-dir', state], extra: ['-S', '-incoming', 'defer'] }),
    ]);
    await dst.qmp.cmd('migrate-incoming', { uri: `unix:${dir}/${tag}.mig` });
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.mig` });
    expect(await src.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(src.qmp.events.map((e) => e.event)).not.toContain('SHUTDOWN');
    expect(await dst.exited).toEqual({ code: 1, signal: null });
    const events = readLedgerEvents(state).filter((e) => e.pid === src.proc.pid);
    expect(events.map((e) => e.event)).toEqual(expect.arrayContaining(['fault', 'crash']));
    expect(events.map((e) => e.event)).not.toContain('quit');
    expect(readLedger(state).backends[`tap:${tag}s0`]).toMatchObject({ owner: { pid: src.proc.pid }, alive: false });
    expect(backendOwner(state, `tap:${tag}s0`)).toBeUndefined();
  });

  test('crash on the destination (incoming:crash): the source fails and runs on', async () => {
    const { tag } = scope();
    const [src, dst] = await Promise.all([
      start({ dir, name: `${tag}src`, sim: FAST }),
      start({ dir, name: `${tag}dst`, extra: ['-S', '-incoming', 'defer'] }),
    ]);
    await enableEvents(src.qmp);
    await dst.qmp.cmd('x-sim-inject-fault', { phase: 'incoming', action: 'crash' });
    await dst.qmp.cmd('migrate-incoming', { uri: `unix:${dir}/${tag}.mig` });
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.mig` });
    expect((await migrationDone(src.qmp)).data).toEqual({ status: 'failed' });
    expect(await dst.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await src.qmp.cmd('query-status')).toEqual({ status: 'running', running: true });
  });

  test('hang: the monitor stops answering, the process stays alive', async () => {
    const { tag } = scope();
    const vm = await start({ dir, name: `${tag}h` });
    await vm.qmp.cmd('x-sim-inject-fault', { phase: 'qmp', action: 'hang' });
    await expect(vm.qmp.execute('query-status', undefined, 200)).rejects.toThrow(/no reply/);
    expect(vm.proc.exitCode).toBeNull();
    expect(() => process.kill(vm.proc.pid as number, 0)).not.toThrow();
    // A new client connects but is never greeted.
    await expect(RawQmp.connect(vm.qmpPath, { timeoutMs: 200 })).rejects.toThrow();
  });

  test('error: the next command of the phase gets an error; a migration fails in its phase', async () => {
    const { tag } = scope();
    const [src, dst] = await Promise.all([
      startHere({ dir, name: `${tag}src`, sim: ['--sim-fault', 'cont:error', ...FAST], extra: ['-S'] }),
      startHere({ dir, name: `${tag}dst`, extra: ['-S', '-incoming', `unix:${dir}/${tag}.mig`] }),
    ]);
    expect((await src.qmp.execute('cont')).error).toEqual({
      class: 'GenericError',
      desc: 'simulated fault: cont failed (cont:error)',
    });
    expect(await src.qmp.cmd('query-status')).toEqual({ status: 'prelaunch', running: false });
    expect((await src.qmp.execute('cont')).return).toEqual({});
    await src.qmp.cmd('x-sim-inject-fault', { phase: 'qmp', action: 'error' });
    expect((await src.qmp.execute('query-name')).error?.class).toBe('GenericError');
    expect(await src.qmp.cmd('query-name')).toEqual({ name: `${tag}src` });

    await enableEvents(src.qmp);
    await src.qmp.cmd('x-sim-inject-fault', { phase: 'device', action: 'error' });
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.mig` });
    expect((await migrationDone(src.qmp)).data).toEqual({ status: 'failed' });
    expect(await src.qmp.cmd('query-migrate')).toEqual({
      status: 'failed',
      'error-desc': 'simulated fault: migration failed in device (device:error)',
    });
    // The guest was stopped for the device phase; the failure resumes it.
    expect(src.qmp.events.map((e) => e.event)).toEqual(expect.arrayContaining(['STOP', 'RESUME']));
    expect(await src.qmp.cmd('query-status')).toEqual({ status: 'running', running: true });
    expect(await dst.vm.exited).toBe(1);
    expect(dst.stderr()).toBe(
      'qemu-system-x86_64: check_section_footer: Read section footer failed: -5\n' +
        'qemu-system-x86_64: load of migration failed: Input/output error\n',
    );
  });

  test('slow: no bytes move until the fault is cleared, then the migration completes', async () => {
    const { tag } = scope();
    const [src, dst] = await Promise.all([
      startHere({ dir, name: `${tag}src`, sim: ['--sim-fault', 'active:slow', '--sim-slow-ms', '300', ...FAST] }),
      startHere({ dir, name: `${tag}dst`, extra: ['-S', '-incoming', `unix:${dir}/${tag}.mig`] }),
    ]);
    await enableEvents(src.qmp);
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.mig` });
    await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'active');
    type Info = { status: string; ram: { remaining: number; transferred: number } };
    const a = await src.qmp.cmd<Info>('query-migrate');
    await sleep(150);
    const b = await src.qmp.cmd<Info>('query-migrate');
    expect(b.status).toBe('active');
    expect(b.ram.remaining).toBe(a.ram.remaining);
    expect(b.ram.transferred).toBe(a.ram.transferred);
    await src.qmp.cmd('x-sim-clear-faults');
    expect((await migrationDone(src.qmp)).data).toEqual({ status: 'completed' });
    expect(await dst.qmp.cmd('query-status')).toEqual({ status: 'paused', running: false });

    // slow on a command phase delays the reply.
    await src.qmp.cmd('x-sim-inject-fault', { phase: 'qmp', action: 'slow' });
    const t0 = Date.now();
    await src.qmp.cmd('query-status');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });
});

describe('faults at setup and device', () => {
  test('setup:error fails before anything moved; device:slow holds the guest stopped until cleared', async () => {
    const { tag } = scope();
    const [src, dst] = await Promise.all([
      startHere({ dir, name: `${tag}src`, sim: ['--sim-fault', 'setup:error', ...FAST] }),
      startHere({ dir, name: `${tag}dst`, extra: ['-S', '-incoming', `unix:${dir}/${tag}.mig`] }),
    ]);
    await enableEvents(src.qmp);
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.mig` });
    expect((await migrationDone(src.qmp)).data).toEqual({ status: 'failed' });
    expect(await src.qmp.cmd('query-migrate')).toEqual({
      status: 'failed',
      'error-desc': 'simulated fault: migration failed in setup (setup:error)',
    });
    expect(src.qmp.events.map((e) => e.event)).not.toContain('STOP');
    expect(await dst.qmp.cmd('query-status')).toEqual({ status: 'inmigrate', running: false });

    // A new attempt, with the device phase stalled: the source is stopped (finish-migrate) and stays so.
    src.qmp.events.length = 0;
    await src.qmp.cmd('x-sim-inject-fault', { phase: 'device', action: 'slow' });
    await src.qmp.cmd('migrate', { uri: `unix:${dir}/${tag}.mig` });
    await src.qmp.waitEvent('STOP');
    expect(await src.qmp.cmd('query-status')).toEqual({ status: 'finish-migrate', running: false });
    const frozen = await readCounter(src.qmp);
    await sleep(100);
    expect(await readCounter(src.qmp)).toBe(frozen);
    expect(await src.qmp.cmd<{ status: string }>('query-migrate')).toMatchObject({ status: 'active' });
    await src.qmp.cmd('x-sim-clear-faults', { phase: 'device' });
    expect((await migrationDone(src.qmp)).data).toEqual({ status: 'completed' });
    expect(await readCounter(dst.qmp)).toBe(frozen);
  });
});

describe('process behaviour', () => {
  test('-daemonize returns once up; -pidfile names the daemon; quit removes it', async () => {
    const { tag } = scope();
    const pidfile = path.join(dir, `${tag}.pid`);
    const { argv, qmp } = vmArgv({ dir, name: `${tag}d`, extra: ['-daemonize', '-pidfile', pidfile] });
    const r = await runSim(argv);
    expect(r).toEqual({ code: 0, stderr: '' });
    const pid = Number(readFileSync(pidfile, 'utf8').trim());
    expect(() => process.kill(pid, 0)).not.toThrow();
    const q = await RawQmp.connect(qmp);
    expect(await q.cmd('query-status')).toEqual({ status: 'running', running: true });
    await q.cmd('quit');
    await until(
      () => existsSync(pidfile),
      (x) => !x,
    );
    await until(
      () => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      },
      (alive) => !alive,
    );
  });

  test('SIGTERM: SHUTDOWN host-signal, exit 0, like QEMU', async () => {
    const { tag } = scope();
    const vm = await start({ dir, name: `${tag}t` });
    vm.proc.kill('SIGTERM');
    expect(await vm.exited).toEqual({ code: 0, signal: null });
    expect(vm.qmp.events.find((e) => e.event === 'SHUTDOWN')?.data).toEqual({ guest: false, reason: 'host-signal' });
    expect(vm.stderr()).toBe('qemu-system-x86_64: terminating on signal 15\n');
  });
});

describe('fleet scale, in one process', () => {
  test('hundreds of idle VMs hold no timers; concurrent migrations are recorded in the ledger', async () => {
    const { state, tag } = scope();
    const N = 300;
    const timersBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const vms: SimulatedQemu[] = [];
    for (let i = 0; i < N; i++) {
      const { argv } = vmArgv({
        dir,
        name: `${tag}v${i}`,
        sim: ['--sim-state-dir', state, '--sim-dialect', 'local', '--sim-ram-rate-mbps', '4000'],
        extra:
          i < N / 2
            ? [
                '-netdev',
                `tap,id=net0,ifname=${tag}x${i},${tapOpts},x-permit-local-migration=on`,
                '-device',
                'virtio-net-pci,netdev=net0,id=nic0',
              ]
            : [
                '-netdev',
                `tap,id=net0,${tapOpts},x-permit-local-migration=on`,
                '-device',
                'virtio-net-pci,netdev=net0,id=nic0',
                '-S',
                '-incoming',
                `unix:${dir}/${tag}m${i - N / 2}`,
              ],
      });
      vms.push(await launchSimulatedQemu(argv, { stderr: () => undefined }));
    }
    try {
      const timersIdle = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      expect(timersIdle - timersBefore).toBeLessThan(5);
      // 20 pairs migrate at once, driven over QMP.
      const pairs = Array.from({ length: 20 }, (_, i) => i);
      await Promise.all(
        pairs.map(async (i) => {
          const s = await RawQmp.connect(path.join(dir, `${tag}v${i}.qmp`));
          const d = await RawQmp.connect(path.join(dir, `${tag}v${i + N / 2}.qmp`));
          await enableEvents(s);
          await s.cmd('migrate-set-parameters', { local: true });
          await d.cmd('migrate-set-parameters', { local: true });
          await s.cmd('migrate', { uri: `unix:${dir}/${tag}m${i}` });
          expect((await migrationDone(s, 10_000)).data).toEqual({ status: 'completed' });
          await d.cmd('cont');
          s.close();
          d.close();
        }),
      );
      const ledger = readLedger(state);
      for (const i of pairs)
        expect(ledger.backends[`tap:${tag}x${i}`].owner.instance).toBe(vms[i + N / 2].owner.instance);
      // Concurrency, from the simulator's own records: intervals between setup and completed overlap.
      const mig = ledger.events.filter((e) => e.event === 'migration' && e.role === 'source');
      const spans = pairs.map((i) => {
        const inst = vms[i].owner.instance;
        const mine = mig.filter((e) => e.instance === inst);
        return { from: mine.find((e) => e.status === 'setup')!.t, to: mine.find((e) => e.status === 'completed')!.t };
      });
      const maxOverlap = Math.max(...spans.map((a) => spans.filter((b) => b.from < a.to && a.from < b.to).length));
      expect(maxOverlap).toBeGreaterThan(10);
    } finally {
      await Promise.all(vms.map((v) => v.stop()));
    }
  });
});
