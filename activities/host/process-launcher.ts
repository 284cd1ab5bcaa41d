// The launcher of real QEMU processes. A QEMU is spawned detached (its own session, stdio to a log file
// under the runtime folder, a minimal environment), so the VM outlives the worker that launched it; it is
// watched through /proc and stopped by signals, and its fds are taken with pidfd_getfd (proc-fds.ts).
import { execFile, spawn } from 'node:child_process';
import { constants as fsc, closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { QmpClient } from '../qmp/client';
import type { BinaryEntry } from './config';
import {
  isSocketFile,
  logTail,
  prepareLaunch,
  QemuLaunchError,
  type KillOptions,
  type KillOutcome,
  type LaunchedQemu,
  type LaunchQemuOptions,
  type ProbeProcess,
  type QemuLauncher,
} from './launcher';
import { pidFile } from './paths';
import { procFdAccess } from './proc-fds';

/**
 * QEMU's seccomp sandbox as libvirt turns it on: no obsolete system calls, no privilege changes, no new
 * processes, no changes of scheduling or memory policy. A compromised QEMU then cannot run a program.
 */
export const SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/** iproute2, for `ip netns exec`. */
export const IP_BINARY = '/usr/sbin/ip';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How often a starting QEMU is looked at (its socket, then whether it answers). */
const LAUNCH_POLL_MS = 5;

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

async function launchProcess(o: LaunchQemuOptions): Promise<LaunchedQemu> {
  const binary = o.binary.path;
  const { qmpSocket, logFile, readySocket } = await prepareLaunch(o, async () => {
    try {
      await access(binary, fsc.X_OK);
    } catch {
      throw new QemuLaunchError(`QEMU binary ${binary} is missing or not executable`, '');
    }
  });
  const fd = openSync(logFile, 'a', 0o600);
  let child;
  try {
    writeSync(
      fd,
      `--- ${new Date().toISOString()} launching ${o.role} of ${o.vmId} (generation ${o.generation}): ${binary} ${o.args.join(' ')}\n`,
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
    const [cmd, argv] = o.netns ? [IP_BINARY, ['netns', 'exec', o.netns, binary, ...args]] : [binary, args];
    child = spawn(cmd, argv, {
      detached: true,
      stdio: ['ignore', fd, fd, ...(o.passFds ?? [])],
      cwd: o.runtimeDir,
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...(o.env ?? o.binary.env) },
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
    throw new QemuLaunchError(`QEMU ${binary} failed to start: ${exit?.signal ?? 'no pid'}`, logTail(logFile));
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
      await killProcess(pid, { graceMs: 0 });
      throw new QemuLaunchError(
        `QEMU ${o.role} of ${o.vmId} not ready after ${timeoutMs} ms; killed it`,
        logTail(logFile),
      );
    }
    // Until its socket exists a look costs one lstat; a QEMU starts in some 40 ms, which a coarser step
    // would round up by half a step on average.
    await sleep(LAUNCH_POLL_MS);
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
export function processAlive(pid: number, expectArg?: string): boolean {
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

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function killProcess(pid: number, opts: KillOptions): Promise<KillOutcome> {
  if (!processAlive(pid, opts.expectArg)) return 'not-running';
  const waitGone = async (ms: number) => {
    const since = Date.now();
    while (!processReleased(pid)) {
      if (Date.now() - since >= ms) return false;
      // A QEMU told to quit is gone within some 20 ms: looked at every 2 ms at first (a read of its
      // /proc status each), every 20 ms after the first half second.
      await sleep(Date.now() - since < 500 ? 2 : 20);
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

function spawnProbe(binary: BinaryEntry, args: string[]): ProbeProcess {
  const child = spawn(binary.path, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { PATH: process.env.PATH ?? '', ...binary.env },
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) =>
      reject(new Error(`${binary.path} exited (code ${code}) while probed: ${stderr.trim()}`)),
    ),
  );
  return { exited, kill: () => child.kill('SIGKILL') };
}

/** Real qemu-system-* processes: a host config's `path` binaries. */
export const processLauncher: QemuLauncher = {
  kind: 'process',
  launch: launchProcess,
  isAlive: processAlive,
  kill: killProcess,
  started: (pid) => Number.isSafeInteger(pid) && pid > 0,
  fdAccess: procFdAccess,
  startProbe: spawnProbe,
  async help(binary, args) {
    const { stdout } = await promisify(execFile)(binary.path, args, {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...binary.env },
      timeout: 10_000,
    });
    return stdout;
  },
  async buildStamp(binary) {
    const s = await stat(binary.path);
    return { size: s.size, mtimeMs: s.mtimeMs };
  },
};
