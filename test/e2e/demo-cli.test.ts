// `fleet-upgrade demo` through the compiled command line on real QEMU with a real Linux guest: --keep leaves
// the VM, its network namespace and the dev server running and lists them, `demo --stop` stops exactly those
// (on the simulator, whose VMs live in the demo's process, only the dev server stays);
// Ctrl-C (SIGINT to the demo's whole process group, as a terminal sends it) stops the demo mid-way and
// everything it started. As root: the guest's tap is on a bridge in the demo host's own namespace, pinged.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { guestImage } from '../../infra/guest/linux-guest';
import { projectRoot, qemu10, qemu72, requireQemu, requireRealPart } from '../../infra/real-parts';
import type { DemoSummary } from '../../workers/commands/demo';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';
import { killProcessesUnder } from './rollout-support';

jest.setTimeout(300_000);

const CLI = path.join(projectRoot, 'bin', 'fleet-upgrade.js');
let tmp: TmpDir;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function demo(args: string[], o: { interruptWhen?: RegExp } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.TEMPORAL_ADDRESS;
    // Its own process group, like a shell job: Ctrl-C reaches every process of the group.
    const child = spawn(process.execPath, [CLI, 'demo', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (o.interruptWhen && !sent && o.interruptWhen.test(stderr)) {
        sent = true;
        process.kill(-child.pid!, 'SIGINT');
      }
    });
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 240_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** `demo --stop <dir>`'s exit code. */
function demoStop(dir: string): Promise<number | null> {
  return new Promise((resolve) => {
    spawn(process.execPath, [CLI, 'demo', '--stop', dir], { stdio: 'ignore' }).once('close', resolve);
  });
}

function processesNaming(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(dir))) out.push(`${entry}: ${argv.join(' ')}`);
    } catch {
      /* gone */
    }
  }
  return out;
}

function namespaces(): string[] {
  try {
    return execFileSync('/usr/sbin/ip', ['netns', 'list'])
      .toString()
      .split('\n')
      .map((l) => l.split(' ')[0]!);
  } catch {
    return [];
  }
}

beforeAll(() => {
  requireRealPart('the compiled command line (npm run build)', path.join(projectRoot, 'dist', 'workers', 'cli.js'));
  requireQemu(qemu72);
  requireQemu(qemu10);
  guestImage(projectRoot);
  tmp = makeTmpDir('demo');
});

afterAll(() => {
  if (tmp) killProcessesUnder(tmp.path);
  for (const ns of namespaces())
    if (/^fu-demo-\d+-h\d+$/.test(ns) && !existsSync(`/proc/${ns.split('-')[2]}`)) {
      execFileSync('/usr/sbin/ip', ['netns', 'del', ns]);
    }
  tmp?.cleanup();
});

const root = process.getuid?.() === 0;

test('--keep: one real Linux guest upgraded, pinged, its disk checked; what is left is listed; demo --stop ends it', async () => {
  const dir = path.join(tmp.path, 'keep');
  const run = await demo([
    '--qemu',
    'real',
    '--hosts',
    '1',
    '--vms-per-host',
    '1',
    '--json',
    '--keep',
    '--runtime-dir',
    dir,
  ]);
  if (run.code !== 0) process.stderr.write(run.stderr);
  expect(run.code).toBe(0);
  const summary = JSON.parse(run.stdout) as DemoSummary;
  expect(summary).toMatchObject({ state: 'completed', vms: 1, upgraded: 1, diskWritesLost: 0 });
  expect(summary.perVm[0]).toMatchObject({ outcome: 'upgraded', ram: 'shared', runsOn: '10.0.2' });
  expect(summary.perVm[0]!.diskWritesChecked).toBeGreaterThan(0);
  if (root) {
    expect(summary.pingGapMsMax).toEqual(expect.any(Number));
    expect(summary.kept!.netns).toHaveLength(1);
  } else {
    expect(summary.pingGapMsMax).toBeNull();
    expect(run.stderr).toMatch(/no network namespaces or taps, so the demo's VMs run without NICs/);
  }
  const kept = summary.kept!;
  expect(kept.stop).toBe(`fleet-upgrade demo --stop ${dir}`);
  expect(run.stderr).toContain(`stop all of it: fleet-upgrade demo --stop ${dir}`);
  expect(isProcessAlive(kept.devServer!.pid)).toBe(true);
  expect(isProcessAlive(kept.vms[0]!.pid)).toBe(true);
  for (const ns of kept.netns) expect(namespaces()).toContain(ns);
  process.stderr.write(
    `demo: ${summary.durationMs} ms; downtime ${summary.perVm[0]!.downtimeMs} ms, largest ping gap ${summary.pingGapMsMax} ms, ` +
      `${summary.perVm[0]!.diskWritesChecked} disk writes checked, ${summary.diskWritesLost} lost\n`,
  );

  const stop = await new Promise<Run>((resolve) => {
    const c = spawn(process.execPath, [CLI, 'demo', '--stop', dir, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  expect(stop.code).toBe(0);
  expect((JSON.parse(stop.stdout) as { stopped: string[] }).stopped.length).toBeGreaterThan(1);
  expect(processesNaming(dir)).toEqual([]);
  expect(isProcessAlive(kept.devServer!.pid)).toBe(false);
  for (const ns of kept.netns) expect(namespaces()).not.toContain(ns);

  const again = await demoStop(dir);
  expect(again).toBe(2);
});

test('--keep on the simulator: the demo exits, its simulated VMs stop with it, the dev server stays until --stop', async () => {
  const dir = path.join(tmp.path, 'keep-sim');
  // Within the demo's own time, not the 240 s kill of demo(): a process kept alive by its simulated VMs fails.
  const started = Date.now();
  const run = await demo([
    '--qemu',
    'sim',
    '--hosts',
    '1',
    '--vms-per-host',
    '2',
    '--json',
    '--keep',
    '--runtime-dir',
    dir,
  ]);
  if (run.code !== 0) process.stderr.write(run.stderr);
  expect(run.code).toBe(0);
  expect(Date.now() - started).toBeLessThan(60_000);
  const summary = JSON.parse(run.stdout) as DemoSummary;
  expect(summary).toMatchObject({ state: 'completed', vms: 2, upgraded: 2 });
  expect(summary.kept!.vms).toEqual([]);
  expect(isProcessAlive(summary.kept!.devServer!.pid)).toBe(true);
  const stopped = await demoStop(dir);
  expect(stopped).toBe(0);
  expect(isProcessAlive(summary.kept!.devServer!.pid)).toBe(false);
  expect(processesNaming(dir)).toEqual([]);
});

test('Ctrl-C while the guests boot stops the demo and everything it started', async () => {
  const dir = path.join(tmp.path, 'int');
  const before = namespaces();
  const run = await demo(['--qemu', 'real', '--hosts', '2', '--vms-per-host', '1', '--runtime-dir', dir], {
    interruptWhen: /waiting for 2 Linux guests to boot/,
  });
  expect(run.code).toBe(130);
  expect(run.stderr).toMatch(/SIGINT: stopping the demo and everything it started/);
  expect(run.stderr).toMatch(/stopped; nothing of the demo is left running/);
  expect(processesNaming(dir)).toEqual([]);
  expect(namespaces().filter((ns) => !before.includes(ns))).toEqual([]);
});
