// What starts, watches and stops the QEMU of a VM. Two launchers implement it: a real qemu-system-*
// process (process-launcher.ts) and a QEMU simulated inside the host worker (sim-launcher.ts). The one for
// a binary is chosen from its host-config entry where the binary is resolved (launcherFor in
// qemu-launcher.ts), so the saga's activities run unchanged on either.
import { readFileSync } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { BinaryEntry } from './config';
import { ensurePrivateDir } from './fs-util';
import { logFile as logFileFor, runtimeSubdir, socketPath, type QemuRole } from './paths';
import type { FdAccess } from './proc-fds';

export interface LaunchQemuOptions {
  /** An allow-listed binary (resolved from a version label by the caller). */
  binary: BinaryEntry;
  /** Full argv, built by buildQemuArgs with `qmpSocket: socketPath(runtimeDir, vmId, generation, 'qmp')`. */
  args: string[];
  runtimeDir: string;
  vmId: string;
  role: QemuRole;
  /** Generation of the process being started (1 at first launch). Names its sockets and log. */
  generation: number;
  /** Environment of the QEMU process besides PATH (default: the binary's). */
  env?: Record<string, string>;
  /** Until the process is ready. Default 30 s. */
  timeoutMs?: number;
  /**
   * What "ready" means: the QMP socket greets a client (default), or, for a cpr-transfer destination
   * whose monitor only comes up once the source migrates, a socket file exists (nothing connects to it).
   */
  ready?: 'qmp' | { socketFile: string };
  /** Start QEMU inside this network namespace (`ip netns exec`); its pid stays QEMU's own. */
  netns?: string;
  /** Fds of ours the QEMU inherits as 3, 4, … in this order (handed-over taps); the caller closes them. */
  passFds?: number[];
  /** Turn QEMU's seccomp sandbox on (only for a build that has it: see the binary probe). */
  sandbox?: boolean;
}

export interface LaunchedQemu {
  /** The process's pid, or the pid-like handle of an in-process simulated QEMU: what VM records keep. */
  pid: number;
  qmpSocket: string;
  logFile: string;
}

export type KillOutcome = 'not-running' | 'terminated' | 'killed';

export interface KillOptions {
  /** Grace between a graceful stop (SIGTERM) and a crash (SIGKILL); 0: crash at once. */
  graceMs: number;
  /** Only if its command line carries this argument (guards against a recycled pid). */
  expectArg?: string;
}

/** A binary started for the capability probe (`-machine none`): rejects `exited` when it ends. */
export interface ProbeProcess {
  exited: Promise<never>;
  kill(): void;
}

export interface QemuLauncher {
  readonly kind: 'process' | 'simulator';
  /** Starts a QEMU and resolves once it is ready; QemuLaunchError (with its log's tail) if it is not. */
  launch(o: LaunchQemuOptions): Promise<LaunchedQemu>;
  /**
   * Whether the QEMU of `pid` exists and is not a zombie; with `expectArg`, also that its command line
   * carries that argument (e.g. its QMP socket path).
   */
  isAlive(pid: number, expectArg?: string): boolean;
  /** A graceful stop, then a crash after `graceMs`; resolves once it is gone. */
  kill(pid: number, opts: KillOptions): Promise<KillOutcome>;
  /** Whether `pid` (as recorded in a VM record or process file) names a QEMU of this launcher's kind. */
  started(pid: number): boolean;
  /** How the fds of its QEMUs are found, taken and closed (fd-handover.ts). */
  readonly fdAccess: FdAccess;
  /** Starts the binary for the capability probe (binary-probe.ts), with these QEMU arguments. */
  startProbe(binary: BinaryEntry, args: string[]): ProbeProcess;
  /** What the binary prints on stdout for these arguments (`-machine <type>,help`). */
  help(binary: BinaryEntry, args: string[]): Promise<string>;
  /**
   * What identifies the build for the capability cache besides its path (a file's size and mtime), and
   * whether the probe may be kept on disk; undefined: keep it in memory only.
   */
  buildStamp(binary: BinaryEntry): Promise<{ size: number; mtimeMs: number } | undefined>;
}

export class QemuLaunchError extends Error {
  override name = 'QemuLaunchError';
  constructor(
    message: string,
    readonly logTail: string,
    readonly exitCode: number | null = null,
    readonly signal: string | null = null,
  ) {
    super(`${message}${logTail ? `; log tail:\n${logTail}` : ''}`);
  }
}

export function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Resolves true when something accepts a connection on the UNIX socket within `timeoutMs`. */
export function canConnect(sock: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: sock });
    const done = (ok: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export async function isSocketFile(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isSocket();
  } catch {
    return false;
  }
}

/** Removes a leftover socket file nobody listens on; refuses one that is in use. */
async function clearStaleSocket(p: string): Promise<void> {
  if (!(await isSocketFile(p))) return;
  if (await canConnect(p)) throw new QemuLaunchError(`socket ${p} is in use by another process`, '');
  await unlink(p).catch(() => undefined);
}

/** The files of a launch, checked and made ready by prepareLaunch. */
export interface LaunchFiles {
  qmpSocket: string;
  logFile: string;
  /** The socket file whose existence means ready, when that is not the QMP socket. */
  readySocket?: string;
}

/**
 * What every launch does first, whichever the launcher: the argv's `-qmp` must be the generation's socket,
 * the launcher checks its binary (`checkBinary`), the runtime folders exist (owner-only), and leftover
 * sockets nobody listens on are removed.
 */
export async function prepareLaunch(
  o: LaunchQemuOptions,
  checkBinary: () => Promise<void> = async () => undefined,
): Promise<LaunchFiles> {
  const qmpSocket = socketPath(o.runtimeDir, o.vmId, o.generation, 'qmp');
  const qmpAt = o.args.indexOf('-qmp');
  if (qmpAt < 0 || o.args[qmpAt + 1] !== `unix:${qmpSocket},server=on,wait=off`) {
    throw new Error(`launchQemu: args must carry -qmp unix:${qmpSocket},server=on,wait=off`);
  }
  await checkBinary();
  await ensurePrivateDir(o.runtimeDir);
  await ensurePrivateDir(runtimeSubdir(o.runtimeDir, 'run'));
  await ensurePrivateDir(runtimeSubdir(o.runtimeDir, 'log'));
  await clearStaleSocket(qmpSocket);
  const readySocket = o.ready === undefined || o.ready === 'qmp' ? undefined : o.ready.socketFile;
  if (readySocket) await clearStaleSocket(readySocket);
  const logFile = logFileFor(o.runtimeDir, o.vmId, o.generation, o.role);
  return { qmpSocket, logFile, ...(readySocket ? { readySocket } : {}) };
}
