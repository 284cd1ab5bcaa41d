// Bad input through the real command line (`node bin/fleet-upgrade.js`, the compiled build): malformed host
// configs, VM specs and arguments — YAML syntax, wrong types, out-of-range numbers, path-like ids and labels,
// duplicate ids, unknown fields. Each must end with exit code 2 and exactly one line on stderr that names
// the field, no stack trace, nothing on stdout, and nothing started: no QEMU process, no VM record, no file
// written, no connection to Temporal (the Temporal commands point at a closed port, where reaching for it
// would end with exit code 3). A first case launches the unmodified config and spec, so each other case
// fails for its one defect only. QMP peers that misbehave are covered by test/integration/probe-cli.test.ts
// and test/unit/qmp-client.test.ts.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { readVmRecord } from '../../activities/host/vm-record';
import { projectRoot, requireRealPart } from '../../infra/real-parts';
import { writeCounterGuest } from '../../infra/guest/counter-guest';
import { writeSimBinary } from '../helpers/sim-binaries';
import { makeTmpDir } from '../helpers/tmp';

jest.setTimeout(180_000);

const CLI = path.join(projectRoot, 'bin', 'fleet-upgrade.js');
const tmp = makeTmpDir('bi');
const root = tmp.path;
const closedPort = '127.0.0.1:1';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A few CLIs at a time: each loads the Temporal SDK, and the machine has two cores. */
let slots = 3;
const waiting: (() => void)[] = [];
async function runCli(args: string[], cwd: string): Promise<Run> {
  if (slots > 0) slots--;
  else await new Promise<void>((r) => waiting.push(r));
  try {
    return await spawnCli(args, cwd);
  } finally {
    const next = waiting.shift();
    if (next) next();
    else slots++;
  }
}

function spawnCli(args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd,
      env: { ...process.env, TEMPORAL_ADDRESS: closedPort },
      stdio: ['ignore', 'pipe', 'pipe'],
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

/** Live processes whose command line names a path under `dir` (QEMUs, simulated or real). */
function processesUnder(dir: string): number[] {
  const under = `${dir}/`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(under)) && !argv.includes(CLI)) pids.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return pids;
}

// ---------------------------------------------------------------------------------------------------------
// A valid host config and VM spec; every case changes one thing.

requireRealPart('the compiled CLI (npm run build)', path.join(projectRoot, 'dist', 'workers', 'cli.js'));
const ledger = path.join(root, 'ledger');
mkdirSync(ledger, { recursive: true });
const qemu = writeSimBinary(root, 'qemu-sim', { dialect: 'none', version: '10.0.50', ledger });
const disk = writeCounterGuest(path.join(root, 'disk.img'));

type Data = Record<string, unknown>;
const host = (dir: string): Data => ({
  hostId: 'bad-input',
  runtimeDir: path.join(dir, 'rt'),
  binaries: { '10.0.50': { path: qemu } },
  limits: { launchTimeoutMs: 10_000 },
});
const spec = (): Data => ({
  id: 'vm1',
  binary: '10.0.50',
  machine: 'pc-i440fx-7.2',
  accel: 'tcg',
  memoryMiB: 64,
  drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
  netdevs: [{ id: 'net0', type: 'user' }],
  devices: [{ id: 'nic0', driver: 'e1000', netdev: 'net0' }],
});

/** A change to the valid config or spec: a new object, or YAML text as written. */
type Edit = (d: Data) => Data | string;
const set =
  (key: string, value: unknown): Edit =>
  (d) => ({ ...d, [key]: value });
const setIn =
  (key: string, i: number, field: string, value: unknown): Edit =>
  (d) => ({
    ...d,
    [key]: (d[key] as Data[]).map((x, j) => (j === i ? { ...x, [field]: value } : x)),
  });

interface BadCase {
  what: string;
  /** The line must name this (a field path, an option). */
  names: RegExp;
  config?: Edit;
  spec?: Edit;
  /** Other commands; `dir` is the case's own folder. */
  argv?: (dir: string) => string[];
}

/** Run in the case's folder, which holds host.yaml and vm.yaml. */
const launch = ['vm', 'launch', '--config', 'host.yaml', '--spec', 'vm.yaml'];

const cases: BadCase[] = [
  // Host configs (vm launch --config)
  { what: 'config: YAML syntax', config: () => 'hostId: [unclosed\n', names: /host\.yaml: invalid YAML: .*line 2/ },
  {
    what: 'config: duplicate key',
    config: (d) => `${stringify(d)}hostId: other\n`,
    names: /invalid YAML: Map keys must be unique \(hostId, line \d+/,
  },
  { what: 'config: wrong type', config: set('runtimeDir', 42), names: /: runtimeDir: .*expected string/ },
  {
    what: 'config: relative runtimeDir',
    config: set('runtimeDir', 'rt'),
    names: /: runtimeDir: must be an absolute path/,
  },
  { what: 'config: path-like host id', config: set('hostId', '../x'), names: /: hostId: must match/ },
  {
    what: 'config: path-like version label',
    config: set('binaries', { '../bin': { path: '/usr/bin/true' } }),
    names: /: binaries\.\.\.\/bin: invalid key: must be a version label/,
  },
  {
    what: 'config: relative binary path',
    config: set('binaries', { '10.0.50': { path: 'bin/qemu' } }),
    names: /: binaries\.10\.0\.50\.path: must be an absolute path/,
  },
  {
    what: 'config: out-of-range limit',
    config: set('limits', { qmpTimeoutMs: 5 }),
    names: /: limits\.qmpTimeoutMs: Too small/,
  },
  {
    what: 'config: no binaries',
    config: set('binaries', {}),
    names: /: binaries: must allow at least one QEMU binary/,
  },
  { what: 'config: unknown field', config: set('hostname', 'x'), names: /: hostname: unknown field/ },
  {
    what: 'config: duplicate VM ids under launchAtStart',
    config: set('launchAtStart', [spec(), spec()]),
    names: /: launchAtStart\.1\.id: duplicate VM id vm1/,
  },
  {
    what: 'config: Temporal address',
    config: set('temporal', { address: 'no port' }),
    names: /: temporal\.address: must be host:port/,
  },
  // VM specs (vm launch --spec)
  { what: 'spec: YAML syntax', spec: () => 'id: "vm1\n', names: /vm\.yaml: invalid YAML: .*line \d+/ },
  {
    what: 'spec: duplicate key',
    spec: (d) => `${stringify(d)}memoryMiB: 128\n`,
    names: /invalid YAML: Map keys must be unique \(memoryMiB, line \d+/,
  },
  { what: 'spec: path-like id', spec: set('id', '../x'), names: /vm\.yaml: id: must match/ },
  { what: 'spec: id with a slash', spec: set('id', 'a/b'), names: /vm\.yaml: id: must match/ },
  { what: 'spec: path-like binary label', spec: set('binary', '../qemu'), names: /: binary: must be a version label/ },
  {
    what: 'spec: binary label not allowed on the host',
    spec: set('binary', '7.2'),
    names: /binary: version label "7\.2" is not allowed on host bad-input/,
  },
  { what: 'spec: wrong type', spec: set('memoryMiB', 'lots'), names: /: memoryMiB: .*expected number/ },
  { what: 'spec: out of range (memory)', spec: set('memoryMiB', 1), names: /: memoryMiB: Too small/ },
  { what: 'spec: out of range (cpus)', spec: set('cpus', 4096), names: /: cpus: Too big/ },
  { what: 'spec: unknown field', spec: set('extraArgs', ['-S']), names: /: extraArgs: unknown field/ },
  {
    what: 'spec: option injection in the machine',
    spec: set('machine', 'pc,accel=kvm'),
    names: /: machine: must be a QEMU machine type/,
  },
  {
    what: 'spec: relative drive file',
    spec: setIn('drives', 0, 'file', 'disk.img'),
    names: /: drives\.0\.file: must be an absolute path/,
  },
  {
    what: 'spec: comma in a drive file',
    spec: setIn('drives', 0, 'file', '/tmp/a,format=qcow2'),
    names: /: drives\.0\.file: must not contain NUL or commas/,
  },
  {
    what: 'spec: duplicate device ids',
    spec: (d) => ({ ...d, devices: [...(d.devices as Data[]), { id: 'nic0', driver: 'e1000' }] }),
    names: /: devices\.1\.id: duplicate id nic0/,
  },
  {
    what: 'spec: device names a missing netdev',
    spec: setIn('devices', 0, 'netdev', 'net9'),
    names: /: devices\.0\.netdev: no netdev net9/,
  },
  {
    what: 'spec: tap ifname too long',
    spec: set('netdevs', [{ id: 'net0', type: 'tap', ifname: 'a-very-long-tap-name' }]),
    names: /: netdevs\.0\.ifname: must be a network interface name/,
  },
  // Arguments
  {
    what: 'vm launch: missing --spec',
    argv: () => ['vm', 'launch', '--config', 'host.yaml'],
    names: /required option '--spec <file>'/,
  },
  {
    what: 'vm launch: unknown option',
    argv: () => [...launch, '--force'],
    names: /unknown option '--force'/,
  },
  {
    what: 'vm launch: no such config file',
    argv: () => ['vm', 'launch', '--config', 'missing.yaml', '--spec', 'vm.yaml'],
    names: /missing\.yaml: cannot read host config/,
  },
  {
    what: 'vm upgrade: path-like host',
    argv: () => ['vm', 'upgrade', '--host', 'a/b', '--vm', 'vm1', '--to', '10.0.50', '--address', closedPort],
    names: /--host: "a\/b" is not a host id/,
  },
  {
    what: 'vm upgrade: path-like VM id',
    argv: () => ['vm', 'upgrade', '--host', 'h', '--vm', '../vm1', '--to', '10.0.50', '--address', closedPort],
    names: /--vm: "\.\.\/vm1" is not a VM id/,
  },
  {
    what: 'vm upgrade: a path for a label',
    argv: () => ['vm', 'upgrade', '--host', 'h', '--vm', 'vm1', '--to', '/usr/bin/qemu', '--address', closedPort],
    names: /--to: "\/usr\/bin\/qemu" is not a version label/,
  },
  {
    what: 'vm upgrade: missing --to',
    argv: () => ['vm', 'upgrade', '--host', 'h', '--vm', 'vm1', '--address', closedPort],
    names: /required option '--to <label>'/,
  },
  {
    what: 'vm status: upper-case host id',
    argv: () => ['vm', 'status', '--host', 'HOST', '--vm', 'vm1', '--address', closedPort],
    names: /--host: "HOST" is not a host id/,
  },
  {
    what: 'vm retry: path-like VM id',
    argv: () => ['vm', 'retry', '--host', 'h', '--vm', 'x/../../etc', '--address', closedPort],
    names: /--vm: .* is not a VM id/,
  },
  {
    what: 'host init: path-like host id',
    argv: (dir) => ['host', 'init', '--host-id', '../x', '--runtime-dir', path.join(dir, 'init')],
    names: /hostId: must match/,
  },
  {
    what: 'host init: comma in the runtime folder',
    argv: (dir) => ['host', 'init', '--host-id', 'h', '--runtime-dir', path.join(dir, 'a,b')],
    names: /runtimeDir: must not contain NUL or commas/,
  },
  { what: 'probe: missing --qmp', argv: () => ['probe'], names: /required option '--qmp <socket>'/ },
  {
    what: 'probe: --timeout not a number',
    argv: () => ['probe', '--qmp', '/nonexistent.qmp', '--timeout', 'soon'],
    names: /option '--timeout <ms>' argument 'soon' is invalid/,
  },
  {
    what: 'probe: --timeout out of range',
    argv: () => ['probe', '--qmp', '/nonexistent.qmp', '--timeout', '-5'],
    names: /--timeout/,
  },
  { what: 'unknown command', argv: () => ['vm', 'explode'], names: /unknown command 'explode'/ },
];

function writeCase(dir: string, c: Pick<BadCase, 'config' | 'spec'>): void {
  mkdirSync(dir, { recursive: true });
  const text = (d: Data | string) => (typeof d === 'string' ? d : stringify(d));
  writeFileSync(path.join(dir, 'host.yaml'), text(c.config ? c.config(host(dir)) : host(dir)));
  writeFileSync(path.join(dir, 'vm.yaml'), text(c.spec ? c.spec(spec()) : spec()));
}

afterAll(() => {
  for (const pid of processesUnder(root)) process.kill(pid, 'SIGKILL');
  tmp.cleanup();
});

describe('bad input through the CLI: exit 2, one line naming the field, nothing started', () => {
  test('the unmodified config and spec launch a VM (the control every case below changes one thing of)', async () => {
    const dir = path.join(root, 'ok');
    writeCase(dir, {});
    const r = await runCli(launch, dir);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const record = await readVmRecord(path.join(dir, 'rt'), 'vm1');
    expect(record?.pid).toBeGreaterThan(0);
    process.kill(record!.pid, 'SIGKILL');
  });

  test.concurrent.each(cases.map((c, i) => [c.what, c, i] as const))('%s', async (_what, c, i) => {
    const dir = path.join(root, `c${i}`);
    writeCase(dir, c);
    const r = await runCli(c.argv ? c.argv(dir) : launch, dir);
    const lines = r.stderr.trimEnd().split('\n');
    expect({ code: r.code, stdout: r.stdout, lines: lines.length }).toEqual({ code: 2, stdout: '', lines: 1 });
    expect(lines[0]).toMatch(c.names);
    expect(r.stderr).not.toMatch(/^\s+at |Error:|internal error/m);
    // Nothing started, nothing written.
    expect(processesUnder(dir)).toEqual([]);
    expect(existsSync(path.join(dir, 'rt'))).toBe(false);
    expect(existsSync(path.join(dir, 'init'))).toBe(false);
    expect(readdirSync(dir).sort()).toEqual(['host.yaml', 'vm.yaml']);
  });
});
