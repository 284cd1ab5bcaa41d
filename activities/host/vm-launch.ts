// `fleet-upgrade vm launch`: start a VM from a spec on this host, under an allow-listed binary, and record it.
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { probeBinary } from '../capabilities/binary-probe';
import { QmpClient } from '../qmp/client';
import { loadHostConfig, ramDir, resolveBinary, type HostConfig, type ResolvedBinary } from './config';
import { ensurePrivateDir } from './fs-util';
import { memFile, recordFile, runtimeSubdir, socketPath } from './paths';
import { isProcessAlive, killQemu, launchQemu, launcherFor } from './qemu-launcher';
import { ConfigError } from './validate';
import { readVmRecord, writeVmRecord, type VmRecord } from './vm-record';
import { buildQemuArgs, parseVmSpecYaml, type VmSpec } from './vm-spec';

export class VmAlreadyRunningError extends Error {
  override name = 'VmAlreadyRunningError';
}

export interface LaunchVmOptions {
  config: HostConfig;
  spec: VmSpec;
  /**
   * Add `aux-ram-share=on` to the machine (needed later for cpr-transfer). 'auto' (default): when the RAM is
   * shared memfd/file and the binary's machine type has the property (asked of the binary, not its version).
   */
  auxRamShare?: boolean | 'auto';
}

/** Asks the binary whether its machine type has a property (`qemu -machine <type>,help`). */
export async function machineHasProperty(bin: ResolvedBinary, machine: string, property: string): Promise<boolean> {
  const args = [...bin.dataDirs.flatMap((d) => ['-L', d]), '-machine', `${machine},help`];
  const stdout = await launcherFor(bin).help(bin, args);
  return stdout.split('\n').some((l) => l.trim().startsWith(`${property}=`));
}

async function withLaunchLock<T>(config: HostConfig, vmId: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${recordFile(config.runtimeDir, vmId)}.lock`;
  try {
    await writeFile(lock, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const holder = Number((await readFile(lock, 'utf8').catch(() => '')).trim());
    if (isProcessAlive(holder)) throw new VmAlreadyRunningError(`VM ${vmId} is being launched by process ${holder}`);
    await writeFile(lock, `${process.pid}\n`, { mode: 0o600 });
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { force: true });
  }
}

export async function launchVm({ config, spec, auxRamShare = 'auto' }: LaunchVmOptions): Promise<VmRecord> {
  const bin = resolveBinary(config, spec.binary, 'binary');
  const rt = config.runtimeDir;
  await ensurePrivateDir(rt);
  await ensurePrivateDir(runtimeSubdir(rt, 'vms'));
  return withLaunchLock(config, spec.id, async () => {
    const existing = await readVmRecord(rt, spec.id);
    if (existing && isProcessAlive(existing.pid, existing.qmpSocket)) {
      throw new VmAlreadyRunningError(
        `VM ${spec.id} is already running (pid ${existing.pid}, generation ${existing.generation})`,
      );
    }
    const generation = existing ? existing.generation + 1 : 1;
    const sharedRam = spec.memoryShared && spec.memoryBackend !== 'ram';
    const aux =
      auxRamShare === 'auto'
        ? sharedRam && (await machineHasProperty(bin, spec.machine, 'aux-ram-share'))
        : auxRamShare;
    const mem = spec.memoryBackend === 'file' ? memFile(rt, spec.id, ramDir(config)) : undefined;
    if (mem) await ensurePrivateDir(path.dirname(mem));
    const qmpSocket = socketPath(rt, spec.id, generation, 'qmp');
    // Backends are launched so the build's backend-transfer dialect may hand them over later.
    const facts = await probeBinary(bin, path.join(rt, 'cache'), config.limits.launchTimeoutMs);
    const args = buildQemuArgs(spec, {
      mode: 'source',
      qmpSocket,
      dataDirs: bin.dataDirs,
      auxRamShare: aux,
      memFile: mem,
      dialect: facts.dialect,
      ...(facts.tapPermitOption ? { tapPermitOption: facts.tapPermitOption } : {}),
    });
    const launched = await launchQemu({
      binary: bin,
      args,
      runtimeDir: rt,
      vmId: spec.id,
      role: 'source',
      generation,
      env: bin.env,
      timeoutMs: config.limits.launchTimeoutMs,
      ...(config.netns ? { netns: config.netns } : {}),
      sandbox: facts.sandbox === true,
    });
    try {
      const qmp = await QmpClient.connect(launched.qmpSocket, { timeoutMs: config.limits.qmpTimeoutMs });
      let machineType: string;
      try {
        machineType = String(await qmp.execute('qom-get', { path: '/machine', property: 'type' })).replace(
          /-machine$/,
          '',
        );
      } finally {
        await qmp.close();
      }
      const record: VmRecord = {
        id: spec.id,
        pid: launched.pid,
        qmpSocket: launched.qmpSocket,
        binary: { label: bin.label, path: bin.path },
        spec,
        machineType,
        startedAt: new Date().toISOString(),
        generation,
        logFile: launched.logFile,
      };
      await writeVmRecord(rt, record, { expectGeneration: existing ? existing.generation : 'absent' });
      return record;
    } catch (err) {
      await killQemu(launched.pid, { graceMs: 0, expectArg: launched.qmpSocket });
      throw err;
    }
  });
}

export async function loadVmSpec(file: string): Promise<VmSpec> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read VM spec: ${(err as Error).message}`, abs);
  }
  return parseVmSpecYaml(text, abs);
}

/** Backs `fleet-upgrade vm launch --config <host config> --spec <vm.yaml>`. */
export async function runVmLaunch(configFile: string, specFile: string): Promise<VmRecord> {
  const config = await loadHostConfig(configFile);
  const spec = await loadVmSpec(specFile);
  if (resolveBinary(config, spec.binary, 'binary').simulator) {
    throw new ConfigError(
      'binary',
      `${spec.binary} is an in-process simulator: its VMs run inside the host worker and would end with this command; list the VM under launchAtStart in the host config instead`,
      path.resolve(specFile),
    );
  }
  return launchVm({ config, spec });
}

/**
 * The host config's `launchAtStart` VMs, launched by the host worker as it starts; a VM whose record names
 * a live process is left alone. Returns how many were launched and how many already ran.
 */
export async function launchAtStart(
  config: HostConfig,
  o: { concurrency?: number } = {},
): Promise<{ launched: number; alreadyRunning: number }> {
  const specs = [...(config.launchAtStart ?? [])];
  let launched = 0;
  let alreadyRunning = 0;
  const next = async (): Promise<void> => {
    for (let spec = specs.shift(); spec; spec = specs.shift()) {
      const existing = await readVmRecord(config.runtimeDir, spec.id);
      if (existing && isProcessAlive(existing.pid, existing.qmpSocket)) {
        alreadyRunning++;
        continue;
      }
      await launchVm({ config, spec });
      launched++;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.concurrency ?? 8) }, next));
  return { launched, alreadyRunning };
}
