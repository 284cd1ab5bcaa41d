// Trust boundaries of a host worker, at its activity boundary: the activities object as
// the worker registers it (createHostActivities), run in a mock activity context, called with hostile input
// against a real runtime folder and VMs that are real processes (the QEMU simulator as an executable).
//   1. allow-list: no label outside the host config is probed or started; a VM record tampered to name
//      another binary (or a QMP socket outside the runtime folder) is not trusted;
//   2. paths: hostile VM ids and process generations are refused before anything is touched;
//   3. permissions: the runtime folder and its subfolders are 0700, records and process files 0600, the
//      sockets QEMU binds live only inside 0700 folders;
//   4. inventory: a valid VM id without a record is VmNotFound, and listVms reports only recorded VMs.
// Plus: a host config cannot point its runtime folder somewhere through a relative path or `..`.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { ConfigError } from '../../activities/host/validate';
import { launchVm } from '../../activities/host/vm-launch';
import { readVmRecord, type VmRecord } from '../../activities/host/vm-record';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { createHostActivities } from '../../activities/upgrade';
import type { HostActivities, ProcessRef } from '../../activities/upgrade/api';
import { decide, type MigrationPlan } from '../../workflows/decisions/plan';
import { defaultPolicy } from '../../workflows/decisions/policy';
import { failureTypes } from '../../workflows/failures';
import { writeSimBinary } from '../helpers/sim-binaries';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(60_000);

let tmp: TmpDir;
let root: string;
let config: HostConfig;
let activities: HostActivities;
let evilMarker: string;
let evilBinary: string;
const quiet = () => undefined;
// Refusals are what these cases expect: the SDK's "Activity failed" warnings would only bury the results.
const env = new MockActivityEnvironment(undefined, {
  logger: { log: quiet, trace: quiet, debug: quiet, info: quiet, warn: quiet, error: quiet },
});
const VM = 'vm1';
const SRC: ProcessRef = { generation: 1, label: 'old' };
const DST: ProcessRef = { generation: 2, label: 'new' };
const PLAN: MigrationPlan = { strategy: 'plain', dialect: 'none', transferBackends: [], machine: 'pc-i440fx-7.2' };

/** Calls one activity of the worker's activities object inside an activity context, as the worker does. */
function call<K extends keyof HostActivities>(name: K, input: unknown): Promise<unknown> {
  const fn = activities[name] as (i: unknown) => Promise<unknown>;
  return env.run(fn, input);
}

async function refusal(p: Promise<unknown>): Promise<ApplicationFailure> {
  const err = await p.then(
    (v) => {
      throw new Error(`expected a refusal, got ${JSON.stringify(v)}`);
    },
    (e: unknown) => e,
  );
  if (!(err instanceof ApplicationFailure)) throw new Error(`expected an ApplicationFailure, got ${String(err)}`);
  return err;
}

async function expectRefused(p: Promise<unknown>, type: string, what = ''): Promise<void> {
  const f = await refusal(p).catch((err: Error) => {
    throw new Error(`${what}: ${err.message}`);
  });
  expect({ what, type: f.type, nonRetryable: f.nonRetryable }).toEqual({ what, type, nonRetryable: true });
}

/** Every file and folder under `dir` with its mode, size and mtime (the ledger, written by the simulators, aside). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      const rel = path.relative(root, p);
      if (rel === 'ledger') continue;
      const s = lstatSync(p);
      out[rel] = `${s.mode.toString(8)} ${s.size} ${s.mtimeMs}`;
      if (s.isDirectory()) walk(p);
    }
  };
  const s = lstatSync(dir);
  out['.'] = `${s.mode.toString(8)} ${s.mtimeMs}`;
  walk(dir);
  return out;
}

/** Pids of processes whose command line names something under the test's folder (the simulated QEMUs). */
function processesUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(dir))) pids.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return pids.sort((a, b) => a - b);
}

function killProcessesUnder(dir: string): void {
  for (const pid of processesUnder(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Runs `fn` and asserts it touched nothing under the test's folder, started nothing, left nothing in /tmp. */
async function touchesNothing(fn: () => Promise<void>): Promise<void> {
  const before = snapshot(root);
  const procs = processesUnder(root);
  const tmpBefore = readdirSync('/tmp').filter((n) => n.startsWith('qtb-esc') || n.startsWith('x.'));
  await fn();
  expect(snapshot(root)).toEqual(before);
  expect(processesUnder(root)).toEqual(procs);
  expect(readdirSync('/tmp').filter((n) => n.startsWith('qtb-esc') || n.startsWith('x.'))).toEqual(tmpBefore);
  expect(existsSync(evilMarker)).toBe(false);
}

const recordPath = () => path.join(config.runtimeDir, 'vms', `${VM}.json`);

/** Rewrites the VM record on disk as an attacker with the worker's uid would, runs `fn`, restores it. */
async function withTamperedRecord(change: (r: VmRecord) => unknown, fn: () => Promise<void>): Promise<void> {
  const original = readFileSync(recordPath(), 'utf8');
  writeFileSync(recordPath(), JSON.stringify(change(JSON.parse(original) as VmRecord)));
  try {
    await fn();
  } finally {
    writeFileSync(recordPath(), original);
  }
}

beforeAll(async () => {
  tmp = makeTmpDir('qtb');
  root = tmp.path;
  const bin = path.join(root, 'bin');
  const ledger = path.join(root, 'ledger');
  mkdirSync(bin);
  mkdirSync(ledger);
  const old = writeSimBinary(bin, 'qemu-old', { dialect: 'none', version: '10.0.50', ledger });
  const neu = writeSimBinary(bin, 'qemu-new', { dialect: 'none', version: '10.1.50', ledger });
  // A binary outside the allow-list that leaves a mark when anything runs it.
  evilMarker = path.join(root, 'evil-ran');
  evilBinary = path.join(root, 'evil.sh');
  writeFileSync(evilBinary, `#!/bin/sh\necho "$@" >> ${evilMarker}\nexec ${old} "$@"\n`);
  chmodSync(evilBinary, 0o755);
  config = parseHostConfig({
    hostId: 'tb-host',
    runtimeDir: path.join(root, 'rt'),
    binaries: { old: { path: old }, new: { path: neu } },
    limits: { killGraceMs: 200, launchTimeoutMs: 20_000 },
  });
  activities = createHostActivities(config);
  const spec = parseVmSpec({
    id: VM,
    binary: 'old',
    machine: 'pc-i440fx-7.2',
    accel: 'tcg',
    memoryMiB: 16,
    memoryBackend: 'ram',
    memoryShared: false,
  });
  await launchVm({ config, spec, auxRamShare: false });
  // Both builds probed once, so later cases compare snapshots without a first probe's cache file in them.
  await call('probeTarget', { label: 'old' });
  await call('probeTarget', { label: 'new' });
});

afterAll(() => {
  if (!root) return;
  killProcessesUnder(root);
  tmp.cleanup();
});

describe('1. binary allow-list', () => {
  const hostileLabels = ['rogue', '7.2', '../bin/qemu-old', '/bin/sh', 'qemu-old', 'OLD', '', 'old\n'];

  test.each(hostileLabels)('probeTarget(%j) is NotAllowed and runs nothing', async (label) => {
    await touchesNothing(() => expectRefused(call('probeTarget', { label }), failureTypes.notAllowed));
  });

  test.each(hostileLabels)('startDestination with label %j is NotAllowed and launches nothing', async (label) => {
    await touchesNothing(() =>
      expectRefused(
        call('startDestination', { vmId: VM, source: SRC, destination: { generation: 2, label }, plan: PLAN }),
        failureTypes.notAllowed,
      ),
    );
  });

  test('a record tampered to name a binary outside the allow-list: that binary is never run', async () => {
    for (const binary of [
      { label: 'old', path: evilBinary },
      { label: 'rogue', path: evilBinary },
      { label: 'old', path: '/bin/sh' },
    ]) {
      await withTamperedRecord(
        (r) => ({ ...r, binary }),
        async () => {
          const inspected = (await call('inspectSource', { vmId: VM })) as { process: ProcessRef };
          expect(inspected.process).toEqual({ generation: 1, label: binary.label });
          // The destination's binary comes from its label in the config, never from the record.
          await call('startDestination', { vmId: VM, source: inspected.process, destination: DST, plan: PLAN });
          const proc = JSON.parse(readFileSync(path.join(config.runtimeDir, 'run', `${VM}.2.proc.json`), 'utf8')) as {
            pid: number;
          };
          // The simulator binary is a script that execs node: its version flag tells which build runs.
          expect(readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0')).toContain('10.1.50');
          const rolledBack = (await call('rollback', { vmId: VM, source: inspected.process, destination: DST })) as {
            runningIn: ProcessRef | null;
          };
          expect(rolledBack.runningIn).toEqual(inspected.process);
          expect(isProcessAlive(proc.pid)).toBe(false);
        },
      );
      expect(existsSync(evilMarker)).toBe(false);
    }
  });

  test('a record tampered to name a QMP socket outside the runtime folder: never connected to', async () => {
    const decoy = path.join(root, 'decoy.sock');
    let connections = 0;
    const server = net.createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(decoy, r));
    try {
      await withTamperedRecord(
        (r) => ({ ...r, qmpSocket: decoy }),
        async () => {
          for (const [name, input] of [
            ['inspectSource', { vmId: VM }],
            ['verify', { vmId: VM, destination: SRC, expectVersion: '10.0.50' }],
            ['startDestination', { vmId: VM, source: SRC, destination: DST, plan: PLAN }],
          ] as const) {
            await expect(call(name, input)).rejects.toBeInstanceOf(ApplicationFailure);
          }
        },
      );
    } finally {
      await new Promise((r) => server.close(r));
    }
    expect(connections).toBe(0);
  });
});

describe('2. paths: hostile ids and generations are refused before anything is touched', () => {
  const hostileIds: unknown[] = [
    '../x',
    'a/b',
    '..',
    '.',
    '.hidden',
    'a'.repeat(200),
    'vm1\0',
    'vm1\nx',
    '/etc/passwd',
    '../../../../../../../../tmp/qtb-esc',
    'x/../../../../../../../../tmp/qtb-esc',
    'VM1',
    '',
    42,
    null,
    { toString: () => 'vm1' },
  ];
  const inputs = (vmId: unknown): Array<[keyof HostActivities, unknown]> => [
    ['inspectSource', { vmId }],
    ['startDestination', { vmId, source: SRC, destination: DST, plan: PLAN }],
    ['migrate', { vmId, source: SRC, destination: DST, plan: PLAN, policy: defaultPolicy, ramMiB: 16 }],
    ['verify', { vmId, destination: DST, expectVersion: '10.1.50' }],
    ['finalize', { vmId, source: SRC, destination: DST }],
    ['rollback', { vmId, source: SRC, destination: DST }],
    ['inspectAndProbe', { vmId, label: 'new' }],
    ['startAndMigrate', { vmId, source: SRC, destination: DST, plan: PLAN, policy: defaultPolicy, ramMiB: 16 }],
    ['verifyAndFinalize', { vmId, source: SRC, destination: DST, expectVersion: '10.1.50' }],
  ];

  test.each(hostileIds.map((id) => [JSON.stringify(id) ?? String(id), id]))(
    'vmId %s: every activity that takes one says NotAllowed',
    async (_, vmId) => {
      await touchesNothing(async () => {
        for (const [name, input] of inputs(vmId)) {
          await expectRefused(call(name, input), failureTypes.notAllowed, name);
        }
      });
    },
  );

  const hostileGenerations: unknown[] = ['../../../x', '1/../../x', 0, -1, 1.5, Number.NaN, null, '2', 2 ** 60];
  test.each(hostileGenerations.map((g) => [String(g), g]))(
    'generation %s in a process ref: every activity that takes one says NotAllowed',
    async (_, generation) => {
      const bad = { generation, label: 'new' };
      await touchesNothing(async () => {
        for (const [name, input] of [
          ['startDestination', { vmId: VM, source: SRC, destination: bad, plan: PLAN }],
          ['migrate', { vmId: VM, source: bad, destination: DST, plan: PLAN, policy: defaultPolicy, ramMiB: 16 }],
          ['migrate', { vmId: VM, source: SRC, destination: bad, plan: PLAN, policy: defaultPolicy, ramMiB: 16 }],
          ['verify', { vmId: VM, destination: bad, expectVersion: '10.1.50' }],
          ['finalize', { vmId: VM, source: SRC, destination: bad }],
          ['finalize', { vmId: VM, source: bad, destination: DST }],
          ['rollback', { vmId: VM, source: SRC, destination: bad }],
          ['rollback', { vmId: VM, source: bad, destination: DST }],
          [
            'startAndMigrate',
            { vmId: VM, source: SRC, destination: bad, plan: PLAN, policy: defaultPolicy, ramMiB: 16 },
          ],
          [
            'startAndMigrate',
            { vmId: VM, source: bad, destination: DST, plan: PLAN, policy: defaultPolicy, ramMiB: 16 },
          ],
          ['verifyAndFinalize', { vmId: VM, source: SRC, destination: bad, expectVersion: '10.1.50' }],
          ['verifyAndFinalize', { vmId: VM, source: bad, destination: DST, expectVersion: '10.1.50' }],
        ] as const) {
          await expectRefused(call(name, input), failureTypes.notAllowed, name);
        }
      });
    },
  );

  test('the VM the hostile calls were aimed at still runs, untouched, in its first process', async () => {
    const rec = await readVmRecord(config.runtimeDir, VM);
    expect(rec).toMatchObject({ generation: 1, binary: { label: 'old' } });
    expect(isProcessAlive(rec!.pid, rec!.qmpSocket)).toBe(true);
  });
});

describe('3. permissions', () => {
  test('a launched VM and a started destination: folders 0700, records and process files 0600, sockets only in 0700 folders', async () => {
    const inspected = (await call('inspectSource', { vmId: VM })) as Parameters<typeof decide>[0];
    const target = (await call('probeTarget', { label: 'new' })) as Parameters<typeof decide>[1];
    const decision = decide(inspected, target, defaultPolicy);
    if (decision.kind !== 'plan') throw new Error(`refused: ${decision.reason}`);
    await call('startDestination', { vmId: VM, source: SRC, destination: DST, plan: decision.plan });
    try {
      const rt = config.runtimeDir;
      const modes: Record<string, string> = {};
      const sockets: string[] = [];
      const walk = (d: string) => {
        for (const name of readdirSync(d)) {
          const p = path.join(d, name);
          const s = lstatSync(p);
          modes[path.relative(rt, p)] = (s.mode & 0o777).toString(8);
          if (s.isSocket()) sockets.push(p);
          if (s.isDirectory()) walk(p);
        }
      };
      modes['.'] = (statSync(rt).mode & 0o777).toString(8);
      walk(rt);
      // What is there: both processes' QMP sockets, the record, the destination's process file, both logs.
      expect(sockets.map((s) => path.relative(rt, s)).sort()).toEqual([`run/${VM}.1.qmp`, `run/${VM}.2.qmp`]);
      for (const f of [
        `vms/${VM}.json`,
        `run/${VM}.2.proc.json`,
        `log/${VM}.1.source.log`,
        `log/${VM}.2.destination.log`,
      ])
        expect(modes).toHaveProperty([f]);
      const expected: Record<string, string> = {};
      for (const [rel, mode] of Object.entries(modes)) {
        const p = path.join(rt, rel);
        const s = lstatSync(p);
        if (s.isDirectory()) expected[rel] = '700';
        // QEMU writes its pidfile, like its sockets, with its own umask: it too lies in an owner-only folder.
        else if (s.isFile() && !rel.endsWith('.pid')) expected[rel] = '600';
        else expected[rel] = mode; // sockets: QEMU binds them with its own umask; see below
      }
      expect(modes).toEqual(expected);
      // Every socket lies in a folder only the owner can enter, all the way up to the runtime folder.
      for (const sock of sockets) {
        for (let d = path.dirname(sock); d.startsWith(rt); d = path.dirname(d)) {
          expect([d, statSync(d).mode & 0o077]).toEqual([d, 0]);
        }
      }
      // The runtime folder itself is owned by the worker's user.
      expect(statSync(rt).uid).toBe(process.getuid!());
    } finally {
      await call('rollback', { vmId: VM, source: SRC, destination: DST });
    }
    expect(existsSync(path.join(config.runtimeDir, 'run', `${VM}.2.proc.json`))).toBe(false);
  });

  // Switching user needs root and setpriv (util-linux), as CI has: without them this fails, it does not skip.
  test('another user (nobody) cannot reach the QMP sockets', () => {
    if (process.getuid!() !== 0 || !existsSync('/usr/bin/setpriv')) {
      throw new Error('checking access as user nobody needs root and /usr/bin/setpriv');
    }
    const visible = (p: string) => {
      try {
        execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'test', '-e', p], {
          stdio: 'ignore',
        });
        return true;
      } catch (err) {
        if ((err as { status?: number }).status !== 1) throw err;
        return false;
      }
    };
    // The test's own folder is 0700 (mkdtemp); open it up as /var/lib would be, so only the product's modes count.
    chmodSync(root, 0o755);
    try {
      expect(visible(config.runtimeDir)).toBe(true); // the control: nobody reaches the runtime folder's entry
      const run = path.join(config.runtimeDir, 'run');
      expect([
        visible(path.join(run, `${VM}.1.qmp`)),
        visible(run),
        visible(path.join(config.runtimeDir, 'vms')),
      ]).toEqual([false, false, false]);
    } finally {
      chmodSync(root, 0o700);
    }
  });
});

describe('4. inventory', () => {
  test('a valid VM id without a record: every activity says VmNotFound and nothing is launched', async () => {
    await touchesNothing(async () => {
      for (const [name, input] of [
        ['inspectSource', { vmId: 'vm2' }],
        ['startDestination', { vmId: 'vm2', source: SRC, destination: DST, plan: PLAN }],
        ['migrate', { vmId: 'vm2', source: SRC, destination: DST, plan: PLAN, policy: defaultPolicy, ramMiB: 16 }],
        ['verify', { vmId: 'vm2', destination: DST, expectVersion: '10.1.50' }],
        ['finalize', { vmId: 'vm2', source: SRC, destination: DST }],
        ['rollback', { vmId: 'vm2', source: SRC, destination: DST }],
      ] as const) {
        await expectRefused(call(name, input), failureTypes.vmNotFound, name);
      }
    });
  });

  test('listVms reports only recorded VMs, not stray files in the records folder', async () => {
    const vms = path.join(config.runtimeDir, 'vms');
    for (const name of ['Vm3.json', '.vm4.json', 'vm5.json.tmp', 'vm6.yaml', 'notes'])
      writeFileSync(path.join(vms, name), '{}', { mode: 0o600 });
    const inventory = (await call('listVms', {})) as { hostId: string; vms: unknown[] };
    expect(inventory).toEqual({
      hostId: 'tb-host',
      vms: [{ vmId: VM, label: 'old', generation: 1, running: true }],
    });
  });
});

describe('the runtime folder cannot be moved by the config', () => {
  const base = { hostId: 'h', binaries: { old: { path: '/usr/bin/qemu' } } };
  test.each(['rt', './rt', '../rt', '/var/lib/qf/../../etc', '/var/lib/qf/..', '/', '/var/lib/qf/./../x'])(
    'runtimeDir %j is refused',
    (runtimeDir) => {
      expect(() => parseHostConfig({ ...base, runtimeDir })).toThrow(ConfigError);
      expect(() => parseHostConfig({ ...base, runtimeDir })).toThrow(/^runtimeDir: /);
    },
  );
  test('an absolute runtimeDir is kept as given', () => {
    expect(parseHostConfig({ ...base, runtimeDir: '/var/lib/qf/' }).runtimeDir).toMatch(/^\/var\/lib\/qf\/?$/);
  });
});
