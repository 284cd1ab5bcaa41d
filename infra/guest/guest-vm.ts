// A VM spec running the Linux guest (infra/guest/build-guest.sh) as the demo and `host init` use it: direct
// kernel boot, a raw data disk on virtio-blk that the guest keeps writing numbered sectors to, the console
// on a serial log, and optionally a virtio-net NIC on a tap (on a bridge) with a fixed address.
import { closeSync, openSync, readFileSync, ftruncateSync } from 'node:fs';
import path from 'node:path';
import { parseVmSpec, type VmSpec } from '../../activities/host/vm-spec';
import { guestImage, guestKernelArgs, lostDiskWrites, parseConsole, type GuestConsole } from './linux-guest';
import { projectRoot } from '../real-parts';

export interface LinuxGuestVm {
  spec: VmSpec;
  /** The raw data disk the guest writes to. */
  disk: string;
  serialLog: string;
}

export interface LinuxGuestOptions {
  id: string;
  binary: string;
  /** Folder for the data disk and the console log. */
  dir: string;
  memoryMiB?: number;
  /** A NIC on this tap (on `bridge`, if given), the guest at `ip` (`10.77.0.11/24`), with its own MAC. */
  nic?: { tap: string; bridge?: string; ip: string; mac: string };
  /** No data disk (the guest then writes nothing): default, one. */
  noDisk?: boolean;
  /** Guest RAM in a memfd, shared (`share=on`) or not; default: the spec's default backend. */
  memfd?: { shared: boolean };
}

export function linuxGuestVm(o: LinuxGuestOptions): LinuxGuestVm {
  const { kernel, initrd } = guestImage(projectRoot);
  const disk = path.join(o.dir, `${o.id}.data.raw`);
  if (!o.noDisk) {
    // Sparse, 8 MiB: the guest's writes cycle through its first 2049 sectors.
    const fd = openSync(disk, 'w', 0o600);
    try {
      ftruncateSync(fd, 8 * 1024 * 1024);
    } finally {
      closeSync(fd);
    }
  }
  const serialLog = path.join(o.dir, `${o.id}.console.log`);
  const spec = parseVmSpec({
    id: o.id,
    binary: o.binary,
    machine: 'pc-i440fx-7.2',
    accel: 'tcg',
    memoryMiB: o.memoryMiB ?? 256,
    ...(o.memfd ? { memoryBackend: 'memfd', memoryShared: o.memfd.shared } : {}),
    kernel,
    initrd,
    append: guestKernelArgs({ ...(o.nic ? { ip: o.nic.ip } : {}), ...(o.noDisk ? {} : { disk: '/dev/vda' }) }),
    serialLog,
    ...(o.noDisk ? {} : { drives: [{ id: 'data', file: disk, format: 'raw', interface: 'virtio' }] }),
    ...(o.nic
      ? {
          netdevs: [{ id: 'net0', type: 'tap', ifname: o.nic.tap, ...(o.nic.bridge ? { bridge: o.nic.bridge } : {}) }],
          devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0', mac: o.nic.mac }],
        }
      : {}),
  });
  return { spec, disk, serialLog };
}

export function readGuestConsole(serialLog: string): GuestConsole {
  try {
    return parseConsole(readFileSync(serialLog, 'utf8'));
  } catch {
    return parseConsole('');
  }
}

/** Waits until the console satisfies `ok`; throws with the console's tail after `ms`. */
export async function waitForGuest(
  serialLog: string,
  ok: (c: GuestConsole) => boolean,
  ms: number,
  stopped: () => boolean = () => false,
): Promise<GuestConsole> {
  const until = Date.now() + ms;
  for (;;) {
    const c = readGuestConsole(serialLog);
    if (ok(c)) return c;
    if (stopped()) throw new Error('stopped');
    if (Date.now() > until) {
      let tail = '';
      try {
        tail = readFileSync(serialLog, 'utf8').slice(-600);
      } catch {
        /* none */
      }
      throw new Error(`the guest console ${serialLog} did not get there in ${ms} ms: …${tail}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * The writes the guest saw complete that are not on its raw disk, read while the guest runs: writes up to
 * the console's count before the read, minus those whose slot a later write (after the read began) may have
 * reused. Returns how many were checked and which are missing.
 */
export async function checkDiskWhileRunning(
  disk: string,
  serialLog: string,
): Promise<{ checked: number; lost: number[] }> {
  const upTo = readGuestConsole(serialLog).lastWrite;
  const lost = await lostDiskWrites(disk, 'raw', upTo);
  const after = readGuestConsole(serialLog).lastWrite;
  const reusable = (n: number) => n + 2048 <= after;
  const first = Math.max(1, upTo - 2047);
  const checked = upTo >= first ? upTo - first + 1 : 0;
  return { checked, lost: lost.filter((n) => !reusable(n)) };
}
