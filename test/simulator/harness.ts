// Test harness for the QEMU simulator: build it once, spawn simulated QEMU processes through the
// executable launcher (infra/simulator/qemu-sim.js), talk QMP with the simulator's tiny raw client.
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../../infra/real-parts';
import { launchSimulatedQemu, SimulatedQemu } from '../../infra/simulator';
import { RawQmp } from '../../infra/simulator/raw-qmp';

export const LAUNCHER = path.join(projectRoot, 'infra', 'simulator', 'qemu-sim.js');

/**
 * Where the tests' own build of the simulator goes. Not dist/: other builds write there concurrently.
 * Inside the project, so the simulator finds test/fixtures/schemas above itself.
 */
export const BUILD_DIR = path.join(projectRoot, '.cache', 'sim-build');

/**
 * Transpile the simulator (and the one file it imports from infra/) into BUILD_DIR, each file written
 * atomically; type checking is `npm run typecheck`'s job. The launcher runs it through QEMU_SIM_MAIN.
 */
export function buildSimulator(): void {
  const ts = require('typescript') as typeof import('typescript');
  const srcDir = path.join(projectRoot, 'infra', 'simulator');
  const files = [
    ...readdirSync(srcDir)
      .filter((f) => f.endsWith('.ts'))
      .map((f) => path.join(srcDir, f)),
    path.join(projectRoot, 'infra', 'real-parts.ts'),
  ];
  for (const f of files) {
    const out = path.join(BUILD_DIR, path.relative(projectRoot, f).replace(/\.ts$/, '.js'));
    const js = ts.transpileModule(readFileSync(f, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      fileName: f,
    }).outputText;
    mkdirSync(path.dirname(out), { recursive: true });
    if (existsSync(out) && readFileSync(out, 'utf8') === js) continue;
    const tmp = `${out}.${process.pid}.tmp`;
    writeFileSync(tmp, js);
    renameSync(tmp, out);
  }
  process.env.QEMU_SIM_MAIN = path.join(BUILD_DIR, 'infra', 'simulator', 'main.js');
}

/** The counter guest's boot sector (docs/DESIGN.md), as a raw image. */
export function writeBootImage(file: string): string {
  const sector = Buffer.alloc(512);
  Buffer.from([0x31, 0xc0, 0x8e, 0xd8, 0x66, 0xff, 0x06, 0x00, 0x7e, 0xeb, 0xf9]).copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  writeFileSync(file, sector);
  return file;
}

export interface SimProcess {
  proc: ChildProcess;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnSim(argv: string[]): SimProcess {
  const proc = spawn(process.execPath, [LAUNCHER, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { proc, stderr: () => err, exited };
}

/** Run the launcher to completion (for command-line errors). */
export async function runSim(argv: string[]): Promise<{ code: number | null; stderr: string }> {
  const p = spawnSim(argv);
  const { code } = await p.exited;
  return { code, stderr: p.stderr() };
}

export interface VmSpec {
  dir: string;
  /** Names the QMP socket and the guest. */
  name: string;
  sim?: string[];
  machine?: string;
  memMiB?: number;
  /** Extra QEMU options (netdevs, devices, -S, -incoming ...). */
  extra?: string[];
}

/** A VM like the product starts them: memfd RAM shared, aux-ram-share, counter guest, QMP socket. */
export function vmArgv(spec: VmSpec): { argv: string[]; qmp: string } {
  const mem = spec.memMiB ?? 32;
  const qmp = path.join(spec.dir, `${spec.name}.qmp`);
  const boot = path.join(spec.dir, 'boot.img');
  const argv = [
    ...(spec.sim ?? []),
    ...['-machine', `${spec.machine ?? 'pc-i440fx-7.2'},memory-backend=ram0,aux-ram-share=on`],
    ...['-m', String(mem)],
    ...['-object', `memory-backend-memfd,id=ram0,size=${mem}M,share=on`],
    ...['-name', `guest=${spec.name}`],
    ...['-drive', `file=${boot},format=raw,if=ide,id=disk0`],
    ...['-display', 'none', '-nodefaults', '-no-user-config', '-accel', 'tcg'],
    ...['-qmp', `unix:${qmp},server=on,wait=off`],
    ...(spec.extra ?? []),
  ];
  return { argv, qmp };
}

export interface RunningSim extends SimProcess {
  qmp: RawQmp;
  qmpPath: string;
}

/** A simulated QEMU in this Node process (same QMP, sockets and ledger; no process of its own). */
export interface InProcessSim {
  vm: SimulatedQemu;
  qmp: RawQmp;
  qmpPath: string;
  stderr(): string;
}

export async function startInProcess(spec: VmSpec): Promise<InProcessSim> {
  const { argv, qmp } = vmArgv(spec);
  let err = '';
  const vm = await launchSimulatedQemu(argv, { stderr: (t) => void (err += t) });
  return { vm, qmp: await RawQmp.connect(qmp), qmpPath: qmp, stderr: () => err };
}

/** Spawn and connect (negotiated). */
export async function startSim(spec: VmSpec): Promise<RunningSim> {
  const { argv, qmp } = vmArgv(spec);
  const p = spawnSim(argv);
  try {
    const conn = await Promise.race([
      RawQmp.connect(qmp, { timeoutMs: 10_000 }),
      p.exited.then(({ code }) => {
        throw new Error(`simulator ${spec.name} exited (${code}) before QMP came up: ${p.stderr()}`);
      }),
    ]);
    return { ...p, qmp: conn, qmpPath: qmp };
  } catch (err) {
    // The caller gets no process to stop: one whose monitor never answered must not outlive the test.
    p.proc.kill('SIGKILL');
    throw err;
  }
}

export function counterOf(hmp: string): number {
  const m = /^0000000000007e00: 0x([0-9a-f]{8})\r\n$/.exec(hmp);
  if (!m) throw new Error(`unexpected x output ${JSON.stringify(hmp)}`);
  return parseInt(m[1], 16);
}

export async function readCounter(q: RawQmp): Promise<number> {
  return counterOf(await q.cmd<string>('human-monitor-command', { 'command-line': 'x /1wx 0x7e00' }));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until pred holds (or throw after timeoutMs). */
export async function until<T>(f: () => Promise<T> | T, pred: (v: T) => boolean, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (pred(v)) return v;
    if (Date.now() > deadline)
      throw new Error(`condition not met within ${timeoutMs} ms; last value ${JSON.stringify(v)}`);
    await sleep(10);
  }
}

/** End whatever is still running at the end of a test. */
export async function reap(sims: Array<{ proc: ChildProcess } | InProcessSim>): Promise<void> {
  for (const s of sims) {
    if ('vm' in s) {
      s.qmp.close();
      await s.vm.stop();
    } else if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  }
}
