// `--json` means exactly one JSON document on stdout, logs and progress on stderr. Through the real command
// line (`node bin/fleet-upgrade.js`, the compiled build) against a real dev server: the client commands that
// take --json and answer without a worker (vm upgrade without --wait, vm status of the run, terminated so
// that no progress query waits for an orchestrator, hosts, inventory, rollout list, schedule list); the JSON logger of the workers and the bench (pino) writes to stderr; the bench's
// usage. Also that the CLI stays light, which keeps `--help` and `vm status` quick: loading it loads no
// Temporal SDK, zod or koffi, `vm status` no @temporalio/worker; and the constants its light module mirrors
// (workers/commands/common.ts) agree with their owners.
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { SAFE_ID, SAFE_LABEL } from '../../activities/host/validate';
import { startDevServer, type DevServer } from '../../infra/devserver';
import { projectRoot, requireRealPart } from '../../infra/real-parts';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import * as common from '../../workers/commands/common';
import { SCHEDULE_PREFIX } from '../../workers/commands/schedule';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';

jest.setTimeout(120_000);

const CLI = path.join(projectRoot, 'bin', 'fleet-upgrade.js');
const dist = path.join(projectRoot, 'dist');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let server: DevServer;

function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TEMPORAL_ADDRESS: server.address, TEMPORAL_NAMESPACE: server.namespace },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The one JSON document on stdout (JSON.parse fails on a log line before or after it). */
function oneDocument(run: Run): unknown {
  if (run.code !== 0) throw new Error(`exit ${run.code}: ${run.stderr}`);
  return JSON.parse(run.stdout);
}

/** The packages a script loaded, from a fresh node process. */
function packagesLoadedBy(script: string): string[] {
  const r = spawnSync(
    process.execPath,
    [
      '-e',
      `${script}; const seen = new Set(); for (const f of Object.keys(require.cache)) { const m = /node_modules\\/((@[^/]+\\/)?[^/]+)/.exec(f); if (m) seen.add(m[1]); } process.stdout.write(JSON.stringify([...seen]));`,
    ],
    { cwd: projectRoot, encoding: 'utf8', timeout: 60_000 },
  );
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as string[];
}

beforeAll(async () => {
  requireRealPart('the compiled command line (npm run build)', path.join(dist, 'workers', 'cli.js'));
  server = await startDevServer({ headless: true, searchAttributes: searchAttributeTypes });
});

afterAll(async () => {
  await server?.stop();
});

test('client commands with --json: one JSON document on stdout', async () => {
  const started = oneDocument(await cli('vm', 'upgrade', '--host', 'h1', '--vm', 'vm1', '--to', 'new', '--json'));
  expect(started).toMatchObject({ workflowId: 'upgrade-vm/h1/vm1', status: 'RUNNING' });
  const connection = await Connection.connect({ address: server.address });
  try {
    const client = new Client({ connection, namespace: server.namespace });
    await client.workflow.getHandle('upgrade-vm/h1/vm1').terminate('no workers in this test');
  } finally {
    await connection.close();
  }
  expect(oneDocument(await cli('vm', 'status', '--host', 'h1', '--vm', 'vm1', '--json'))).toMatchObject({
    workflowId: 'upgrade-vm/h1/vm1',
    status: 'TERMINATED',
  });
  expect(oneDocument(await cli('hosts', '--json'))).toEqual([]);
  expect(oneDocument(await cli('inventory', '--json'))).toMatchObject({ hosts: [], summary: { vms: 0 } });
  expect(oneDocument(await cli('rollout', 'list', '--json'))).toEqual([]);
  expect(oneDocument(await cli('schedule', 'list', '--json'))).toEqual([]);
});

test('the JSON logger of the workers and the bench writes to stderr, never stdout', () => {
  const r = spawnSync(
    process.execPath,
    [
      '-e',
      `const { logger } = require(${JSON.stringify(path.join(dist, 'workers', 'telemetry.js'))});
       logger.info({ vmId: 'vm1' }, 'a log line'); process.stdout.write('{"answer":1}\\n');`,
    ],
    { encoding: 'utf8', env: { ...process.env, FLEET_LOG_LEVEL: 'info' }, timeout: 30_000 },
  );
  expect(r.status).toBe(0);
  expect(JSON.parse(r.stdout)).toEqual({ answer: 1 });
  expect(JSON.parse(r.stderr)).toMatchObject({ msg: 'a log line', vmId: 'vm1' });
});

test('the bench says its options on --help', () => {
  const r = spawnSync(process.execPath, [path.join(dist, 'infra', 'bench', 'main.js'), '--help'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/--json .*one JSON object on stdout/);
});

test('the CLI loads light: --help no Temporal SDK, zod or koffi; vm status no worker SDK', () => {
  const cliJs = JSON.stringify(path.join(dist, 'workers', 'cli.js'));
  const atHelp = packagesLoadedBy(`require(${cliJs}).buildProgram()`);
  expect(atHelp).toEqual(['commander']);
  const vmJs = JSON.stringify(path.join(dist, 'workers', 'commands', 'vm.js'));
  const atStatus = packagesLoadedBy(`require(${cliJs}).buildProgram(); require(${vmJs})`);
  expect(atStatus).toContain('@temporalio/client');
  for (const heavy of ['@temporalio/worker', 'zod', 'koffi', 'pino', 'prom-client'])
    expect(atStatus).not.toContain(heavy);
});

test("the light module's constants agree with their owners", () => {
  expect(common.orchestratorTaskQueue).toBe(orchestratorTaskQueue);
  expect(common.SAFE_ID.source).toBe(SAFE_ID.source);
  expect(common.SAFE_LABEL.source).toBe(SAFE_LABEL.source);
  expect(common.SCHEDULE_PREFIX).toBe(SCHEDULE_PREFIX);
});
