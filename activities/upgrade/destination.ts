// Step 4 of the saga: start the destination paused, with the source's concrete machine type and each
// backend in transfer or re-create mode as decided. A retry finds a destination already waiting and keeps it.
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import type { MigrationPlan } from '../../workflows/decisions/plan';
import { failureTypes } from '../../workflows/failures';
import { queryGuestMemory, queryTransferable } from '../capabilities/probe';
import type { HostConfig } from '../host/config';
import { ensurePrivateDir } from '../host/fs-util';
import { memFile, socketPath } from '../host/paths';
import { killQemu, launchQemu } from '../host/qemu-launcher';
import type { VmSpec } from '../host/vm-spec';
import { buildQemuArgs } from '../host/vm-spec';
import type { DestinationStarted, HostActivities } from './api';
import {
  allowedBinary,
  connect,
  findProcess,
  forgetProcess,
  isAlive,
  rememberProcess,
  requireLiveProcess,
  refuseUnsafeInput,
  requireRecord,
  withQmp,
} from './processes';

type StartInput = Parameters<HostActivities['startDestination']>[0];

/** Transfer-list entries (netdev ids, device ids or QOM paths under `/machine/peripheral/<device>`) → netdev ids. */
export function netdevsOf(spec: VmSpec, entries: readonly string[]): string[] {
  return entries.map((entry) => {
    // A QOM path names a device or one of its children (`/machine/peripheral/nic0/virtio-backend`).
    const id = entry.replace(/^\/machine\/peripheral\//, '').split('/')[0] ?? entry;
    if (spec.netdevs.some((n) => n.id === id)) return id;
    const device = spec.devices.find((d) => d.id === id);
    if (device?.netdev) return device.netdev;
    throw ApplicationFailure.nonRetryable(
      `backend ${entry} names no netdev of VM ${spec.id}`,
      failureTypes.migrationFailed,
    );
  });
}

export async function startDestination(config: HostConfig, input: StartInput): Promise<DestinationStarted> {
  const { vmId, plan } = input;
  refuseUnsafeInput(vmId, input.source, input.destination);
  const record = await requireRecord(config, vmId);
  if (record.generation !== input.source.generation) {
    throw ApplicationFailure.nonRetryable(
      `VM ${vmId} is at generation ${record.generation}, not ${input.source.generation}: another upgrade moved it`,
      failureTypes.migrationFailed,
    );
  }
  const source = await requireLiveProcess(config, vmId, input.source, 'source');
  const existing = await findProcess(config, vmId, input.destination);
  if (existing && isAlive(existing)) {
    if (plan.strategy !== 'cpr-transfer' && (await isWaitingForMigration(config, existing))) {
      return { process: input.destination, transferable: await destinationTransferable(config, existing, plan) };
    }
    // A destination from an earlier attempt in an unknown state: never reuse it.
    await killQemu(existing.pid, { graceMs: 0, expectArg: existing.qmpSocket });
  }
  await forgetProcess(config, vmId, input.destination.generation);

  const binary = allowedBinary(config, input.destination.label);
  const memory = await withQmp(config, source, (qmp) => queryGuestMemory(qmp));
  const qmpSocket = socketPath(config.runtimeDir, vmId, input.destination.generation, 'qmp');
  const mainSocket = socketPath(config.runtimeDir, vmId, input.destination.generation, 'mig');
  const cprSocket = socketPath(config.runtimeDir, vmId, input.destination.generation, 'cpr');
  const mem = record.spec.memoryBackend === 'file' ? memFile(config.runtimeDir, vmId) : undefined;
  if (mem) await ensurePrivateDir(path.dirname(mem));
  const args = buildQemuArgs(record.spec, {
    mode: 'destination',
    qmpSocket,
    dataDirs: binary.dataDirs,
    auxRamShare: memory.auxRamShare === true,
    memFile: mem,
    machineType: plan.machine,
    incoming: plan.strategy === 'cpr-transfer' ? { kind: 'cpr-transfer', mainSocket, cprSocket } : { kind: 'defer' },
    paused: true,
    transferBackends: netdevsOf(record.spec, plan.transferBackends),
    dialect: plan.dialect,
  });
  const launched = await launchQemu({
    binary: binary.path,
    args,
    runtimeDir: config.runtimeDir,
    vmId,
    role: 'destination',
    generation: input.destination.generation,
    env: binary.env,
    timeoutMs: config.limits.launchTimeoutMs,
    ...(plan.strategy === 'cpr-transfer' ? { ready: { socketFile: cprSocket } } : {}),
  });
  await rememberProcess(config, vmId, input.destination.generation, binary.label, launched.pid);
  if (plan.strategy === 'cpr-transfer') return { process: input.destination, transferable: null };
  const started = await requireLiveProcess(config, vmId, input.destination, 'destination');
  return { process: input.destination, transferable: await destinationTransferable(config, started, plan) };
}

async function isWaitingForMigration(config: HostConfig, p: Parameters<typeof connect>[1]): Promise<boolean> {
  try {
    return await withQmp(config, p, async (qmp) => {
      const s = (await qmp.execute('query-status')) as { status?: string };
      return s.status === 'inmigrate';
    });
  } catch {
    return false;
  }
}

async function destinationTransferable(
  config: HostConfig,
  p: Parameters<typeof connect>[1],
  plan: MigrationPlan,
): Promise<string[] | null> {
  if (plan.strategy !== 'backend-transfer') return null;
  return withQmp(config, p, (qmp) => queryTransferable(qmp, plan.dialect));
}
