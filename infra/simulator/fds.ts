// Simulated file descriptors: what a simulated QEMU holds (its tap queues, its guest RAM's memfd or file)
// and what it was given at spawn, so a host worker can hand a live source's taps and RAM to a destination
// exactly as it does with real QEMU (pidfd_getfd, an inherited `-netdev tap,fd=N`, RAM mapped through
// `memory-backend-file,mem-path=/proc/<pid>/fd/<n>`) without any real fd.
//
// - Each simulated QEMU has an fd table: inherited fds first (3, 4, … as a spawned child gets them), then the
//   fds it opens itself (one per tap queue, one for memfd- or file-backed RAM).
// - `dupFd` is pidfd_getfd: a copy of the fd, which names the same tap or the same RAM, and which process it
//   was taken from.
// - `/proc/<pid>/fd/<n>` names fd n of the simulated QEMU that was started with `pid` (the launcher's
//   pid-like handle for an in-process one): looked up among the simulated QEMUs of this Node process.
import type { Owner } from './ledger';

/** One guest RAM, as the pages both processes would map: the same `id` means the same pages. */
export interface SimRam {
  /** `memfd:<instance>:<backend id>` for a memfd, `file:<path>` for a file. */
  id: string;
  bytes: number;
  /** A memfd underneath (even when a destination opened it through /proc as a named file). */
  memfd: boolean;
}

/** What a simulated fd refers to, and the process it was duplicated from (for a taken or inherited one). */
export type SimFd = { kind: 'tap'; ifname: string; from?: Owner } | { kind: 'ram'; ram: SimRam; from?: Owner };

/** An fd of a simulated QEMU with its number. */
export type HeldFd = SimFd & { fd: number };

/** The first fd a child inherits (after stdin, stdout, stderr). */
export const FIRST_INHERITED_FD = 3;

export class FdTable {
  private readonly fds = new Map<number, SimFd>();
  private next: number;

  constructor(inherited: readonly SimFd[] = []) {
    inherited.forEach((f, i) => this.fds.set(FIRST_INHERITED_FD + i, f));
    this.next = FIRST_INHERITED_FD + inherited.length;
  }

  get(fd: number): SimFd | undefined {
    return this.fds.get(fd);
  }

  /** Open a new fd (the lowest free number, as the kernel picks). */
  open(f: SimFd): number {
    while (this.fds.has(this.next)) this.next++;
    const fd = this.next++;
    this.fds.set(fd, f);
    return fd;
  }

  close(fd: number): void {
    this.fds.delete(fd);
    this.next = Math.min(this.next, fd);
  }

  list(): HeldFd[] {
    return [...this.fds.entries()].sort(([a], [b]) => a - b).map(([fd, f]) => ({ ...f, fd }));
  }
}

/** Who answers for `/proc/<pid>/fd/<n>`: the simulated QEMUs of this Node process, by their pid. */
const byPid = new Map<number, { fdTable: FdTable }>();

export function registerProcPid(pid: number, holder: { fdTable: FdTable } | undefined): void {
  if (holder) byPid.set(pid, holder);
  else byPid.delete(pid);
}

const PROC_FD = /^\/proc\/(\d+)\/fd\/(\d+)$/;

/**
 * What a path names when it is `/proc/<pid>/fd/<n>` of a simulated QEMU of this process: the fd, or null when
 * that process or fd does not exist (ENOENT). Undefined for any other path (a file like any other).
 */
export function resolveProcFd(path: string): SimFd | null | undefined {
  const m = PROC_FD.exec(path);
  if (!m) return undefined;
  const holder = byPid.get(Number(m[1]));
  if (!holder) return undefined;
  return holder.fdTable.get(Number(m[2])) ?? null;
}
