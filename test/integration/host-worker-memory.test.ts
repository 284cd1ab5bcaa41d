// `fleet-upgrade host-worker` bounds its own memory (bin/fleet-upgrade.js): started plainly, the worker runs
// with V8's young generation capped, its old generation bounded and MALLOC_ARENA_MAX=2, in the very process
// that was spawned (execve: the same pid, so systemd's SIGTERM reaches it and it drains, exit 0); a flag or
// MALLOC_ARENA_MAX the user set wins; FLEET_UPGRADE_NODE_TUNING=0 keeps Node's defaults. Through the real
// command line against a real dev server, on a host with simulated binaries and no VMs.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDevServer, type DevServer } from '../../infra/devserver';
import { projectRoot, requireRealPart } from '../../infra/real-parts';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(120_000);

const CLI = path.join(projectRoot, 'bin', 'fleet-upgrade.js');

let server: DevServer;
let tmp: TmpDir;
let config: string;
/** Workers started and not yet exited: a test that fails before stopping its worker leaves it to afterAll. */
const running = new Set<ChildProcess>();

interface Started {
  child: ChildProcess;
  argv: string[];
  env: Record<string, string>;
  exit: Promise<number | null>;
  output: () => string;
}

/** Starts a host worker, waits until it polls, and reads the command line and environment it runs with. */
async function startWorker(set: Record<string, string>): Promise<Started> {
  const env: NodeJS.ProcessEnv = { ...process.env, FLEET_LOG_LEVEL: 'info' };
  for (const name of ['NODE_OPTIONS', 'MALLOC_ARENA_MAX', 'FLEET_UPGRADE_NODE_TUNING', 'FLEET_UPGRADE_NODE_TUNED'])
    delete env[name];
  const child = spawn(process.execPath, [CLI, 'host-worker', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...env, ...set, TEMPORAL_ADDRESS: server.address, TEMPORAL_NAMESPACE: server.namespace },
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  running.add(child);
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  const deadline = Date.now() + 60_000;
  while (!/ polling\n/.test(out)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the host worker did not start:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const environ = readFileSync(`/proc/${child.pid}/environ`, 'utf8').split('\0').filter(Boolean);
  const vars = Object.fromEntries(environ.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  return { child, argv, env: vars, exit, output: () => out };
}

/** Waits until `ok()` holds, at most `ms`; then the assertion that follows tells. */
async function until(ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/** SIGTERM, as systemd stops it: the worker drains and exits 0. */
async function stopWorker(w: Started): Promise<void> {
  w.child.kill('SIGTERM');
  const timer = setTimeout(() => w.child.kill('SIGKILL'), 30_000);
  const code = await w.exit;
  clearTimeout(timer);
  expect({ code, output: code === 0 ? '' : w.output() }).toEqual({ code: 0, output: '' });
}

beforeAll(async () => {
  requireRealPart('the compiled command line (npm run build)', path.join(projectRoot, 'dist', 'workers', 'cli.js'));
  tmp = makeTmpDir('hwm');
  config = path.join(tmp.path, 'host.json');
  const simulator = (version: string) => ({ simulator: { dialect: 'local', version } });
  writeFileSync(
    config,
    JSON.stringify({
      hostId: 'mem-1',
      runtimeDir: path.join(tmp.path, 'rt'),
      binaries: { 'sim-old': simulator('10.0.50'), 'sim-new': simulator('10.1.50') },
    }),
  );
  server = await startDevServer({ headless: true, searchAttributes: searchAttributeTypes });
});

afterAll(async () => {
  for (const child of running) child.kill('SIGKILL');
  await server?.stop();
  tmp?.cleanup();
});

test('started plainly, the worker process itself runs with the memory settings, and drains on SIGTERM', async () => {
  const w = await startWorker({});
  expect(w.argv).toEqual(
    expect.arrayContaining(['--max-semi-space-size=1', '--max-old-space-size=96', CLI, 'host-worker']),
  );
  expect(w.env.MALLOC_ARENA_MAX).toBe('2');
  // Its logs name the pid that was spawned. The log lines go out on their own stream, and may come after the
  // `polling` line: wait for the first (bounded), then check whose pid it names.
  await until(() => /"pid":\d+/.test(w.output()), 10_000);
  expect(w.output()).toContain(`"pid":${w.child.pid}`);
  await stopWorker(w);
});

test('what the user set wins; FLEET_UPGRADE_NODE_TUNING=0 keeps Node defaults', async () => {
  const own = await startWorker({ NODE_OPTIONS: '--max-old-space-size=200', MALLOC_ARENA_MAX: '4' });
  expect(own.argv).toContain('--max-semi-space-size=1');
  expect(own.argv.join(' ')).not.toMatch(/--max-old-space-size/);
  expect(own.env.MALLOC_ARENA_MAX).toBe('4');
  await stopWorker(own);

  const plain = await startWorker({ FLEET_UPGRADE_NODE_TUNING: '0' });
  expect(plain.argv.join(' ')).not.toMatch(/--max-(semi|old)-space-size/);
  expect(plain.env.MALLOC_ARENA_MAX).toBeUndefined();
  await stopWorker(plain);
});
