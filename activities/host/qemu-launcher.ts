// Which launcher runs a QEMU (launcher.ts): a binary's is chosen from its host-config entry, where the binary
// is resolved — a `path` binary is a real process (process-launcher.ts), a `simulator` binary runs inside
// the host worker (sim-launcher.ts). A QEMU known only by the pid a VM record or process file keeps is
// watched and stopped by the launcher that started it. launchQemu, isProcessAlive and killQemu are the
// saga's entry points; none of them tells the kinds apart itself.
import type { BinaryEntry } from './config';
import type { KillOptions, KillOutcome, LaunchedQemu, LaunchQemuOptions, QemuLauncher } from './launcher';
import { processLauncher } from './process-launcher';
import { simulatorLauncher } from './sim-launcher';

export {
  canConnect,
  logTail,
  QemuLaunchError,
  type KillOptions,
  type KillOutcome,
  type LaunchedQemu,
  type QemuLauncher,
} from './launcher';
export { IP_BINARY, processLauncher, qmpAnswers, SANDBOX } from './process-launcher';
export { simulatorLauncher } from './sim-launcher';

/** Every launcher; a pid is matched against them in this order (launcherOfProcess). */
export const LAUNCHERS: readonly QemuLauncher[] = [simulatorLauncher, processLauncher];

/** The launcher of a binary: by its config entry; a bare path is a qemu-system-* executable. */
export function launcherFor(binary: BinaryEntry | string): QemuLauncher {
  return typeof binary !== 'string' && binary.simulator ? simulatorLauncher : processLauncher;
}

/** The launcher that started the QEMU a recorded pid names (its own `started` decides). */
export function launcherOfProcess(pid: number): QemuLauncher {
  return LAUNCHERS.find((l) => l.started(pid)) ?? processLauncher;
}

/** Launch options with the binary as its config entry, or as the path of a qemu-system-* executable. */
export type LaunchOptions = Omit<LaunchQemuOptions, 'binary'> & { binary: BinaryEntry | string };

/** Starts a QEMU with the launcher of its binary (launcherFor). */
export function launchQemu(o: LaunchOptions): Promise<LaunchedQemu> {
  const binary = typeof o.binary === 'string' ? { path: o.binary, dataDirs: [], env: {} } : o.binary;
  return launcherFor(binary).launch({ ...o, binary });
}

/**
 * True when the QEMU of a recorded pid exists and is not a zombie. With `expectArg`, it must also carry that
 * argument on its command line (e.g. its QMP socket path), which guards against a recycled pid.
 */
export function isProcessAlive(pid: number, expectArg?: string): boolean {
  return launcherOfProcess(pid).isAlive(pid, expectArg);
}

/** Stops the QEMU of a recorded pid: gracefully within `graceMs`, then by force; resolves once it is gone. */
export function killQemu(pid: number, opts: KillOptions): Promise<KillOutcome> {
  return launcherOfProcess(pid).kill(pid, opts);
}
