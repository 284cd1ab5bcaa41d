// The operator's per-VM commands end to end, through the compiled command line (`node bin/fleet-upgrade.js`)
// against a real dev server, the orchestrator worker and a host worker on a simulated host: `vm upgrade`
// with policy flags and --json, `vm cancel` (mid-migration: the VM rolls back; nothing in flight: exit 1),
// and `inventory` (every VM with label, version, state and last upgrade; a host that does not answer is
// listed as such, exit 3).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { readVmRecord } from '../../activities/host/vm-record';
import { QmpClient } from '../../activities/qmp/client';
import { projectRoot, requireRealPart } from '../../infra/real-parts';
import type { UpgradeVmProgress } from '../../workflows/upgrade-vm';
import { orchestratorTaskQueue } from '../../workers/orchestrator-worker';
import type { Harness } from '../helpers/temporal-harness';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';
import {
  ensureSimulatorBuilt,
  killProcessesUnder,
  launchSimVms,
  simHost,
  sleep,
  startFleetHarness,
  type SimHost,
} from './rollout-support';

jest.setTimeout(180_000);

const CLI = path.join(projectRoot, 'bin', 'fleet-upgrade.js');

let harness: Harness;
let tmp: TmpDir;
let host: SimHost;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args, '--address', harness.settings.address], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TEMPORAL_ADDRESS: '', TEMPORAL_NAMESPACE: harness.settings.namespace },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  requireRealPart('the compiled command line (npm run build)', path.join(projectRoot, 'dist', 'workers', 'cli.js'));
  ensureSimulatorBuilt();
  tmp = makeTmpDir('vmc');
  host = simHost(tmp.path, 'c1');
  harness = await startFleetHarness();
  await harness.startHost(host.config);
  await launchSimVms(host, 3);
});

afterAll(async () => {
  await harness?.stop();
  if (tmp) killProcessesUnder(tmp.path);
  tmp?.cleanup();
});

test('vm upgrade: policy flags reach the workflow; --json prints the result; a bad flag is one line, exit 2', async () => {
  const bad = await cli('vm', 'upgrade', '--host', 'c1', '--vm', 'vm1', '--to', 'new', '--downtime-limit', '0');
  expect(bad.code).toBe(2);
  expect(bad.stdout).toBe('');
  expect(bad.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^fleet-upgrade: --downtime-limit: /)]);
  const badStrategy = await cli('vm', 'upgrade', '--host', 'c1', '--vm', 'vm1', '--to', 'new', '--strategies', 'warp');
  expect(badStrategy.code).toBe(2);
  expect(badStrategy.stderr).toMatch(/^fleet-upgrade: --strategies\[0\]: /);

  const run = await cli(
    'vm',
    'upgrade',
    '--host',
    'c1',
    '--vm',
    'vm1',
    '--to',
    'new',
    '--wait',
    '--json',
    '--strategies',
    'plain',
    '--downtime-limit',
    '500',
    '--bandwidth',
    '1000',
    '--progress-timeout',
    '60',
  );
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  const doc = JSON.parse(run.stdout) as { input: { policy: unknown }; result: { outcome: string; strategy: string } };
  expect(doc.input.policy).toEqual({
    strategies: ['plain'],
    downtimeLimitMs: 500,
    bandwidthLimitMiBps: 1000,
    progressTimeoutSec: 60,
  });
  expect(doc.result).toMatchObject({ outcome: 'upgraded', strategy: 'plain' });
  expect((await readVmRecord(host.config.runtimeDir, 'vm1'))?.binary.label).toBe('new');
});

test('vm cancel: mid-migration the VM rolls back to its source; with nothing in flight, exit 1', async () => {
  const none = await cli('vm', 'cancel', '--host', 'c1', '--vm', 'vm3');
  expect(none.code).toBe(1);
  expect(none.stderr.trim()).toBe('fleet-upgrade: no upgrade of vm3 on c1 is in flight');

  const before = await readVmRecord(host.config.runtimeDir, 'vm2');
  // The migration stalls (no byte moves) until cancelled: the cancel surely lands before the switchover.
  const qmp = await QmpClient.connect(before!.qmpSocket);
  await qmp.execute('x-sim-inject-fault', { phase: 'active', action: 'slow' });
  await qmp.close();
  const handle = await harness.client.workflow.start('upgradeVm', {
    taskQueue: orchestratorTaskQueue,
    workflowId: 'upgrade-vm/c1/vm2',
    args: [{ hostId: 'c1', vmId: 'vm2', target: 'new', policy: { strategies: ['plain'] } }],
  });
  // Cancel once bytes are moving.
  const deadline = Date.now() + 60_000;
  for (;;) {
    const p = await handle.query<UpgradeVmProgress>('progress').catch(() => undefined);
    if (p?.phase === 'migrate') break;
    if (Date.now() > deadline) throw new Error(`never reached migrate: ${JSON.stringify(p)}`);
    await sleep(100);
  }
  await sleep(500);
  const run = await cli('vm', 'cancel', '--host', 'c1', '--vm', 'vm2', '--wait', '--json');
  if (run.code !== 0) process.stderr.write(run.stdout);
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  const doc = JSON.parse(run.stdout) as { outcome: string; phaseAtCancel: string; workflowId: string };
  expect(doc).toMatchObject({ workflowId: 'upgrade-vm/c1/vm2', phaseAtCancel: 'migrate' });
  expect(['cancelled', 'rolled-back']).toContain(doc.outcome);
  const after = await readVmRecord(host.config.runtimeDir, 'vm2');
  expect(after).toMatchObject({ binary: { label: 'old' }, generation: before!.generation, pid: before!.pid });
  expect(isProcessAlive(after!.pid, after!.qmpSocket)).toBe(true);

  const again = await cli('vm', 'cancel', '--host', 'c1', '--vm', 'vm2');
  expect(again.code).toBe(1);
  expect(again.stderr).toMatch(
    /no upgrade of vm2 on c1 is in flight \(the last one, run .* is (CANCELLED|COMPLETED)\)/,
  );
});

test('inventory: every VM with label, version, state and last upgrade; a host that does not answer is listed', async () => {
  const run = await cli('inventory', '--target', 'new', '--json');
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  const doc = JSON.parse(run.stdout) as {
    hosts: Array<{ hostId: string; ok: boolean; vms: Array<Record<string, unknown>> }>;
    summary: Record<string, unknown>;
  };
  expect(doc.hosts).toHaveLength(1);
  const vms = doc.hosts[0]!.vms;
  expect(vms.map((v) => v.vmId)).toEqual(['vm1', 'vm2', 'vm3']);
  expect(vms[0]).toMatchObject({
    label: 'new',
    version: '10.1.50',
    state: 'running',
    machineType: 'pc-i440fx-7.2',
    lastUpgrade: { status: 'COMPLETED', outcome: 'upgraded', target: 'new' },
  });
  expect(vms[1]).toMatchObject({ label: 'old', version: '10.0.50', state: 'running' });
  expect(['CANCELLED', 'COMPLETED']).toContain((vms[1]!.lastUpgrade as { status: string }).status);
  expect(vms[2]).toMatchObject({ label: 'old', lastUpgrade: { status: 'NONE' } });
  expect(doc.summary).toMatchObject({
    hosts: 1,
    vms: 3,
    hostsNotAnswering: [],
    byVersion: { 'new (10.1.50)': 1, 'old (10.0.50)': 2 },
    target: 'new',
    leftToUpgrade: ['c1/vm2', 'c1/vm3'],
  });

  const text = await cli('inventory', '--host', 'c1', '--host', 'ghost', '--target', 'new', '--timeout', '3');
  expect(text.code).toBe(3);
  expect(text.stdout).toMatch(/^ghost\s+\?\s+NOT ANSWERING\s+no worker is polling qemu-host\.ghost$/m);
  expect(text.stdout).toMatch(/^c1\s+vm1\s+new\s+10\.1\.50\s+pc-i440fx-7\.2\s+running\s+upgraded → new$/m);
  expect(text.stdout).toMatch(
    /left to upgrade to new: 2 \(c1\/vm2 c1\/vm3\), plus the VMs of 1 hosts that did not answer/,
  );

  const bad = await cli('inventory', '--target', '../x');
  expect(bad.code).toBe(2);
  expect(bad.stderr.trim().split('\n')).toHaveLength(1);
});
