// The simulator's fd handover semantics, as real QEMU 7.2 / 10.0.2 behave (texts taken from runs of both):
// a destination given a duplicate of the source's tap fd (`-netdev tap,fd=3`) holds the tap beside it, its
// single owner once the source quits; `memory-backend-file,mem-path=/proc/<pid>/fd/<n>` maps the source's own
// RAM; `x-ignore-shared` skips shared RAM (memfd only before 8.0), must match on both sides, and shared RAM
// streamed anyway overwrites the running source's pages.
import path from 'node:path';
import { launchSimulatedQemu, SimulatedQemu, type SimFd } from '../../infra/simulator';
import { backendOwner, readLedger, readLedgerEvents } from '../../infra/simulator/ledger';
import { RawQmp } from '../../infra/simulator/raw-qmp';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';
import { readCounter, sleep, writeBootImage } from './harness';

let tmp: TmpDir;
let dir: string;
let seq = 0;
/** Pids the simulated QEMUs are named by under /proc: far above any real pid. */
let nextPid = 4_000_000_000;
const running: Array<{ vm: SimulatedQemu; qmp?: RawQmp }> = [];

beforeAll(() => {
  tmp = makeTmpDir('qsho');
  dir = tmp.path;
  writeBootImage(path.join(dir, 'boot.img'));
});
afterEach(async () => {
  for (const r of running.splice(0)) {
    r.qmp?.close();
    await r.vm.stop();
  }
});
afterAll(() => tmp.cleanup());

interface Spec {
  name: string;
  version: string;
  mem?: string;
  /** The RAM object (id pc.ram); default a shared memfd of `mem`. */
  ram?: string;
  extra?: string[];
  state?: string;
  inheritedFds?: SimFd[];
}

function argvOf(s: Spec): { argv: string[]; qmp: string } {
  const mem = s.mem ?? '64M';
  const qmp = path.join(dir, `${s.name}.qmp`);
  return {
    qmp,
    argv: [
      ...['--sim-version', s.version, '--sim-ram-rate-mbps', '8000'],
      ...(s.state ? ['--sim-state-dir', s.state] : []),
      ...['-machine', 'pc-i440fx-7.2,memory-backend=pc.ram', '-m', mem],
      ...['-object', s.ram ?? `memory-backend-memfd,id=pc.ram,size=${mem},share=on`],
      ...['-name', `guest=${s.name}`, '-drive', `file=${path.join(dir, 'boot.img')},format=raw,if=ide,id=disk0`],
      ...['-display', 'none', '-nodefaults', '-no-user-config', '-accel', 'tcg'],
      ...['-qmp', `unix:${qmp},server=on,wait=off`],
      ...(s.extra ?? []),
    ],
  };
}

interface Sim {
  vm: SimulatedQemu;
  qmp: RawQmp;
  pid: number;
  stderr(): string;
}

async function launch(s: Spec): Promise<Sim> {
  const { argv, qmp } = argvOf(s);
  let err = '';
  const pid = nextPid++;
  const vm = await launchSimulatedQemu(argv, {
    stderr: (t) => void (err += t),
    pid,
    ...(s.inheritedFds ? { inheritedFds: s.inheritedFds } : {}),
  });
  const entry: { vm: SimulatedQemu; qmp?: RawQmp } = { vm };
  running.push(entry);
  entry.qmp = await RawQmp.connect(qmp);
  return { vm, qmp: entry.qmp, pid, stderr: () => err };
}

/** The startup error of a VM that must not start. */
async function refused(s: Spec): Promise<string> {
  const { argv } = argvOf(s);
  try {
    const vm = await launchSimulatedQemu(argv, { stderr: () => undefined, inheritedFds: s.inheritedFds ?? [] });
    running.push({ vm });
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`${s.name} started`);
}

function scope(): { state: string; tag: string } {
  seq++;
  return { state: path.join(dir, `st${seq}`), tag: `h${seq}` };
}

const tapFd = (vm: SimulatedQemu, ifname: string): number =>
  vm.heldFds().find((f) => f.kind === 'tap' && f.ifname === ifname)!.fd;
const ramFd = (vm: SimulatedQemu): number => vm.heldFds().find((f) => f.kind === 'ram')!.fd;
const tap = (ifname: string) => ['-netdev', `tap,id=net0,ifname=${ifname},script=no,downscript=no`];
const nic = ['-device', 'virtio-net-pci,netdev=net0,id=nic0'];

/** Configure x-ignore-shared on each side, migrate, wait for the source's end state. */
async function migrate(src: Sim, dst: Sim, caps: { src: boolean; dst: boolean }) {
  const set = (q: RawQmp, on: boolean) =>
    q.cmd('migrate-set-capabilities', {
      capabilities: [
        { capability: 'events', state: true },
        { capability: 'x-ignore-shared', state: on },
      ],
    });
  await set(src.qmp, caps.src);
  await set(dst.qmp, caps.dst);
  const sock = path.join(dir, `mig${seq}-${Math.random().toString(36).slice(2, 8)}`);
  await dst.qmp.cmd('migrate-incoming', { uri: `unix:${sock}` });
  await src.qmp.cmd('migrate', { uri: `unix:${sock}` });
  await src.qmp.waitEvent('MIGRATION', (d) => ['completed', 'failed'].includes(String(d.status)), 10_000);
  return src.qmp.cmd<{ status: string; 'error-desc'?: string; ram?: { total: number; transferred: number } }>(
    'query-migrate',
  );
}

/** A destination on `version` mapping the source's RAM through /proc, paused for an incoming migration. */
function sharedDestination(src: Sim, s: Omit<Spec, 'ram'> & { mem?: string }): Promise<Sim> {
  const mem = s.mem ?? '64M';
  return launch({
    ...s,
    ram: `memory-backend-file,id=pc.ram,size=${mem},mem-path=/proc/${src.pid}/fd/${ramFd(src.vm)},share=on`,
    extra: [...(s.extra ?? []), '-S', '-incoming', 'defer'],
  });
}

describe('tap fds handed over', () => {
  test('-netdev tap,fd= / fds= refuse the options QEMU refuses beside them, and fds that are no tap', async () => {
    const src = await launch({ name: 'fdsrc', version: '10.0.2', extra: tap('fdt0') });
    const dup = src.vm.dupFd(tapFd(src.vm, 'fdt0'))!;
    const ram = src.vm.dupFd(ramFd(src.vm))!;
    const base = { name: 'fddst', version: '10.0.2', inheritedFds: [dup, ram] };
    const withFd =
      'ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd=';
    for (const extra of ['ifname=x', 'script=no', 'downscript=no', 'vnet_hdr=on']) {
      const opt = `tap,id=net0,fd=3,${extra}`;
      expect(await refused({ ...base, extra: ['-netdev', opt] })).toBe(`-netdev ${opt}: ${withFd}`);
    }
    expect(await refused({ ...base, extra: ['-netdev', 'tap,id=net0,fds=3:4,downscript=no'] })).toBe(
      '-netdev tap,id=net0,fds=3:4,downscript=no: ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, and vhostfd= are invalid with fds=',
    );
    expect(await refused({ ...base, extra: ['-netdev', 'tap,id=net0,fd=9'] })).toBe(
      "-netdev tap,id=net0,fd=9: net0: Can't use file descriptor 9: Bad file descriptor",
    );
    expect(await refused({ ...base, extra: ['-netdev', 'tap,id=net0,fd=4'] })).toBe(
      '-netdev tap,id=net0,fd=4: Unable to query TUNGETIFF on FD 4: Inappropriate ioctl for device',
    );
  });

  test('the destination holds the tap beside the live source (no EBUSY) and owns it once the source quits', async () => {
    const { state, tag } = scope();
    const ifname = `${tag}t0`;
    const src = await launch({ name: `${tag}src`, version: '7.2.22', state, extra: [...tap(ifname), ...nic] });
    expect(backendOwner(state, `tap:${ifname}`)?.instance).toBe(src.vm.owner.instance);
    const taken = src.vm.dupFd(tapFd(src.vm, ifname))!;
    expect(taken).toMatchObject({ kind: 'tap', ifname, from: src.vm.owner });

    // A rollback: the destination ends before the source; the source keeps the tap.
    const early = await launch({
      name: `${tag}early`,
      version: '10.0.2',
      state,
      inheritedFds: [taken],
      extra: ['-netdev', 'tap,id=net0,fd=3', ...nic, '-S', '-incoming', 'defer'],
    });
    expect(readLedger(state).backends[`tap:${ifname}`]).toMatchObject({
      owner: { instance: src.vm.owner.instance },
      holders: [{ instance: early.vm.owner.instance }],
      alive: true,
    });
    await early.vm.stop();
    expect(readLedger(state).backends[`tap:${ifname}`]?.holders).toBeUndefined();
    expect(backendOwner(state, `tap:${ifname}`)?.instance).toBe(src.vm.owner.instance);

    const dst = await launch({
      name: `${tag}dst`,
      version: '10.0.2',
      state,
      inheritedFds: [taken],
      extra: ['-netdev', 'tap,id=net0,fd=3', ...nic, '-S', '-incoming', 'defer'],
    });
    // The destination shows the tap among its fds, as /proc/<pid>/fdinfo's iff: line would.
    expect(dst.vm.heldFds().filter((f) => f.kind === 'tap')).toEqual([expect.objectContaining({ fd: 3, ifname })]);
    // Opening it by name is still EBUSY for anybody else.
    expect(await refused({ name: `${tag}third`, version: '10.0.2', state, extra: tap(ifname) })).toBe(
      `-netdev tap,id=net0,ifname=${ifname},script=no,downscript=no: could not configure /dev/net/tun (${ifname}): Device or resource busy`,
    );
    const before = await readCounter(src.qmp);
    expect((await migrate(src, dst, { src: false, dst: false })).status).toBe('completed');
    await dst.qmp.cmd('cont');
    expect(await readCounter(dst.qmp)).toBeGreaterThan(before);
    await src.qmp.cmd('quit');
    await src.vm.exited;
    expect(readLedger(state).backends[`tap:${ifname}`]).toMatchObject({
      owner: { instance: dst.vm.owner.instance },
      via: 'fd',
      alive: true,
    });
    const events = readLedgerEvents(state).filter((e) => e.backend === `tap:${ifname}`);
    expect(events.map((e) => [e.event, e.instance])).toEqual([
      ['backend-claim', src.vm.owner.instance],
      ['backend-hold', early.vm.owner.instance],
      ['backend-release', early.vm.owner.instance],
      ['backend-hold', dst.vm.owner.instance],
      ['backend-release', src.vm.owner.instance],
    ]);
    expect(events.at(-1)).toMatchObject({ to: dst.vm.owner.instance });
  });
});

describe('guest RAM mapped from the source, x-ignore-shared', () => {
  test('mem-path=/proc/<pid>/fd/<n> opens the source RAM; QEMU errors for no such fd or a smaller file', async () => {
    const src = await launch({ name: 'rsrc', version: '7.2.22' });
    expect(src.vm.heldFds()).toEqual([
      expect.objectContaining({ kind: 'ram', ram: expect.objectContaining({ bytes: 64 * 2 ** 20, memfd: true }) }),
    ]);
    const n = ramFd(src.vm);
    const dst = await sharedDestination(src, { name: 'rdst', version: '10.0.2' });
    expect(dst.vm.ram).toEqual(src.vm.ram);
    expect(
      await refused({
        name: 'r1',
        version: '10.0.2',
        ram: `memory-backend-file,id=pc.ram,size=64M,mem-path=/proc/${src.pid}/fd/99,share=on`,
      }),
    ).toBe(`can't open backing store /proc/${src.pid}/fd/99 for guest RAM: No such file or directory`);
    expect(
      await refused({
        name: 'r2',
        version: '10.0.2',
        ram: `memory-backend-file,id=pc.ram,size=64M,mem-path=/proc/3999999999/fd/${n},share=on`,
      }),
    ).toBe(`can't open backing store /proc/3999999999/fd/${n} for guest RAM: No such file or directory`);
    expect(
      await refused({
        name: 'r3',
        version: '10.0.2',
        mem: '128M',
        ram: `memory-backend-file,id=pc.ram,size=128M,mem-path=/proc/${src.pid}/fd/${n},share=on`,
      }),
    ).toBe("pc.ram backing store size 0x4000000 is too small for 'size' option 0x8000000 plus 'offset' option 0x0");
  });

  test.each([
    ['64M', 64 * 2 ** 20],
    ['16G', 16 * 2 ** 30],
  ])('x-ignore-shared on both sides: %s of shared RAM is not streamed', async (mem, bytes) => {
    const { tag } = scope();
    const src = await launch({ name: `${tag}src`, version: '7.2.22', mem });
    const dst = await sharedDestination(src, { name: `${tag}dst`, version: '10.0.2', mem });
    const before = await readCounter(src.qmp);
    const started = performance.now();
    const info = await migrate(src, dst, { src: true, dst: true });
    const ms = performance.now() - started;
    expect(info.status).toBe('completed');
    // ROMs and device state only: the same whatever the RAM size.
    expect(info.ram).toMatchObject({ total: 794624, transferred: 794624 + 20527 });
    expect(ms).toBeLessThan(1000);
    expect(dst.vm.memBytes).toBe(bytes);
    await dst.qmp.cmd('cont');
    expect(await readCounter(dst.qmp)).toBeGreaterThan(before);
  });

  test('x-ignore-shared on one side only: the destination refuses the stream, the source runs on', async () => {
    for (const [s, d] of [
      [true, false],
      [false, true],
    ] as const) {
      const { tag } = scope();
      const src = await launch({ name: `${tag}src`, version: '7.2.22' });
      const dst = await sharedDestination(src, { name: `${tag}dst`, version: '10.0.2' });
      expect((await migrate(src, dst, { src: s, dst: d })).status).toBe('failed');
      expect(await dst.vm.exited).toBe(1);
      const onOff = (b: boolean) => (b ? 'on' : 'off');
      expect(dst.stderr()).toBe(
        `qemu-system-x86_64: Capability x-ignore-shared is ${onOff(d)}, but received capability is ${onOff(s)}\n` +
          'qemu-system-x86_64: load of migration failed: Invalid argument\n',
      );
      expect(await src.qmp.cmd('query-status')).toMatchObject({ status: 'running', running: true });
    }
  });

  test('a memfd source on 8.0 or later streams its RAM anyway: the destination refuses pages for its skipped block', async () => {
    const src = await launch({ name: 'm10src', version: '10.0.2' });
    const dst = await sharedDestination(src, { name: 'm10dst', version: '10.0.2' });
    expect((await migrate(src, dst, { src: true, dst: true })).status).toBe('failed');
    expect(await dst.vm.exited).toBe(1);
    expect(dst.stderr()).toBe(
      [
        'block pc.ram should not be migrated !',
        'Illegal RAM offset 0',
        'error while loading state section id 1(ram)',
        'load of migration failed: Invalid argument',
      ]
        .map((l) => `qemu-system-x86_64: ${l}\n`)
        .join(''),
    );
    expect(await src.qmp.cmd('query-status')).toMatchObject({ status: 'running', running: true });
  });

  test('shared RAM streamed without x-ignore-shared overwrites the running source; skipped RAM the destination lacks fails it', async () => {
    const { state, tag } = scope();
    const src = await launch({ name: `${tag}src`, version: '7.2.22', state });
    const dst = await sharedDestination(src, { name: `${tag}dst`, version: '10.0.2', state });
    await sleep(50);
    expect((await migrate(src, dst, { src: false, dst: false })).status).toBe('completed');
    const q = await src.qmp.cmd<Record<string, unknown>>('x-sim-query');
    expect(q['ram-overwritten-by']).toBe(dst.vm.owner.instance);
    expect(
      readLedgerEvents(state)
        .filter((e) => e.event === 'ram-overwritten')
        .map((e) => e.instance),
    ).toEqual([dst.vm.owner.instance, src.vm.owner.instance]);

    // The source leaves its RAM out, but the destination has RAM of its own: it loads garbage and fails.
    const src2 = await launch({ name: `${tag}s2`, version: '7.2.22' });
    const own = await launch({ name: `${tag}d2`, version: '10.0.2', extra: ['-S', '-incoming', 'defer'] });
    expect((await migrate(src2, own, { src: true, dst: true })).status).toBe('completed');
    expect(await own.vm.exited).toBe(1);
    expect(own.stderr()).toContain("error while loading state for instance 0x0 of device 'kvm-tpr-opt'");
  });
});
