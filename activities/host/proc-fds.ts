// The fds of a real QEMU process, as the kernel shows them: a tap's `iff:` line in /proc/<pid>/fdinfo, a
// memfd's link in /proc/<pid>/fd. Linux lets a process with ptrace rights over another duplicate any of its
// fds: pidfd_open(2) then pidfd_getfd(2). Node has neither, so they are called through koffi (a prebuilt
// FFI; nothing to compile). The process launcher's `fdAccess`; fd-handover.ts picks a launcher's.
import { closeSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';

const SYS_PIDFD_OPEN = 434;
const SYS_PIDFD_GETFD = 438;
const CAP_SYS_PTRACE = 19;

const errnoNames: Record<number, string> = {
  1: 'EPERM: not permitted (the host worker needs root or CAP_SYS_PTRACE)',
  3: 'ESRCH: no such process',
  9: 'EBADF: no such fd in that process',
  22: 'EINVAL',
  24: 'EMFILE: too many open files',
  38: 'ENOSYS: the kernel has no pidfd_getfd (Linux >= 5.6)',
};

type Syscall = (nr: number, a: number, b: number, c: number) => number;
let syscallFn: { call: Syscall; errno: () => number } | undefined;

function libc(): { call: Syscall; errno: () => number } {
  if (!syscallFn) {
    // Loaded on first use: the CLI's other commands do not pay for it.
    const koffi = require('koffi') as typeof import('koffi');
    const call = koffi.load('libc.so.6').func('long syscall(long, long, long, long)') as Syscall;
    syscallFn = { call, errno: () => koffi.errno() };
  }
  return syscallFn;
}

export class FdHandoverError extends Error {
  override name = 'FdHandoverError';
}

function sys(nr: number, a: number, b: number, what: string): number {
  const { call, errno } = libc();
  const r = Number(call(nr, a, b, 0));
  if (r < 0) {
    const e = errno();
    throw new FdHandoverError(`${what}: ${errnoNames[e] ?? `errno ${e}`}`);
  }
  return r;
}

/** How fds of one kind of QEMU process are found, taken and closed. */
export interface FdAccess {
  /** Whether this worker may take fds from such a process, and why not. */
  ability(): HandoverAbility;
  /** The tap queue fds a process holds, by interface name, in fd order. */
  tapFdsOf(pid: number): Map<string, number[]>;
  /** The fd of a process's guest RAM (see ramMemfdOf). */
  ramMemfdOf(pid: number, bytes: number, files: boolean): number | undefined;
  /** Duplicates of fds of a process, in order; throws FdHandoverError. The caller closes them. */
  takeFds(pid: number, fds: readonly number[]): number[];
  /** Whether an fd taken by takeFds is one of this kind's (closeFds has no pid to go by). */
  owns(taken: number): boolean;
  closeFds(taken: readonly number[]): void;
}

/** The fds of a real process: /proc and pidfd_getfd. */
export const procFdAccess: FdAccess = {
  ability: () => procHandoverAbility(),
  tapFdsOf: (pid) => procTapFdsOf(pid),
  ramMemfdOf: (pid, bytes, files) => procRamMemfdOf(pid, bytes, files),
  takeFds: (pid, fds) => procTakeFds(pid, fds),
  owns: (taken) => Number.isInteger(taken) && taken >= 0,
  closeFds: (taken) => procCloseFds(taken),
};

function procTakeFds(pid: number, fds: readonly number[]): number[] {
  const pidfd = sys(SYS_PIDFD_OPEN, pid, 0, `pidfd_open(${pid})`);
  const taken: number[] = [];
  try {
    for (const fd of fds) taken.push(sys(SYS_PIDFD_GETFD, pidfd, fd, `pidfd_getfd(pid ${pid}, fd ${fd})`));
    return taken;
  } catch (err) {
    procCloseFds(taken);
    throw err;
  } finally {
    closeSync(pidfd);
  }
}

export function procCloseFds(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
  }
}

export interface HandoverAbility {
  possible: boolean;
  reason?: string;
}

let ability: HandoverAbility | undefined;

/** Whether this process may take fds from QEMU processes it did not start as children: asked once. */
export function procHandoverAbility(): HandoverAbility {
  if (ability) return ability;
  const status = readFileSync('/proc/self/status', 'utf8');
  const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1] ?? '0'}`);
  if (((capEff >> BigInt(CAP_SYS_PTRACE)) & 1n) === 0n) {
    ability = { possible: false, reason: 'the host worker runs without CAP_SYS_PTRACE (not root)' };
    return ability;
  }
  try {
    procCloseFds(procTakeFds(process.pid, [0]));
    ability = { possible: true };
  } catch (err) {
    ability = { possible: false, reason: `the host worker cannot take fds: ${(err as Error).message}` };
  }
  return ability;
}

function fdNumbers(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/fd`)
      .map(Number)
      .filter((n) => Number.isInteger(n))
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

function procTapFdsOf(pid: number): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const fd of fdNumbers(pid)) {
    let info: string;
    try {
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue;
    }
    const ifname = /^iff:\s*(\S+)$/m.exec(info)?.[1];
    if (ifname) out.set(ifname, [...(out.get(ifname) ?? []), fd]);
  }
  return out;
}

function procRamMemfdOf(pid: number, bytes: number, files: boolean): number | undefined {
  const found: number[] = [];
  for (const fd of fdNumbers(pid)) {
    try {
      const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      const candidate = link.startsWith('/memfd:') || (files && link.startsWith('/'));
      if (!candidate || !statSync(`/proc/${pid}/fd/${fd}`).isFile()) continue;
      if (statSync(`/proc/${pid}/fd/${fd}`).size === bytes) found.push(fd);
    } catch {
      continue;
    }
  }
  return found.length === 1 ? found[0] : undefined;
}
