// Taking file descriptors from a running QEMU, so a new QEMU on the same host can be given the very tap
// queues and guest RAM the old one uses: released QEMU builds cannot pass them to each other themselves.
// Each launcher (qemu-launcher.ts) brings the access to the fds of the QEMUs it starts (`FdAccess`): a real
// process's through /proc and pidfd_getfd (proc-fds.ts), an in-process simulated one's through the
// simulator's API, whose taken fds are tokens that only a simulated destination inherits.
import { launcherOfProcess, LAUNCHERS } from './qemu-launcher';
import { procFdAccess, procHandoverAbility, type FdAccess, type HandoverAbility } from './proc-fds';

export { FdHandoverError, procFdAccess, type FdAccess, type HandoverAbility } from './proc-fds';

type IoctlInt = (fd: number, request: number, arg: number[]) => number;
let ioctlFn: IoctlInt | undefined;

function ioctlInt(): IoctlInt {
  if (!ioctlFn) {
    const koffi = require('koffi') as typeof import('koffi');
    ioctlFn = koffi.load('libc.so.6').func('int ioctl(int, unsigned long, _Inout_ int *)') as IoctlInt;
  }
  return ioctlFn;
}

const TUNGETVNETHDRSZ = 0x800454d7;
const TUNSETVNETHDRSZ = 0x400454d8;

/**
 * Holds each tap's virtio-net header size where the source set it, while a destination given the same taps
 * starts. A starting QEMU resets the size to 10 bytes (it does so for any tap fd it is given), and the size
 * belongs to the interface, shared with the source still running on it: a guest with mergeable receive
 * buffers uses 12, so from then until the switchover every frame either way would be garbled — hundreds of
 * milliseconds of lost packets. The destination sets the size its guest needs when it loads the device state.
 * Real taps only (fds of ours, from takeFds); `stop()` restores one last time.
 */
export function holdTapHeaderSizes(fds: readonly number[]): { stop(): void } {
  const taps = fds.filter((fd) => procFdAccess.owns(fd));
  const want = new Map<number, number>();
  for (const fd of taps) {
    const size = [0];
    if (ioctlInt()(fd, TUNGETVNETHDRSZ, size) === 0) want.set(fd, size[0]!);
  }
  const restore = () => {
    for (const [fd, size] of want) {
      const now = [0];
      if (ioctlInt()(fd, TUNGETVNETHDRSZ, now) === 0 && now[0] !== size) ioctlInt()(fd, TUNSETVNETHDRSZ, [size]);
    }
  };
  const timer = want.size ? setInterval(restore, 1) : undefined;
  return {
    stop() {
      if (timer) clearInterval(timer);
      restore();
    },
  };
}

/** The fd access of the launcher that started a QEMU process: /proc for a real one, the simulator's own. */
export function fdAccessFor(pid: number): FdAccess {
  return launcherOfProcess(pid).fdAccess;
}

/** Duplicates of the fds `fds` of process `pid`, in the same order; the caller closes them. */
export function takeFds(pid: number, fds: readonly number[]): number[] {
  return fdAccessFor(pid).takeFds(pid, fds);
}

/** Closes fds takeFds returned (of any kind of process): each by the access that took it. */
export function closeFds(fds: readonly number[]): void {
  let left = [...fds];
  for (const { fdAccess } of LAUNCHERS) {
    const mine = left.filter((fd) => fdAccess.owns(fd));
    if (mine.length) fdAccess.closeFds(mine);
    left = left.filter((fd) => !fdAccess.owns(fd));
  }
}

/** The tap queue fds a process holds, by interface name, in fd order. */
export function tapFdsOf(pid: number): Map<string, number[]> {
  return fdAccessFor(pid).tapFdsOf(pid);
}

/**
 * The fd holding a process's guest RAM: a memfd (or, with `files`, a regular file) of exactly the RAM's size.
 * Undefined when there is none, or more than one would fit (then nobody can tell which is the RAM).
 */
export function ramMemfdOf(pid: number, bytes: number, files = false): number | undefined {
  return fdAccessFor(pid).ramMemfdOf(pid, bytes, files);
}

/**
 * Whether this process may take fds from QEMU processes it did not start as children: asked once. With a
 * pid, for the launcher that started it (an in-process simulated QEMU's fds are always the worker's to take).
 */
export function handoverAbility(pid?: number): HandoverAbility {
  return pid === undefined ? procHandoverAbility() : fdAccessFor(pid).ability();
}
