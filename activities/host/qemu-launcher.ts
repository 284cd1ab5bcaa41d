// Starting and stopping QEMU processes. A QEMU is spawned detached (its own session, stdio to a log file
// under the runtime folder, a minimal environment), so the VM outlives the worker that launched it.
// A simulator binary of the host config runs in-process instead (sim-launcher.ts): its pid is a handle.
import { spawn } from 'node:child_process';
import { constants as fsc, closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { access, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { QmpClient } from '../qmp/client';
import { ensurePrivateDir } from './fs-util';
import { logFile as logFileFor, pidFile, runtimeSubdir, socketPath, type QemuRole } from './paths';
import { isSimulatedHandle, killSimulated, launchSimulated, simulatedAlive, simulatorOfPath } from './sim-launcher';

export interface LaunchQemuOptions {
  /** Absolute path of an allow-listed binary (resolved from a version label by the caller). */
  binary: string;
  /** Full argv, built by buildQemuArgs with `qmpSocket: socketPath(runtimeDir, vmId, generation, 'qmp')`. */
  args: string[];
  runtimeDir: string;
  vmId: string;
  role: QemuRole;
  /** Generation of the process being started (1 at first launch). Names its sockets and log. */
  generation: number;
  /** Environment of the QEMU process besides PATH. */
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

/**
 * QEMU's seccomp sandbox as libvirt turns it on: no obsolete system calls, no privilege changes, no new
 * processes, no changes of scheduling or memory policy. A compromised QEMU then cannot run a program.
 */
export const SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

export interface LaunchedQemu {
  pid: number;
  qmpSocket: string;
  logFile: string;
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

/** iproute2, for `ip netns exec`. */
export const IP_BINARY = '/usr/sbin/ip';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

/**
 * True when QEMU answers `query-status`. Its greeting is not enough: the monitor greets from its own
 * thread before QEMU has opened its drives (and may still exit on an image lock); commands are
 * dispatched by the main loop, which runs only once start-up is done.
 */
export async function qmpAnswers(sock: string, timeoutMs = 1_000): Promise<boolean> {
  try {
    const qmp = await QmpClient.connect(sock, { timeoutMs });
    try {
      await qmp.execute('query-status');
      return true;
    } finally {
      await qmp.close();
    }
  } catch {
    return false;
  }
}

async function isSocketFile(p: string): Promise<boolean> {
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

export async function launchQemu(o: LaunchQemuOptions): Promise<LaunchedQemu> {
  const qmpSocket = socketPath(o.runtimeDir, o.vmId, o.generation, 'qmp');
  const qmpAt = o.args.indexOf('-qmp');
  if (qmpAt < 0 || o.args[qmpAt + 1] !== `unix:${qmpSocket},server=on,wait=off`) {
    throw new Error(`launchQemu: args must carry -qmp unix:${qmpSocket},server=on,wait=off`);
  }
  const simulator = simulatorOfPath(o.binary);
  try {
    if (!simulator) await access(o.binary, fsc.X_OK);
  } catch {
    throw new QemuLaunchError(`QEMU binary ${o.binary} is missing or not executable`, '');
  }
  await ensurePrivateDir(o.runtimeDir);
  await ensurePrivateDir(runtimeSubdir(o.runtimeDir, 'run'));
  await ensurePrivateDir(runtimeSubdir(o.runtimeDir, 'log'));
  await clearStaleSocket(qmpSocket);
  const readySocket = o.ready === undefined || o.ready === 'qmp' ? undefined : o.ready.socketFile;
  if (readySocket) await clearStaleSocket(readySocket);

  const logFile = logFileFor(o.runtimeDir, o.vmId, o.generation, o.role);
  if (simulator) return launchSimulated(o, simulator, qmpSocket, logFile);
  const fd = openSync(logFile, 'a', 0o600);
  let child;
  try {
    writeSync(
      fd,
      `--- ${new Date().toISOString()} launching ${o.role} of ${o.vmId} (generation ${o.generation}): ${o.binary} ${o.args.join(' ')}\n`,
    );
    // QEMU writes its pidfile as it starts: a worker killed before it recorded the pid still leaves the
    // process findable (activities/upgrade/processes.ts findProcess), never an orphan nobody can stop.
    const args = [
      ...o.args,
      '-pidfile',
      pidFile(o.runtimeDir, o.vmId, o.generation),
      ...(o.sandbox ? ['-sandbox', SANDBOX] : []),
    ];
    // `ip netns exec` execs QEMU in place, so the pid we record is QEMU's.
    const [cmd, argv] = o.netns ? [IP_BINARY, ['netns', 'exec', o.netns, o.binary, ...args]] : [o.binary, args];
    child = spawn(cmd, argv, {
      detached: true,
      stdio: ['ignore', fd, fd, ...(o.passFds ?? [])],
      cwd: o.runtimeDir,
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...o.env },
    });
  } finally {
    closeSync(fd);
  }
  child.unref();
  let exit: { code: number | null; signal: string | null } | undefined;
  child.once('exit', (code, signal) => (exit = { code, signal }));
  child.once('error', (err) => (exit ??= { code: null, signal: err.message }));
  const pid = child.pid;
  if (pid === undefined) {
    await sleep(10);
    throw new QemuLaunchError(`QEMU ${o.binary} failed to start: ${exit?.signal ?? 'no pid'}`, logTail(logFile));
  }

  const timeoutMs = o.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exit) {
      throw new QemuLaunchError(
        `QEMU ${o.role} of ${o.vmId} exited before it was ready (code ${exit.code}, signal ${exit.signal})`,
        logTail(logFile),
        exit.code,
        exit.signal,
      );
    }
    const ready = readySocket
      ? await isSocketFile(readySocket)
      : (await isSocketFile(qmpSocket)) && (await qmpAnswers(qmpSocket));
    if (ready && !exit) return { pid, qmpSocket, logFile };
    if (Date.now() > deadline) {
      await killQemu(pid, { graceMs: 0 });
      throw new QemuLaunchError(
        `QEMU ${o.role} of ${o.vmId} not ready after ${timeoutMs} ms; killed it`,
        logTail(logFile),
      );
    }
    await sleep(25);
  }
}

function readProc(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * True when the process exists and is not a zombie. With `expectArg`, it must also carry that argument
 * substring on its command line (e.g. its QMP socket path), which guards against a recycled PID.
 */
export function isProcessAlive(pid: number, expectArg?: string): boolean {
  if (isSimulatedHandle(pid)) return simulatedAlive(pid, expectArg);
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const stat = readProc(pid, 'stat');
  if (stat !== undefined) {
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
  }
  if (expectArg !== undefined) {
    const cmdline = readProc(pid, 'cmdline');
    if (cmdline === undefined || !cmdline.split('\0').some((a) => a.includes(expectArg))) return false;
  }
  return true;
}

/**
 * Whether a process is gone together with everything it held. A killed multi-threaded process (QEMU, or
 * Node) shows its main thread as a zombie while its other threads are still exiting, and those hold the
 * shared file table — its sockets and TAP fds — until the last one is gone. So a zombie counts as released
 * only once it is down to that one thread.
 */
function processReleased(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return true;
  }
  const status = readProc(pid, 'status');
  if (status === undefined) return true;
  const state = /^State:\s+(\S)/m.exec(status)?.[1];
  const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 1);
  return (state === 'Z' || state === 'X') && threads <= 1;
}

export type KillOutcome = 'not-running' | 'terminated' | 'killed';

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function killQemu(pid: number, opts: { graceMs: number; expectArg?: string }): Promise<KillOutcome> {
  if (isSimulatedHandle(pid)) return killSimulated(pid, opts);
  if (!isProcessAlive(pid, opts.expectArg)) return 'not-running';
  const waitGone = async (ms: number) => {
    const until = Date.now() + ms;
    while (!processReleased(pid)) {
      if (Date.now() >= until) return false;
      await sleep(20);
    }
    return true;
  };
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(pid, s);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  if (opts.graceMs > 0) {
    signal('SIGTERM');
    if (await waitGone(opts.graceMs)) return 'terminated';
  }
  signal('SIGKILL');
  if (await waitGone(10_000)) return 'killed';
  throw new Error(`process ${pid} survived SIGKILL for 10 s`);
}
