// What `fleet-upgrade` reuses between calls to start quickly (bin/fleet-upgrade.js: the compiled code of its
// modules and where each `require` led, in a folder of the user's own; Node's own compile cache on Node 22.1+)
// changes nothing a call does: the same output and exit code as without it, a module's new content is what
// runs even when it has the same length as the old one (V8 itself would take the old code), a `require` that
// leads elsewhere after an install leads there, and a cache folder that cannot be used, or a damaged cache,
// costs only time. Through the real command line (the compiled build) and a stand-in checkout around a copy
// of bin/fleet-upgrade.js. And `vm status`, which sends its progress query with its describe rather than
// after it, answers as before: a run in flight with its progress, a closed one with its end and no progress.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot, requireRealPart } from '../../infra/real-parts';
import type { UpgradeVmProgress } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import { startHarness, type Harness } from '../helpers/temporal-harness';
import { useTmpDir } from '../helpers/tmp';

jest.setTimeout(120_000);

const bin = path.join(projectRoot, 'bin', 'fleet-upgrade.js');
const tmp = useTmpDir('qfcs');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(script: string, args: string[], env: Record<string, string>): Run {
  const r = spawnSync(process.execPath, [script, ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under a folder, with its size and modification time. */
function filesOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    const file = path.join(dir, entry);
    const st = statSync(file);
    if (st.isFile()) out[entry] = `${st.size} ${st.mtimeMs}`;
  }
  return out;
}

// `vm status` with a bad host id loads what every call of it loads (commander, @temporalio/client) and
// answers without a Temporal service.
const vmStatus = ['vm', 'status', '--host', 'HOST', '--vm', 'vm1', '--address', '127.0.0.1:1'];

test('the real CLI answers the same with and without its cache, writes the cache once and reuses it', () => {
  requireRealPart('the compiled command line (npm run build)', path.join(projectRoot, 'dist', 'workers', 'cli.js'));
  const cache = path.join(tmp(), 'cache');
  const plain = run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: '0', FLEET_UPGRADE_NODE_TUNING: '0' });
  expect(plain).toEqual({ code: 2, stdout: '', stderr: 'fleet-upgrade: --host: "HOST" is not a host id\n' });

  expect(run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: cache })).toEqual(plain);
  const written = filesOf(cache);
  expect(Object.keys(written).length).toBeGreaterThan(0);
  // Everything the call needs is there: the second call reads the cache and writes nothing.
  expect(run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: cache })).toEqual(plain);
  expect(filesOf(cache)).toEqual(written);

  const help = run(bin, ['--help'], { FLEET_UPGRADE_COMPILE_CACHE: cache });
  expect(help.code).toBe(0);
  expect(help.stdout).toMatch(/^Usage: fleet-upgrade /);
  expect(help).toEqual(run(bin, ['--help'], { FLEET_UPGRADE_COMPILE_CACHE: '0', FLEET_UPGRADE_NODE_TUNING: '0' }));
});

test('a cache folder that cannot be used, or a damaged cache, does not fail the call', () => {
  const plain = run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: '0' });
  expect(plain.code).toBe(2);
  // a file where the folder should be
  const notAFolder = path.join(tmp(), 'not-a-folder');
  writeFileSync(notAFolder, 'x');
  expect(run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: notAFolder })).toEqual(plain);
  expect(run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: path.join(notAFolder, 'below') })).toEqual(plain);
  // every file of a cache overwritten with garbage, then cut short
  const damaged = path.join(tmp(), 'damaged');
  expect(run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: damaged })).toEqual(plain);
  const files = Object.keys(filesOf(damaged));
  expect(files.length).toBeGreaterThan(0);
  for (const f of files) writeFileSync(path.join(damaged, f), Buffer.alloc(statSync(path.join(damaged, f)).size, 0xa5));
  expect(run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: damaged })).toEqual(plain);
  for (const f of Object.keys(filesOf(damaged))) writeFileSync(path.join(damaged, f), 'fleet-upgrade');
  expect(run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: damaged })).toEqual(plain);
  expect(run(bin, vmStatus, { FLEET_UPGRADE_COMPILE_CACHE: damaged })).toEqual(plain);
});

test("a module's new content runs, and a require follows an install, whatever the cache holds", () => {
  // A stand-in checkout: bin/fleet-upgrade.js as it is, a dist/workers/cli.js that prints what a package of
  // its node_modules says, and npm's record of the install.
  const root = path.join(tmp(), 'checkout');
  for (const dir of ['bin', 'dist/workers', 'node_modules/dep', '.cache'])
    mkdirSync(path.join(root, dir), { recursive: true });
  const standIn = path.join(root, 'bin', 'fleet-upgrade.js');
  copyFileSync(bin, standIn);
  writeFileSync(
    path.join(root, 'dist', 'workers', 'cli.js'),
    "exports.main = async () => { process.stdout.write(`${require('dep').word}\\n`); return 0; };\n",
  );
  const dep = path.join(root, 'node_modules', 'dep');
  const lock = path.join(root, 'node_modules', '.package-lock.json');
  writeFileSync(path.join(dep, 'package.json'), '{"name":"dep","main":"a.js"}');
  writeFileSync(path.join(dep, 'a.js'), "exports.word = 'alpha';\n");
  writeFileSync(lock, '{"lockfileVersion":3}');
  const say = () => run(standIn, ['vm', 'status'], { FLEET_UPGRADE_COMPILE_CACHE: '' });

  expect(say()).toEqual({ code: 0, stdout: 'alpha\n', stderr: '' });
  expect(say()).toEqual({ code: 0, stdout: 'alpha\n', stderr: '' });
  expect(Object.keys(filesOf(path.join(root, '.cache'))).length).toBeGreaterThan(0);

  // Same length, other content: V8 takes code made for the old source when the length matches.
  writeFileSync(path.join(dep, 'a.js'), "exports.word = 'bravo';\n");
  expect(say()).toEqual({ code: 0, stdout: 'bravo\n', stderr: '' });

  // An install that makes the package lead to another file (the old one still there).
  writeFileSync(path.join(dep, 'b.js'), "exports.word = 'charlie';\n");
  writeFileSync(path.join(dep, 'package.json'), '{"name":"dep","main":"b.js"}');
  writeFileSync(lock, '{"lockfileVersion":3,"packages":{}}');
  const later = new Date(Date.now() + 2_000);
  utimesSync(lock, later, later);
  expect(say()).toEqual({ code: 0, stdout: 'charlie\n', stderr: '' });

  // The file a require led to is gone, node_modules' record unchanged: the require is resolved again.
  rmSync(path.join(dep, 'b.js'));
  writeFileSync(path.join(dep, 'c.js'), "exports.word = 'delta';\n");
  writeFileSync(path.join(dep, 'package.json'), '{"name":"dep","main":"c.js"}');
  expect(say()).toEqual({ code: 0, stdout: 'delta\n', stderr: '' });
});

describe('vm status against a dev server and the orchestrator worker', () => {
  let harness: Harness | undefined;
  afterAll(async () => {
    await harness?.stop();
  });

  function status(...args: string[]): Promise<Run> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [bin, 'vm', 'status', '--host', 'nohost', '--vm', 'vm1', ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, TEMPORAL_ADDRESS: harness!.settings.address, TEMPORAL_NAMESPACE: 'default' },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('error', reject);
      child.once('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  test('a run in flight answers with its progress; a closed run with its end, without progress', async () => {
    requireRealPart('the compiled command line (npm run build)', path.join(projectRoot, 'dist', 'workers', 'cli.js'));
    harness = await startHarness();
    // No worker serves host `nohost`: the upgrade waits in its first phase, and answers its progress query.
    const handle = await harness.client.workflow.start('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId: 'upgrade-vm/nohost/vm1',
      args: [{ hostId: 'nohost', vmId: 'vm1', target: 'new' }],
    });
    const progress = await handle.query<UpgradeVmProgress>('progress');
    const runId = handle.firstExecutionRunId;

    const running = await status('--json');
    expect(running).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(running.stdout)).toEqual({
      workflowId: 'upgrade-vm/nohost/vm1',
      runId,
      status: 'RUNNING',
      progress,
    });
    expect(await status()).toEqual({
      code: 0,
      stdout: `upgrade-vm/nohost/vm1 (${runId}): RUNNING\n  phase ${progress.phase}\n`,
      stderr: '',
    });

    await handle.terminate('the test is over');
    expect(JSON.parse((await status('--json')).stdout)).toEqual({
      workflowId: 'upgrade-vm/nohost/vm1',
      runId,
      status: 'TERMINATED',
    });
    expect(await status()).toEqual({ code: 0, stdout: `upgrade-vm/nohost/vm1 (${runId}): TERMINATED\n`, stderr: '' });
  });
});
