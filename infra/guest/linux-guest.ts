// The Linux test guest built by infra/guest/build-guest.sh: a Debian bookworm kernel and a busybox initramfs
// whose /init configures eth0 (fu.ip=), keeps writing numbered sectors to a disk (fu.disk=) and reports on
// the first serial port. These helpers find the image, build its kernel command line, read its console and
// check its disk afterwards. The console protocol and the on-disk layout are defined by /init in that script.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Sequence write n lands in sector (n mod GUEST_WRITE_SLOTS) + 1, so only the last 2048 writes are on disk. */
export const GUEST_WRITE_SLOTS = 2048;
const SECTOR = 512;

export interface GuestImage {
  kernel: string;
  initrd: string;
}

/** Paths of the guest kernel and initramfs; throws naming the missing file when the setup has not built them. */
export function guestImage(repoRoot: string): GuestImage {
  const dir = path.join(repoRoot, '.cache', 'guest');
  const image = { kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img') };
  for (const [what, file] of [
    ['kernel', image.kernel],
    ['initramfs', image.initrd],
  ] as const) {
    if (!existsSync(file)) throw new Error(`Linux test guest ${what} not found at ${file}: run npm run setup`);
  }
  return image;
}

export interface GuestKernelOptions {
  /** Address/prefix for eth0, e.g. `10.77.0.2/24`. */
  ip?: string;
  /** Block device the guest keeps writing to, e.g. `/dev/vda` (virtio-blk) or `/dev/sda` (virtio-scsi). */
  disk?: string;
}

function isIpv4Cidr(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s);
  if (!m) return false;
  const [a, b, c, d, prefix] = m.slice(1).map(Number) as [number, number, number, number, number];
  return [a, b, c, d].every((o) => o <= 255) && prefix <= 32;
}

/**
 * The kernel command line (`-append`): console on the first serial port, quiet, and on a panic reboot at
 * once (with QEMU's `-no-reboot` that ends QEMU instead of hanging). Only values of a strict shape are
 * accepted, so the line stays within `[A-Za-z0-9=/._ ,:-]` and /init's word splitting cannot be fooled.
 */
export function guestKernelArgs(o: GuestKernelOptions): string {
  const args = ['console=ttyS0', 'quiet', 'panic=-1'];
  if (o.ip !== undefined) {
    if (!isIpv4Cidr(o.ip)) throw new Error(`guest ip must be an IPv4 address/prefix like 10.77.0.2/24: ${o.ip}`);
    args.push(`fu.ip=${o.ip}`);
  }
  if (o.disk !== undefined) {
    if (!/^\/dev\/[a-z][a-z0-9]*$/.test(o.disk)) throw new Error(`guest disk must be like /dev/vda: ${o.disk}`);
    args.push(`fu.disk=${o.disk}`);
  }
  return args.join(' ');
}

export interface GuestConsole {
  /** `fu-ready` was printed: modules loaded, eth0 configured and the disk writer started (as asked). */
  ready: boolean;
  /** Highest n of `fu-wrote <n>` (0 if none): writes 1..n reached the virtual disk. */
  lastWrite: number;
  /** Highest n of `fu-tick <n>` (0 if none), printed once a second. */
  ticks: number;
}

/**
 * Reads the serial console log. Only complete lines count (the file may end mid-line while QEMU writes it,
 * and a cut-off `fu-wrote 12` of `fu-wrote 123` must not be taken for a number), and the highest number
 * wins, which also stays right if a kernel message is interleaved.
 */
export function parseConsole(text: string): GuestConsole {
  const result: GuestConsole = { ready: false, lastWrite: 0, ticks: 0 };
  const lines = text.split('\n');
  lines.pop(); // the unterminated rest, possibly empty
  for (const raw of lines) {
    const line = raw.replace(/\r+$/, '');
    if (line === 'fu-ready') {
      result.ready = true;
      continue;
    }
    const m = /^fu-(wrote|tick) (\d+)$/.exec(line);
    if (!m) continue;
    const n = Number(m[2]);
    if (m[1] === 'wrote') result.lastWrite = Math.max(result.lastWrite, n);
    else result.ticks = Math.max(result.ticks, n);
  }
  return result;
}

/** The first `sectors` sectors of a raw image (shorter if the image is). */
async function readRawSectors(file: string, sectors: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(sectors * SECTOR);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Sequence numbers among the last 2048 up to `upTo` (max(1, upTo-2047) … upTo, the ones not yet
 * overwritten) whose sector does not start with the line `fu-seq <n>`. Read the image only after QEMU let go
 * of it: qemu-img takes the image lock, and a running QEMU may still hold qcow2 metadata in memory.
 */
export async function lostDiskWrites(imagePath: string, format: 'raw' | 'qcow2', upTo: number): Promise<number[]> {
  if (!Number.isSafeInteger(upTo) || upTo < 0) throw new Error(`upTo must be a whole number >= 0: ${upTo}`);
  const sectors = GUEST_WRITE_SLOTS + 1; // sector 0 is never written
  let data: Buffer;
  if (format === 'raw') {
    data = await readRawSectors(imagePath, sectors);
  } else {
    // Only the first 2049 sectors are needed, so `qemu-img dd` rather than converting the whole disk.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fu-guest-'));
    try {
      const raw = path.join(dir, 'head.raw');
      try {
        await execFileAsync('qemu-img', [
          'dd',
          '-f',
          format,
          '-O',
          'raw',
          `bs=${SECTOR}`,
          `count=${sectors}`,
          `if=${imagePath}`,
          `of=${raw}`,
        ]);
      } catch (e) {
        const stderr = (e as { stderr?: string }).stderr?.trim().replace(/\s+/g, ' ');
        throw new Error(`qemu-img dd of ${imagePath} failed: ${stderr || (e as Error).message}`);
      }
      data = await readRawSectors(raw, sectors);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  const lost: number[] = [];
  for (let n = Math.max(1, upTo - GUEST_WRITE_SLOTS + 1); n <= upTo; n++) {
    const offset = ((n % GUEST_WRITE_SLOTS) + 1) * SECTOR;
    const want = Buffer.from(`fu-seq ${n}\n`, 'latin1');
    if (!data.subarray(offset, offset + want.length).equals(want)) lost.push(n);
  }
  return lost;
}
