// Launches real QEMU processes for integration tests: a given argv plus a QMP UNIX socket, waits for the
// socket to accept connections, and kills the process on cleanup. Socket paths stay short (under /tmp, see
// tmp.ts) because sun_path is limited to 108 bytes. A missing binary fails loudly (requireQemu).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { requireQemu, type QemuBuild } from '../../infra/real-parts';
import { QmpClient, type QmpClientOptions } from '../../activities/qmp/client';

export interface LaunchOptions {
  /** Folder for the QMP socket (short, e.g. from makeTmpDir). */
  dir: string;
  /** Name of this VM in the folder: the socket is `<dir>/<name>.qmp`. */
  name: string;
  /** Arguments after the common ones (machine, memory, drives, -incoming …). */
  args: string[];
  /**
   * Wait until the QMP socket accepts a connection before resolving (default true). A cpr-transfer
   * destination opens its monitor only after the source issued `migrate`: pass false and call
   * `waitForQmp()` later.
   */
  waitForQmp?: boolean;
  /** Bound on the wait for the socket (default 10 s). */
  timeoutMs?: number;
}

export class RealVm {
  private stderrText = '';
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    readonly build: QemuBuild,
    readonly argv: string[],
    readonly qmpSocket: string,
    readonly child: ChildProcess,
  ) {
    child.stderr?.on('data', (b: Buffer) => {
      if (this.stderrText.length < 64 * 1024) this.stderrText += b.toString('utf8');
    });
    child.stdout?.resume();
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve();
      });
      child.once('error', (err) => {
        this.stderrText += `\nspawn error: ${err.message}`;
        this.exitInfo = { code: null, signal: null };
        resolve();
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get stderr(): string {
    return this.stderrText;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** A description of the process for failure messages. */
  describe(): string {
    const exit = this.exitInfo ? ` exited (code ${this.exitInfo.code}, signal ${this.exitInfo.signal})` : ' running';
    return `QEMU ${this.build.label} '${this.name}' (pid ${this.pid})${exit}; stderr: ${this.stderrText.trim() || '(empty)'}`;
  }

  /**
   * Waits until the monitor answers a command (query-status) on a connection that is closed at once. Neither
   * the socket nor the greeting is proof of readiness: QEMU listens early, and 10.0.2 greets from its monitor
   * I/O thread before it opens its drives (it may still exit on an image lock after greeting). Commands run
   * in the main loop, so an answer means start-up is over.
   */
  async waitForQmp(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`${this.describe()} before its QMP socket was ready`);
      if (existsSync(this.qmpSocket) && (await answers(this.qmpSocket))) {
        // An exit right after answering would still be caught here.
        if (this.running) return;
      }
      if (Date.now() > deadline) {
        throw new Error(`${this.describe()}: no QMP answer at ${this.qmpSocket} within ${timeoutMs} ms`);
      }
      await sleep(20);
    }
  }

  /** Connects a QmpClient to this VM's monitor. */
  qmp(options: QmpClientOptions = {}): Promise<QmpClient> {
    return QmpClient.connect(this.qmpSocket, { timeoutMs: 10_000, ...options });
  }

  /** SIGKILLs the process (if alive) and waits for its exit. */
  async kill(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }
}

const live = new Set<RealVm>();

/**
 * Spawns `<binary> <-L dirs> -nodefaults -display none -accel tcg -qmp unix:<sock>,server=on,wait=off <args>`.
 * TCG keeps the tests independent of KVM access.
 */
export async function launchQemu(build: QemuBuild, options: LaunchOptions): Promise<RealVm> {
  // A missing binary or data folder fails loudly, naming the part and the command that installs it.
  requireQemu(build);
  const qmpSocket = path.join(options.dir, `${options.name}.qmp`);
  if (Buffer.byteLength(qmpSocket) > 100) throw new Error(`socket path too long for sun_path: ${qmpSocket}`);
  const argv = [
    ...build.dataDirs.flatMap((d) => ['-L', d]),
    '-nodefaults',
    '-display',
    'none',
    '-accel',
    'tcg',
    '-qmp',
    `unix:${qmpSocket},server=on,wait=off`,
    ...options.args,
  ];
  const child = spawn(build.binary, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const vm = new RealVm(options.name, build, argv, qmpSocket, child);
  live.add(vm);
  void vm.exited.then(() => live.delete(vm));
  if (options.waitForQmp ?? true) {
    try {
      await vm.waitForQmp(options.timeoutMs);
    } catch (err) {
      await vm.kill();
      throw err;
    }
  }
  return vm;
}

/** Kills every QEMU this helper started and that still runs (for afterEach/afterAll). */
export async function killAllVms(): Promise<void> {
  await Promise.all([...live].map((vm) => vm.kill()));
}

/** Arguments for a small guest booting the counter disk: machine, 64 MiB, the raw IDE drive. */
export function counterGuestArgs(machine: string, disk: string, extra: string[] = []): string[] {
  return ['-machine', machine, '-m', '64M', '-drive', `file=${disk},format=raw,if=ide`, ...extra];
}

async function answers(socketPath: string, timeoutMs = 2_000): Promise<boolean> {
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(socketPath, { timeoutMs });
    await qmp.execute('query-status');
    return true;
  } catch {
    return false;
  } finally {
    await qmp?.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const schemaCache = new Map<string, unknown[]>();

/**
 * The `query-qmp-schema` answer of a real build, read once per test process from a QEMU started with
 * `-machine none -S` (the schema does not depend on the machine).
 */
export async function realSchema(build: QemuBuild, dir: string): Promise<unknown[]> {
  const cached = schemaCache.get(build.binary);
  if (cached) return structuredClone(cached);
  const vm = await launchQemu(build, {
    dir,
    name: `schema-${schemaCache.size}-${process.pid}`,
    args: ['-machine', 'none', '-S'],
  });
  try {
    const qmp = await vm.qmp();
    try {
      const schema = await qmp.execute<unknown[]>('query-qmp-schema');
      schemaCache.set(build.binary, schema);
      return structuredClone(schema);
    } finally {
      await qmp.close();
    }
  } finally {
    await vm.kill();
  }
}
