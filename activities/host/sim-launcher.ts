// In-process simulated QEMUs: the launcher of a host config's `simulator` binaries, for fleet-scale runs
// (thousands of VMs in one host worker, about 11 KiB each while idle), and the only way the product loads
// the simulator (infra/simulator). launcherFor (qemu-launcher.ts) picks it from the binary's config entry,
// so the saga's activities run unchanged on either kind of QEMU.
//
// - Each launched instance gets a pid-like handle, recorded in the VM record and process files like a pid:
//   `1e15 + <worker pid> * 1e6 + <sequence>`. It is far above any real pid (and above int32, so
//   process.kill refuses it outright: a handle can never signal a real process). Its format is this
//   launcher's own business: `started(pid)` is how the others tell a recorded handle from a pid.
// - The registry of live instances says whether a handle is alive (and, with `expectArg`, whether its
//   command line carries that argument, like /proc/<pid>/cmdline for a real process). Another process
//   cannot see the registry: to it a handle is alive while the worker process named in it is.
// - Kill: with a grace period a graceful stop (QEMU on SIGTERM: SHUTDOWN, exit 0), without one a crash
//   (SIGKILL: sockets reset, no SHUTDOWN).
// - Fds (`fdAccess`, for fd-handover.ts): an instance's taps and RAM are the simulator's fds (its
//   `heldFds`, like /proc/<pid>/fd); taking one (`dupFd`, like pidfd_getfd) yields a token, a negative number
//   that can never name a real fd (closeSync refuses it), kept in this worker until closed. A destination
//   launched with tokens in `passFds` inherits what they stand for as fds 3, 4, … (`-netdev tap,fd=3`), and
//   `/proc/<handle>/fd/<n>` names fd n of the instance (its guest RAM for `memory-backend-file,mem-path=`).
//
// In-process VMs live exactly as long as the worker process: a host worker that exits or is restarted loses
// them (their records then name a handle that is not alive). Fault tests that kill workers use real processes.
import { appendFileSync } from 'node:fs';
import type { SimFd, SimulatedQemu } from '../../infra/simulator';
import type { BinaryEntry } from './config';
import {
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
import { processAlive } from './process-launcher';
import { FdHandoverError, type FdAccess } from './proc-fds';
import { simulatorPath, type SimulatorSpec } from './simulator-spec';

type SimulatorModule = typeof import('../../infra/simulator');
type SimulatorArgsModule = typeof import('../../infra/simulator/args');

let loaded: { sim: SimulatorModule; args: SimulatorArgsModule } | undefined;
/** The simulator is loaded on first use, so processes that never simulate do not pay for it. */
function simulator(): { sim: SimulatorModule; args: SimulatorArgsModule } {
  loaded ??= {
    sim: require('../../infra/simulator') as SimulatorModule,
    args: require('../../infra/simulator/args') as SimulatorArgsModule,
  };
  return loaded;
}

// ---------------------------------------------------------------------------------------------------------
// The synthetic binary path

/** The simulator's own options (`--sim-*`), put before QEMU's. */
export function simulatorArgs(spec: SimulatorSpec, o: { ledger?: boolean } = {}): string[] {
  return [
    ...['--sim-dialect', spec.dialect, '--sim-version', spec.version],
    ...(spec.stateDir !== undefined && o.ledger !== false ? ['--sim-state-dir', spec.stateDir] : []),
    ...(spec.ramRateMbps !== undefined ? ['--sim-ram-rate-mbps', String(spec.ramRateMbps)] : []),
    ...(spec.transferableKinds !== undefined ? ['--sim-transferable-kinds', spec.transferableKinds.join(',')] : []),
  ];
}

// ---------------------------------------------------------------------------------------------------------
// Handles

const HANDLE_BASE = 1e15;
const HANDLE_SPAN = 1e6;
let sequence = 0;

/** Whether a pid is one of our handles (of this worker or another). */
function isHandle(pid: number): boolean {
  return Number.isSafeInteger(pid) && pid >= HANDLE_BASE;
}

/** The worker process that holds the instance of a handle. */
function handleOwnerPid(handle: number): number {
  return Math.floor((handle - HANDLE_BASE) / HANDLE_SPAN);
}

function nextHandle(): number {
  for (;;) {
    sequence = (sequence % (HANDLE_SPAN - 1)) + 1;
    const h = HANDLE_BASE + process.pid * HANDLE_SPAN + sequence;
    if (!live.has(h)) return h;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The registry of live instances

export interface SimulatedInstance {
  handle: number;
  vmId: string;
  role: LaunchQemuOptions['role'];
  generation: number;
  qmpSocket: string;
  logFile: string;
  argv: string[];
  vm: SimulatedQemu;
}

const live = new Map<number, SimulatedInstance>();

/** The live in-process instances of this process. */
export function simulatedInstances(): SimulatedInstance[] {
  return [...live.values()];
}

/** The simulated QEMU behind a handle, while it lives (tests read its ledger identity from it). */
export function simulatedQemuOf(handle: number): SimulatedQemu | undefined {
  return live.get(handle)?.vm;
}

function simulatedAlive(handle: number, expectArg?: string): boolean {
  const inst = live.get(handle);
  if (inst) return !inst.vm.dead && (expectArg === undefined || inst.argv.some((a) => a.includes(expectArg)));
  const owner = handleOwnerPid(handle);
  // Not ours: it can only be alive while the process holding it is.
  return owner !== process.pid && processAlive(owner);
}

/** Graceful stop with a grace period, crash without. */
async function killSimulated(handle: number, opts: KillOptions): Promise<KillOutcome> {
  if (!simulatedAlive(handle, opts.expectArg)) return 'not-running';
  const inst = live.get(handle);
  if (!inst) {
    throw new Error(
      `simulated QEMU ${handle} runs inside process ${handleOwnerPid(handle)}: only that process can stop it`,
    );
  }
  if (opts.graceMs > 0) {
    await inst.vm.stop();
    return 'terminated';
  }
  inst.vm.crash();
  await inst.vm.exited;
  return 'killed';
}

/** Stops every in-process instance gracefully (a host worker that ends takes its VMs with it). */
export async function stopSimulatedQemus(): Promise<void> {
  await Promise.all([...live.values()].map((i) => i.vm.stop()));
}

// ---------------------------------------------------------------------------------------------------------
// Fds of in-process instances

/** Fds this worker took from instances and has not closed: token → what it stands for. */
const taken = new Map<number, SimFd>();
let tokenSeq = 0;

function heldFdsOf(pid: number) {
  const vm = live.get(pid)?.vm;
  return vm && !vm.dead ? vm.heldFds() : [];
}

/** fd-handover's access to the fds of in-process simulated QEMUs (handles). */
const simulatedFdAccess: FdAccess = {
  // The instances are this worker's own: nothing stops it from taking their fds.
  ability: () => ({ possible: true }),
  tapFdsOf(pid) {
    const out = new Map<string, number[]>();
    for (const f of heldFdsOf(pid)) if (f.kind === 'tap') out.set(f.ifname, [...(out.get(f.ifname) ?? []), f.fd]);
    return out;
  },
  ramMemfdOf(pid, bytes, files) {
    const found = heldFdsOf(pid).filter((f) => f.kind === 'ram' && (f.ram.memfd || files) && f.ram.bytes === bytes);
    return found.length === 1 ? found[0]!.fd : undefined;
  },
  takeFds(pid, fds) {
    const vm = live.get(pid)?.vm;
    if (!vm || vm.dead) throw new FdHandoverError(`pidfd_open(${pid}): ESRCH: no such process`);
    const tokens: number[] = [];
    for (const fd of fds) {
      const dup = vm.dupFd(fd);
      if (!dup) {
        simulatedFdAccess.closeFds(tokens);
        throw new FdHandoverError(`pidfd_getfd(pid ${pid}, fd ${fd}): EBADF: no such fd in that process`);
      }
      const token = -++tokenSeq;
      taken.set(token, dup);
      tokens.push(token);
    }
    return tokens;
  },
  owns: (token) => taken.has(token),
  closeFds(tokens) {
    for (const t of tokens) taken.delete(t);
  },
};

/** What a launch's passFds stand for, in order; a simulated QEMU can inherit only fds taken from one. */
function inheritedFds(passFds: readonly number[] | undefined): SimFd[] {
  return (passFds ?? []).map((fd) => {
    const f = taken.get(fd);
    if (!f) throw new Error(`fd ${fd} was not taken from a simulated QEMU: an in-process QEMU cannot inherit it`);
    return f;
  });
}

// ---------------------------------------------------------------------------------------------------------
// Launch, probe, help

function appendLog(file: string, text: string): void {
  try {
    appendFileSync(file, text, { mode: 0o600 });
  } catch {
    /* the log is best effort, as a QEMU's stderr */
  }
}

/**
 * Launches a simulator binary: the same checks and files as a real launch (prepareLaunch), the same errors
 * (QemuLaunchError with the log's tail), the instance registered under a new handle.
 */
async function launchSimulated(o: LaunchQemuOptions): Promise<LaunchedQemu> {
  const spec = specOf(o.binary);
  const { qmpSocket, logFile } = await prepareLaunch(o);
  const { sim, args } = simulator();
  const argv = [...simulatorArgs(spec), ...o.args];
  appendLog(
    logFile,
    `--- ${new Date().toISOString()} launching ${o.role} of ${o.vmId} (generation ${o.generation}) in-process: ${simulatorPath(spec)} ${o.args.join(' ')}\n`,
  );
  const stderr = (text: string) => appendLog(logFile, text);
  const handle = nextHandle();
  let vm: SimulatedQemu;
  try {
    vm = new sim.SimulatedQemu(argv, { stderr, pid: handle, inheritedFds: inheritedFds(o.passFds) });
    await vm.start();
  } catch (err) {
    if (!(err instanceof args.CommandLineError)) throw err;
    // As QEMU: the error on stderr, exit status 1.
    stderr(args.errorLine(err.message, args.wantsMsgTimestamp(argv)));
    throw new QemuLaunchError(
      `QEMU ${o.role} of ${o.vmId} exited before it was ready (code 1, signal null)`,
      logTail(logFile),
      1,
      null,
    );
  }
  live.set(handle, {
    handle,
    vmId: o.vmId,
    role: o.role,
    generation: o.generation,
    qmpSocket,
    logFile,
    argv,
    vm,
  });
  void vm.exited.then((code) => {
    if (live.get(handle)?.vm === vm) live.delete(handle);
    appendLog(logFile, `--- ${new Date().toISOString()} exited with status ${code}\n`);
  });
  return { pid: handle, qmpSocket, logFile };
}

/** A simulated QEMU for binary-probe's `-machine none` probe: no ledger, stopped by `kill`. */
function startSimulatedProbe(binary: BinaryEntry, qemuArgs: string[]): ProbeProcess {
  const spec = specOf(binary);
  const { sim } = simulator();
  let stderr = '';
  let vm: SimulatedQemu | undefined;
  const exited = (async (): Promise<never> => {
    let code: number;
    try {
      vm = new sim.SimulatedQemu([...simulatorArgs(spec, { ledger: false }), ...qemuArgs], {
        stderr: (t) => (stderr += t),
      });
      await vm.start();
      code = await vm.exited;
    } catch (err) {
      stderr += (err as Error).message;
      code = 1;
    }
    throw new Error(`${simulatorPath(spec)} exited (code ${code}) while probed: ${stderr.trim()}`);
  })();
  return { exited, kill: () => vm?.crash() };
}

/** What `<simulator> <args>` prints on stdout for `-machine <type>,help`. */
function simulatorHelp(binary: BinaryEntry, qemuArgs: string[]): string {
  return simulator().args.parseArgs([...simulatorArgs(specOf(binary), { ledger: false }), ...qemuArgs]).help ?? '';
}

function specOf(binary: BinaryEntry): SimulatorSpec {
  if (!binary.simulator) throw new Error(`${binary.path} is not a simulator binary`);
  return binary.simulator;
}

/** QEMUs simulated inside this process: a host config's `simulator` binaries. */
export const simulatorLauncher: QemuLauncher = {
  kind: 'simulator',
  launch: launchSimulated,
  isAlive: simulatedAlive,
  kill: killSimulated,
  started: isHandle,
  fdAccess: simulatedFdAccess,
  startProbe: startSimulatedProbe,
  help: async (binary, args) => simulatorHelp(binary, args),
  // Nothing on disk identifies it: probed in-process, cached in memory only.
  buildStamp: async () => undefined,
};
