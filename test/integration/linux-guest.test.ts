// The Linux test guest (infra/guest/build-guest.sh) booted directly by QEMU 7.2, not through the product:
// it comes up on the serial console, answers ping over a virtio-net NIC on a tap in a bridge inside a
// network namespace of its own, keeps writing numbered sectors to a virtio-blk qcow2 disk, and after QEMU
// quits on SIGTERM every write it reported is in the image.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { guestImage, guestKernelArgs, lostDiskWrites, parseConsole } from '../../infra/guest/linux-guest';
import { projectRoot, qemu72, requireQemu } from '../../infra/real-parts';
import { useTmpDir } from '../helpers/tmp';

jest.setTimeout(180_000);

const GUEST_IP = '10.77.0.2';
const HOST_CIDR = '10.77.0.1/24';
// Unique per test process, so parallel runs and a leftover from a crashed run do not collide.
const ns = `fu-lg-${process.pid}`;

const tmp = useTmpDir('flg');
let qemu: ChildProcess | undefined;
let qemuExit: Promise<number | null> | undefined;
let qemuStderr = '';
let nsCreated = false;
let consoleLog = '';
let disk = '';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs a command to completion; throws with its stderr when it fails. */
function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message || ''}`);
  }
  return r.stdout;
}

function consoleText(): string {
  return existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8') : '';
}

function consoleTail(): string {
  return consoleText().split('\n').slice(-15).join('\n');
}

/** Waits until the console shows `fu-ready`; fails at once on `fu-error` or when QEMU has exited. */
async function waitReady(timeoutMs: number): Promise<void> {
  const start = Date.now();
  for (;;) {
    const text = consoleText();
    if (parseConsole(text).ready) return;
    const error = /^fu-error .*$/m.exec(text);
    if (error) throw new Error(`guest reported ${error[0]}\n${consoleTail()}`);
    if (!qemu || qemu.exitCode !== null || qemu.signalCode !== null) {
      throw new Error(`QEMU exited before fu-ready: ${qemuStderr.trim()}\n${consoleTail()}`);
    }
    if (Date.now() - start > timeoutMs) throw new Error(`no fu-ready after ${timeoutMs} ms\n${consoleTail()}`);
    await sleep(250);
  }
}

/** Sends `signal` and waits up to `ms` for QEMU to exit; true when it did. */
async function stopQemu(signal: NodeJS.Signals, ms: number): Promise<boolean> {
  if (!qemu || !qemuExit) return true;
  if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([qemuExit.then(() => true), timeout]);
  } finally {
    clearTimeout(timer); // a pending timer would keep jest from exiting
  }
}

beforeAll(() => {
  // Missing parts fail the test (nothing skips): guestImage throws naming the file and `npm run setup`.
  const image = guestImage(projectRoot);
  requireQemu(qemu72);
  consoleLog = path.join(tmp(), 'console.log');
  disk = path.join(tmp(), 'data.qcow2');
  run('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '8M']);

  // A bridge with the host-side address and the tap QEMU attaches to, all inside a namespace the test owns:
  // nothing touches the machine's own network, and deleting the namespace removes everything.
  run('ip', ['netns', 'add', ns]);
  nsCreated = true;
  const ipn = (...args: string[]) => run('ip', ['-n', ns, ...args]);
  ipn('link', 'set', 'lo', 'up');
  ipn('link', 'add', 'br0', 'type', 'bridge');
  ipn('addr', 'add', HOST_CIDR, 'dev', 'br0');
  ipn('link', 'set', 'br0', 'up');
  ipn('tuntap', 'add', 'dev', 'tap0', 'mode', 'tap');
  ipn('link', 'set', 'tap0', 'master', 'br0');
  ipn('link', 'set', 'tap0', 'up');

  // `ip netns exec` execs QEMU in place, so the child's pid is QEMU's and SIGTERM reaches QEMU itself.
  qemu = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      qemu72.binary,
      // KVM is present on these machines but this kernel crawls under it (stuck in the decompressor for
      // minutes); TCG boots it in about 12 s, and is what the tests must work with anyway.
      ...['-accel', 'tcg', '-m', '256', '-smp', '1'],
      ...['-kernel', image.kernel, '-initrd', image.initrd],
      ...['-append', guestKernelArgs({ ip: `${GUEST_IP}/24`, disk: '/dev/vda' })],
      ...['-drive', `file=${disk},format=qcow2,if=none,id=disk0`, '-device', 'virtio-blk-pci,drive=disk0'],
      ...['-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-pci,netdev=net0'],
      ...['-serial', `file:${consoleLog}`, '-display', 'none', '-nodefaults'],
      // A kernel panic (panic=-1 reboots) ends QEMU, so the test fails at once instead of boot-looping.
      '-no-reboot',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  qemu.stderr?.setEncoding('utf8').on('data', (d: string) => (qemuStderr += d));
  qemu.on('error', (e) => (qemuStderr += `cannot start QEMU: ${e.message}`));
  const child = qemu;
  qemuExit = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
});

afterAll(async () => {
  // Also after a failure: no QEMU left running, no namespace left behind (its bridge and tap go with it).
  if (!(await stopQemu('SIGTERM', 10_000))) await stopQemu('SIGKILL', 10_000);
  if (nsCreated) spawnSync('ip', ['netns', 'del', ns]);
});

test('boots to fu-ready, answers ping on the bridge and keeps reporting disk writes', async () => {
  await waitReady(90_000);

  const ping = spawnSync('ip', ['netns', 'exec', ns, 'ping', '-c', '3', '-W', '2', GUEST_IP], { encoding: 'utf8' });
  expect({ status: ping.status, out: ping.stdout + ping.stderr }).toMatchObject({ status: 0 });

  const first = parseConsole(consoleText()).lastWrite;
  await sleep(2_000);
  const second = parseConsole(consoleText());
  expect(first).toBeGreaterThan(0);
  expect(second.lastWrite).toBeGreaterThan(first);
  expect(second.ticks).toBeGreaterThan(0);
});

test('after QEMU quits on SIGTERM every reported write is in the qcow2 image', async () => {
  expect(await stopQemu('SIGTERM', 30_000)).toBe(true);
  const { lastWrite } = parseConsole(consoleText());
  expect(lastWrite).toBeGreaterThan(0);
  expect(await lostDiskWrites(disk, 'qcow2', lastWrite)).toEqual([]);
});
