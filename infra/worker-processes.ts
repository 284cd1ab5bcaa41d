// Workers as separate processes, as in production: `fleet-upgrade orchestrator-worker` and
// `fleet-upgrade host-worker --config <file>` started through the project's CLI, each resolved once it says
// it is polling. Used by the fleet benchmark and the fleet-scale tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from './real-parts';

const cli = path.join(projectRoot, 'bin', 'fleet-upgrade.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface WorkerProcess {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
  /** Neither exited nor killed yet. */
  alive(): boolean;
  output(): string;
}

/** Starts `fleet-upgrade <args>`; resolves once it printed `polling` (its output also goes to `logFile`). */
export async function startWorkerProcess(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  logFile: string,
  nodeArgs: string[] = [],
  timeoutMs = 300_000,
): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [...nodeArgs, cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const append = (d: Buffer) => {
    out += d.toString();
    writeFileSync(logFile, d, { flag: 'a' });
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const w: WorkerProcess = {
    name,
    child,
    exited: new Promise((r) => child.once('exit', () => r())),
    alive: () => child.exitCode === null && child.signalCode === null,
    output: () => out,
  };
  const deadline = Date.now() + timeoutMs;
  while (!/ polling\n/.test(out)) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} exited during start (${child.exitCode ?? child.signalCode}):\n${out.slice(-2000)}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${name} not polling after ${timeoutMs} ms:\n${out.slice(-2000)}`);
    }
    await sleep(50);
  }
  return w;
}

/** Stops a worker (SIGTERM: it finishes its tasks and exits; SIGKILL: a crash), SIGKILL after 20 s. */
export async function stopWorkerProcess(
  w: WorkerProcess | undefined,
  signal: NodeJS.Signals = 'SIGTERM',
): Promise<void> {
  if (!w || !w.alive()) return;
  w.child.kill(signal);
  const t = setTimeout(() => w.child.kill('SIGKILL'), 20_000);
  await w.exited;
  clearTimeout(t);
}

/** Runs `fn` over `items` with at most `limit` at once. */
export async function pool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}
