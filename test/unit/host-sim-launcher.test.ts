// In-process simulator binaries: the host config's `simulator` form, the launcher chosen by the config entry
// (never by the path it is shown as), pid-like handles that isProcessAlive / killQemu understand (in the
// format records have always kept), launch errors as QEMU's, the in-process binary probe, `vm launch`
// refusing them and the host worker's launchAtStart.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { probeBinary } from '../../activities/capabilities/binary-probe';
import { parseHostConfig, resolveBinary, type HostConfig } from '../../activities/host/config';
import { socketPath } from '../../activities/host/paths';
import {
  isProcessAlive,
  killQemu,
  launcherFor,
  launcherOfProcess,
  launchQemu,
  processLauncher,
  QemuLaunchError,
  simulatorLauncher,
} from '../../activities/host/qemu-launcher';
import { simulatedInstances, stopSimulatedQemus } from '../../activities/host/sim-launcher';
import { simulatorPath } from '../../activities/host/simulator-spec';
import { ConfigError } from '../../activities/host/validate';
import { launchAtStart, launchVm, machineHasProperty, runVmLaunch } from '../../activities/host/vm-launch';
import { listVmRecords } from '../../activities/host/vm-record';
import { parseVmSpec, type VmSpecInput } from '../../activities/host/vm-spec';
import { QmpClient } from '../../activities/qmp/client';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

let tmp: TmpDir;
beforeAll(() => {
  tmp = makeTmpDir('qsl');
});
afterAll(async () => {
  await stopSimulatedQemus();
  tmp.cleanup();
});

const sim = (version: string, extra: object = {}) => ({ simulator: { dialect: 'local', version, ...extra } });

function hostConfig(name: string, extra: object = {}): HostConfig {
  return parseHostConfig({
    hostId: name,
    runtimeDir: path.join(tmp.path, name),
    binaries: { old: sim('10.0.50', { stateDir: path.join(tmp.path, name, 'ledger') }), new: sim('10.1.50') },
    ...extra,
  });
}

const specOf = (id: string, o: Partial<VmSpecInput> = {}): VmSpecInput => ({
  id,
  binary: 'old',
  machine: 'pc-i440fx-7.2',
  accel: 'tcg',
  memoryMiB: 16,
  netdevs: [{ id: 'net0', type: 'tap', ifname: `sl${id}` }],
  devices: [{ id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' }],
  ...o,
});

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('host config: simulator binaries', () => {
  const base = { hostId: 'h', runtimeDir: '/r' };

  it('resolves a simulator entry to the path it is shown as; its launcher is chosen by the entry', () => {
    const c = parseHostConfig({
      ...base,
      binaries: { s: sim('10.0.50', { stateDir: '/tmp/led/', ramRateMbps: 8000 }), real: { path: '/usr/bin/q' } },
    });
    const b = resolveBinary(c, 's');
    expect(b.simulator).toEqual({ dialect: 'local', version: '10.0.50', stateDir: '/tmp/led/', ramRateMbps: 8000 });
    expect(b.path).toBe('/in-process-qemu-simulator/local/10.0.50/ram-rate-8000/state/tmp/led/');
    expect(simulatorPath({ dialect: 'none', version: '7.2.0' })).toBe('/in-process-qemu-simulator/none/7.2.0');
    expect(launcherFor(b)).toBe(simulatorLauncher);
    expect(resolveBinary(c, 'real')).toEqual({ label: 'real', path: '/usr/bin/q', dataDirs: [], env: {} });
    expect(launcherFor(resolveBinary(c, 'real'))).toBe(processLauncher);
    // The path is only shown: nothing reads it back.
    expect(launcherFor(b.path)).toBe(processLauncher);
  });

  it.each([
    [/^binaries\.s\.simulator: give path or simulator, not both/, { s: { path: '/q', ...sim('10.0.50') } }],
    [/^binaries\.s\.path: is required \(or give simulator\)/, { s: {} }],
    [/^binaries\.s\.dataDirs: only with path/, { s: { ...sim('10.0.50'), dataDirs: ['/d'] } }],
    [/^binaries\.s\.env: only with path/, { s: { ...sim('10.0.50'), env: { A: 'b' } } }],
    [/^binaries\.s\.simulator\.dialect: /, { s: { simulator: { dialect: 'bogus', version: '10.0.50' } } }],
    [/^binaries\.s\.simulator\.version: must be a QEMU version/, { s: sim('10') }],
    [/^binaries\.s\.simulator\.stateDir: must be an absolute path/, { s: sim('10.0.50', { stateDir: 'x' }) }],
    [/^binaries\.s\.simulator\.faults: unknown field/, { s: sim('10.0.50', { faults: [] }) }],
    [/^binaries\.s\.path: \/in-process-qemu-simulator\/ is reserved/, { s: { path: '/in-process-qemu-simulator/x' } }],
    [
      /^binaries\.s\.simulator\.transferableKinds: must not repeat a kind/,
      { s: sim('10.0.50', { transferableKinds: ['tap', 'tap'] }) },
    ],
    [/^binaries\.s\.simulator\.transferableKinds\.0: /, { s: sim('10.0.50', { transferableKinds: ['user'] }) }],
  ])('rejects %s', (re, binaries) => {
    expect(configError(() => parseHostConfig({ ...base, binaries }))).toMatch(re);
  });

  it('shows the kinds a build takes in its path, so its probe is cached apart from the full build', () => {
    const c = parseHostConfig({
      ...base,
      binaries: {
        full: sim('10.1.50'),
        vu: sim('10.1.50', { transferableKinds: ['vhost-user'], ramRateMbps: 8000 }),
        both: sim('10.1.50', { transferableKinds: ['tap', 'vhost-user'] }),
        nothing: sim('10.1.50', { transferableKinds: [] }),
      },
    });
    expect(resolveBinary(c, 'full').path).toBe('/in-process-qemu-simulator/local/10.1.50');
    expect(resolveBinary(c, 'vu').path).toBe(
      '/in-process-qemu-simulator/local/10.1.50/transferable-vhost-user/ram-rate-8000',
    );
    expect(resolveBinary(c, 'vu').simulator?.transferableKinds).toEqual(['vhost-user']);
    expect(resolveBinary(c, 'both').path).toBe('/in-process-qemu-simulator/local/10.1.50/transferable-tap+vhost-user');
    expect(resolveBinary(c, 'nothing').path).toBe('/in-process-qemu-simulator/local/10.1.50/transferable-none');
  });

  it('checks launchAtStart against the allow-list and for duplicate ids', () => {
    const binaries = { old: sim('10.0.50') };
    expect(
      configError(() => parseHostConfig({ ...base, binaries, launchAtStart: [specOf('a', { binary: 'nope' })] })),
    ).toMatch(/^launchAtStart\.0\.binary: no binary nope in binaries/);
    expect(
      configError(() => parseHostConfig({ ...base, binaries, launchAtStart: [specOf('a'), specOf('a')] })),
    ).toMatch(/^launchAtStart\.1\.id: duplicate VM id a/);
  });
});

describe('in-process launch, liveness and kill', () => {
  it('launches a VM whose record names a handle; alive by registry and command line; stopped gracefully', async () => {
    const config = hostConfig('h1');
    const rec = await launchVm({ config, spec: parseVmSpec(specOf('v1')) });
    expect(launcherOfProcess(rec.pid)).toBe(simulatorLauncher);
    expect(rec.pid).toBeGreaterThan(2 ** 31);
    // The handle format VM records have always kept: 1e15 + worker pid * 1e6 + sequence.
    expect(Math.floor((rec.pid - 1e15) / 1e6)).toBe(process.pid);
    expect(rec.binary).toEqual({
      label: 'old',
      path: '/in-process-qemu-simulator/local/10.0.50/state' + path.join(tmp.path, 'h1', 'ledger'),
    });
    expect(rec.machineType).toBe('pc-i440fx-7.2');
    expect(isProcessAlive(rec.pid, rec.qmpSocket)).toBe(true);
    expect(isProcessAlive(rec.pid, '/elsewhere.qmp')).toBe(false);
    expect(isProcessAlive(rec.pid + 1)).toBe(false);
    const qmp = await QmpClient.connect(rec.qmpSocket);
    try {
      expect(await qmp.execute('query-status')).toMatchObject({ status: 'running' });
      expect(await qmp.execute('query-version')).toMatchObject({ qemu: { major: 10, minor: 0, micro: 50 } });
    } finally {
      await qmp.close();
    }
    expect(simulatedInstances().map((i) => i.handle)).toContain(rec.pid);
    expect(await killQemu(rec.pid, { graceMs: 1000, expectArg: rec.qmpSocket })).toBe('terminated');
    expect(isProcessAlive(rec.pid)).toBe(false);
    expect(simulatedInstances().map((i) => i.handle)).not.toContain(rec.pid);
    expect(await killQemu(rec.pid, { graceMs: 0 })).toBe('not-running');
  });

  it('kill without grace is a crash; QMP quit ends the instance too', async () => {
    const config = hostConfig('h2');
    const a = await launchVm({ config, spec: parseVmSpec(specOf('a2')) });
    expect(await killQemu(a.pid, { graceMs: 0, expectArg: a.qmpSocket })).toBe('killed');
    expect(isProcessAlive(a.pid)).toBe(false);
    const b = await launchVm({ config, spec: parseVmSpec(specOf('b2')) });
    const qmp = await QmpClient.connect(b.qmpSocket);
    await qmp.execute('quit').finally(() => qmp.close());
    for (let i = 0; i < 50 && isProcessAlive(b.pid); i++) await new Promise((r) => setTimeout(r, 10));
    expect(isProcessAlive(b.pid)).toBe(false);
  });

  it('a handle held by another process is alive while that process is', () => {
    const handleOf = (pid: number) => 1e15 + pid * 1e6 + 1;
    expect(isProcessAlive(handleOf(process.ppid))).toBe(true);
    expect(isProcessAlive(handleOf(4_194_303))).toBe(false);
    return expect(killQemu(handleOf(process.ppid), { graceMs: 0 })).rejects.toThrow(/only that process can stop it/);
  });

  it('a command line the simulator refuses fails like QEMU: exit status 1, the error in the log tail', async () => {
    const config = hostConfig('h3');
    const rt = config.runtimeDir;
    const qmpSocket = socketPath(rt, 'bad', 1, 'qmp');
    const err = await launchQemu({
      binary: resolveBinary(config, 'old'),
      args: [
        '-machine',
        'pc-i440fx-7.2',
        '-qmp',
        `unix:${qmpSocket},server=on,wait=off`,
        '-drive',
        'file=/nonexistent/disk,format=raw,if=ide',
      ],
      runtimeDir: rt,
      vmId: 'bad',
      role: 'source',
      generation: 1,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuLaunchError);
    expect((err as QemuLaunchError).exitCode).toBe(1);
    expect((err as QemuLaunchError).message).toMatch(/exited before it was ready \(code 1, signal null\)/);
    expect((err as QemuLaunchError).logTail).toMatch(/qemu-system-x86_64: .*Could not open '\/nonexistent\/disk'/);
  });
});

describe('transferableKinds: what a simulated build reports and takes', () => {
  const listSim = (extra: object = {}) => ({
    simulator: { dialect: 'backend-transfer-list', version: '10.1.50', ...extra },
  });

  async function supportOf(binaries: Record<string, object>, vmId: string): Promise<string[]> {
    const dir = path.join(tmp.path, `kinds-${vmId}`);
    mkdirSync(dir, { recursive: true });
    const vhost = path.join(dir, 'vu.sock');
    writeFileSync(vhost, '');
    const config = parseHostConfig({ hostId: `k-${vmId}`, runtimeDir: path.join(dir, 'rt'), binaries });
    const rec = await launchVm({
      config,
      spec: parseVmSpec(
        specOf(vmId, {
          netdevs: [
            { id: 'net0', type: 'tap', ifname: `sk${vmId}` },
            { id: 'vu0', type: 'vhost-user', chardevPath: vhost },
          ],
          devices: [
            { id: 'nic0', driver: 'virtio-net-pci', netdev: 'net0' },
            { id: 'nic1', driver: 'virtio-net-pci', netdev: 'vu0' },
          ],
        }),
      ),
    });
    // The record, with the path the build is shown as, reads back (a path with a comma would not).
    expect((await listVmRecords(config.runtimeDir)).map((r) => r.binary)).toEqual([rec.binary]);
    const qmp = await QmpClient.connect(rec.qmpSocket);
    try {
      const support = (await qmp.execute('query-backend-transfer-support')) as Array<{ path: string }>;
      return support.map((p) => p.path);
    } finally {
      await qmp.close();
      await killQemu(rec.pid, { graceMs: 1000 });
    }
  }

  it("a build reports only its kinds' backends; without the option, all of its dialect's", async () => {
    const tap = '/machine/peripheral/nic0/virtio-backend';
    const vu = '/machine/peripheral/nic1/virtio-backend';
    expect(await supportOf({ old: listSim() }, 'k1')).toEqual([tap, vu]);
    expect(await supportOf({ old: listSim({ transferableKinds: ['vhost-user'] }) }, 'k2')).toEqual([vu]);
    expect(await supportOf({ old: listSim({ transferableKinds: ['tap'] }) }, 'k3')).toEqual([tap]);
    expect(await supportOf({ old: listSim({ transferableKinds: ['tap', 'vhost-user'] }) }, 'k6')).toEqual([tap, vu]);
    expect(await supportOf({ old: listSim({ transferableKinds: [] }) }, 'k4')).toEqual([]);
  });

  it('a kind its dialect does not carry: the simulator refuses the build, in its own words', async () => {
    const config = hostConfig('h6', { binaries: { old: sim('10.1.50', { transferableKinds: ['vhost-user'] }) } });
    await expect(launchVm({ config, spec: parseVmSpec(specOf('k5')) })).rejects.toThrow(
      /--sim-transferable-kinds vhost-user: expected distinct kinds of the local dialect \(tap\), comma-separated/,
    );
    await expect(probeBinary(resolveBinary(config, 'old'), path.join(config.runtimeDir, 'cache'))).rejects.toThrow(
      /exited \(code 1\) while probed: --sim-transferable-kinds vhost-user: expected distinct kinds/,
    );
    expect(simulatedInstances().filter((i) => i.vmId === 'k5')).toEqual([]);
  });
});

describe('probe, machine help, vm launch, launchAtStart', () => {
  it('probes a simulator binary in-process', async () => {
    const config = hostConfig('h4');
    const facts = await probeBinary(resolveBinary(config, 'new'), path.join(config.runtimeDir, 'cache'));
    expect(facts).toMatchObject({ label: 'new', qemuVersion: '10.1.50', dialect: 'local' });
    expect(facts.migrationModes).toContain('cpr-transfer');
    expect(facts.machineTypes).toContain('pc-i440fx-7.2');
    expect(await machineHasProperty(resolveBinary(config, 'new'), 'pc-i440fx-7.2', 'aux-ram-share')).toBe(true);
  });

  it('vm launch (a separate command) refuses a simulator binary', async () => {
    const dir = path.join(tmp.path, 'cli');
    mkdirSync(dir, { recursive: true });
    const cfg = path.join(dir, 'host.json');
    const spec = path.join(dir, 'vm.json');
    writeFileSync(
      cfg,
      JSON.stringify({ hostId: 'c', runtimeDir: path.join(dir, 'rt'), binaries: { old: sim('10.0.50') } }),
    );
    writeFileSync(spec, JSON.stringify(specOf('c1')));
    await expect(runVmLaunch(cfg, spec)).rejects.toThrow(/in-process simulator: .*launchAtStart/);
  });

  it('launchAtStart launches the listed VMs once', async () => {
    const config = hostConfig('h5', { launchAtStart: [specOf('s1'), specOf('s2'), specOf('s3')] });
    expect(await launchAtStart(config)).toEqual({ launched: 3, alreadyRunning: 0 });
    expect(await launchAtStart(config)).toEqual({ launched: 0, alreadyRunning: 3 });
    const records = await listVmRecords(config.runtimeDir);
    expect(records.map((r) => r.id)).toEqual(['s1', 's2', 's3']);
    expect(records.every((r) => isProcessAlive(r.pid, r.qmpSocket))).toBe(true);
  });
});
