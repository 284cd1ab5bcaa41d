// `vm launch` against real QEMU 7.2 and 10.0.2 booting the counter guest: launched from YAML files by a
// worker process that then exits (the VM must outlive it), recorded, observed rising over QMP, refused when
// already running, relaunched as the next generation after it died.
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { isProcessAlive, killQemu, QemuLaunchError } from '../../activities/host/qemu-launcher';
import { ConfigError } from '../../activities/host/validate';
import { launchVm, VmAlreadyRunningError } from '../../activities/host/vm-launch';
import { listVmRecords, readVmRecord, type VmRecord } from '../../activities/host/vm-record';
import { parseVmSpec, type VmSpecInput } from '../../activities/host/vm-spec';
import { QmpClient } from '../../activities/qmp/client';
import { projectRoot, qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import { COUNTER_ADDRESS, parseCounter, writeCounterGuest } from '../../infra/guest/counter-guest';
import { useTmpDir } from '../helpers/tmp';

jest.setTimeout(60_000);

const tmp = useTmpDir('qfv');
let config: HostConfig;
let configFile: string;
let disk: string;

function spec(id: string, over: Partial<VmSpecInput> = {}): VmSpecInput {
  return {
    id,
    binary: '7.2',
    machine: 'pc-i440fx-7.2',
    accel: 'tcg', // KVM is present on these machines but does not run the guest; TCG is what is verified
    memoryMiB: 64,
    memoryBackend: 'memfd',
    memoryShared: true,
    drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
    netdevs: [{ id: 'net0', type: 'user' }],
    devices: [{ id: 'nic0', driver: 'e1000', netdev: 'net0' }],
    ...over,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function readCounter(qmp: QmpClient): Promise<number> {
  const out = await qmp.execute<string>('human-monitor-command', {
    'command-line': `x /1wx 0x${COUNTER_ADDRESS.toString(16)}`,
  });
  return parseCounter(out);
}

async function expectCounterRising(rec: VmRecord): Promise<void> {
  const qmp = await QmpClient.connect(rec.qmpSocket, { timeoutMs: 5_000 });
  try {
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'running', running: true });
    // SeaBIOS takes a moment under TCG before it jumps to the boot sector.
    let a = await readCounter(qmp);
    for (const until = Date.now() + 15_000; a === 0 && Date.now() < until; a = await readCounter(qmp)) await sleep(100);
    expect(a).toBeGreaterThan(0);
    await sleep(200);
    const b = await readCounter(qmp);
    expect(b).toBeGreaterThan(a);
    expect(await qmp.execute('query-name')).toEqual({ name: rec.id });
  } finally {
    await qmp.close();
  }
}

beforeAll(() => {
  requireQemu(qemu72);
  requireQemu(qemu10);
  disk = writeCounterGuest(path.join(tmp(), 'counter.img'));
  const raw = {
    hostId: 'test-host',
    runtimeDir: path.join(tmp(), 'rt'),
    binaries: {
      '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
      '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
    },
    limits: { launchTimeoutMs: 15_000 },
  };
  config = parseHostConfig(raw);
  configFile = path.join(tmp(), 'host.yaml');
  writeFileSync(configFile, stringify(raw));
});

afterAll(async () => {
  for (const r of await listVmRecords(config.runtimeDir).catch(() => [])) {
    await killQemu(r.pid, { graceMs: 1_000, expectArg: r.qmpSocket });
  }
});

describe('vm launch (real QEMU)', () => {
  it('launches from YAML in a worker process that exits; the VM outlives it, recorded and running', async () => {
    const specFile = path.join(tmp(), 'vm-a.yaml');
    writeFileSync(specFile, stringify(spec('vm-a')));
    const script = path.join(tmp(), 'launch.ts');
    writeFileSync(
      script,
      `import { runVmLaunch } from ${JSON.stringify(path.join(projectRoot, 'activities/host/vm-launch'))};\n` +
        `runVmLaunch(process.argv[2]!, process.argv[3]!).then((r) => { console.log(JSON.stringify(r)); process.exit(0); });\n`,
    );
    const worker = spawnSync(path.join(projectRoot, 'node_modules/.bin/tsx'), [script, configFile, specFile], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(worker.stderr).toBe('');
    expect(worker.status).toBe(0);
    const printed = JSON.parse(worker.stdout) as VmRecord;

    const rec = await readVmRecord(config.runtimeDir, 'vm-a');
    expect(rec).toEqual(printed);
    expect(rec).toMatchObject({
      id: 'vm-a',
      binary: { label: '7.2', path: qemu72.binary },
      machineType: 'pc-i440fx-7.2',
      generation: 1,
      qmpSocket: path.join(config.runtimeDir, 'run', 'vm-a.1.qmp'),
    });
    expect(statSync(path.join(config.runtimeDir, 'vms', 'vm-a.json')).mode & 0o777).toBe(0o600);
    // The launching worker is gone; QEMU lives on in its own session.
    expect(isProcessAlive(rec!.pid, rec!.qmpSocket)).toBe(true);
    const stat = readFileSync(`/proc/${rec!.pid}/stat`, 'utf8');
    const [, ppid, , session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    expect(Number(session)).toBe(rec!.pid);
    expect(Number(ppid)).not.toBe(worker.pid);
    expect(readFileSync(`/proc/${rec!.pid}/cmdline`, 'utf8').split('\0')).toEqual(
      expect.arrayContaining([
        '-name',
        'guest=vm-a',
        '-nodefaults',
        '-no-user-config',
        'memory-backend-memfd,id=pc.ram,size=64M,share=on',
      ]),
    );
    await expectCounterRising(rec!);

    // Refused while it runs; relaunched as the next generation once it is gone.
    await expect(launchVm({ config, spec: parseVmSpec(spec('vm-a')) })).rejects.toThrow(VmAlreadyRunningError);
    expect(await killQemu(rec!.pid, { graceMs: 5_000, expectArg: rec!.qmpSocket })).toBe('terminated');
    const again = await launchVm({ config, spec: parseVmSpec(spec('vm-a')) });
    expect(again.generation).toBe(2);
    expect(again.qmpSocket).toBe(path.join(config.runtimeDir, 'run', 'vm-a.2.qmp'));
    await expectCounterRising(again);
    expect(await killQemu(again.pid, { graceMs: 5_000, expectArg: again.qmpSocket })).toBe('terminated');
  });

  it('launches under QEMU 10.0.2 with its data folders and aux-ram-share detected from the binary', async () => {
    const rec = await launchVm({ config, spec: parseVmSpec(spec('vm-b', { binary: '10.0.2' })) });
    try {
      expect(rec.binary).toEqual({ label: '10.0.2', path: qemu10.binary });
      expect(rec.machineType).toBe('pc-i440fx-7.2');
      const cmdline = readFileSync(`/proc/${rec.pid}/cmdline`, 'utf8').split('\0');
      expect(cmdline).toContain('pc-i440fx-7.2,memory-backend=pc.ram,aux-ram-share=on');
      expect(cmdline.slice(0, 5)).toEqual([qemu10.binary, '-L', qemu10.dataDirs[0], '-L', qemu10.dataDirs[1]]);
      await expectCounterRising(rec);
      const qmp = await QmpClient.connect(rec.qmpSocket, { timeoutMs: 5_000 });
      const version = await qmp.execute<{ qemu: { major: number; minor: number } }>('query-version');
      await qmp.close();
      expect(version.qemu).toMatchObject({ major: 10, minor: 0 });
    } finally {
      await killQemu(rec.pid, { graceMs: 5_000, expectArg: rec.qmpSocket });
    }
  });

  it('refuses a label outside the allow-list before launching anything', async () => {
    const err = await launchVm({ config, spec: parseVmSpec(spec('vm-c', { binary: '9.9' })) }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.field).toBe('binary');
    expect(err.message).toBe('binary: version label "9.9" is not allowed on host test-host (allowed: 7.2, 10.0.2)');
    expect(await readVmRecord(config.runtimeDir, 'vm-c')).toBeUndefined();
  });

  it('reports a QEMU that rejects its configuration with the tail of its log, and records nothing', async () => {
    const bad = spec('vm-d', {
      drives: [{ id: 'disk0', file: path.join(tmp(), 'missing.img'), format: 'raw', interface: 'ide' }],
    });
    const err = await launchVm({ config, spec: parseVmSpec(bad) }).catch((e) => e);
    expect(err).toBeInstanceOf(QemuLaunchError);
    expect(err.message).toMatch(/QEMU source of vm-d exited before it was ready \(code 1/);
    expect(err.logTail).toMatch(/missing\.img.*No such file or directory/);
    expect(await readVmRecord(config.runtimeDir, 'vm-d')).toBeUndefined();
  });
});
