// Step 8 of the saga: the destination becomes the VM's process. The record is rewritten first (so it always
// names a live process), then the old process quits and what the migration left behind goes. A retry after a
// crash finds the record already rewritten and only finishes the cleanup.
import { rm } from 'node:fs/promises';
import { ApplicationFailure } from '@temporalio/common';
import { failureTypes } from '../../workflows/failures';
import type { HostConfig } from '../host/config';
import { socketPath } from '../host/paths';
import { killQemu } from '../host/qemu-launcher';
import { deleteTap, recreatedTapName, tapExists } from '../host/taps';
import type { VmSpec } from '../host/vm-spec';
import { writeVmRecord, type VmRecord } from '../host/vm-record';
import type { HostActivities } from './api';
import {
  allowedBinary,
  findProcess,
  forgetProcess,
  isAlive,
  refuseGenerations,
  refuseUnsafeInput,
  rememberProcess,
  requireLiveProcess,
  requireRecord,
  withQmp,
  type VmProcess,
} from './processes';
import { clearResumeMarker } from './resume-marker';

/**
 * Makes the destination the VM's process: the record is rewritten first (so it always names a live
 * process), then the old process quits.
 */
export async function finalize(config: HostConfig, input: Parameters<HostActivities['finalize']>[0]): Promise<void> {
  const { vmId } = input;
  refuseUnsafeInput(vmId, input.source, input.destination);
  refuseGenerations(input.source, input.destination);
  const record = await requireRecord(config, vmId);
  // Taps re-created for the destination, found once: the record names them, then the old ones go.
  const recreated =
    record.generation === input.source.generation
      ? await recreatedTaps(config, record.spec, input.destination.generation)
      : {};
  // What the record says once this step is done: read above, or as rewritten below.
  let current: VmRecord = record;
  if (record.generation === input.source.generation) {
    const destination = await requireLiveProcess(config, vmId, input.destination, 'destination', record);
    const binary = allowedBinary(config, input.destination.label);
    // Keep the old process findable by generation, so a retry after a crash can still stop it.
    await rememberProcess(config, vmId, record.generation, record.binary.label, record.pid);
    current = {
      ...record,
      // A re-created tap is the VM's interface from now on.
      spec: {
        ...record.spec,
        netdevs: record.spec.netdevs.map((n) => (recreated[n.id] ? { ...n, ifname: recreated[n.id] } : n)),
      },
      pid: destination.pid,
      qmpSocket: destination.qmpSocket,
      binary: { label: binary.label, path: binary.path },
      generation: input.destination.generation,
      startedAt: new Date().toISOString(),
      logFile: record.logFile?.replace(
        /\.\d+\.(source|destination)\.log$/,
        `.${input.destination.generation}.destination.log`,
      ),
    };
    await writeVmRecord(config.runtimeDir, current, { expectGeneration: record.generation });
  } else if (record.generation !== input.destination.generation) {
    throw ApplicationFailure.nonRetryable(
      `VM ${vmId} is at generation ${record.generation}, neither ${input.source.generation} nor ${input.destination.generation}`,
      failureTypes.migrationFailed,
    );
  }
  const old = await findProcess(config, vmId, input.source, current);
  if (old) await stopProcess(config, old);
  // The old taps of re-created backends, once no process holds them (the record names the new ones).
  for (const id of Object.keys(recreated)) {
    const oldName = record.spec.netdevs.find((n) => n.id === id)?.ifname;
    if (oldName) await deleteTap(config.netns, oldName);
  }
  await Promise.all([
    forgetProcess(config, vmId, input.source.generation),
    forgetProcess(config, vmId, input.destination.generation),
    removeLeftovers(config, vmId, input.destination.generation),
  ]);
}

/** Quits a process politely over QMP, then makes sure it is gone. */
async function stopProcess(config: HostConfig, p: VmProcess): Promise<void> {
  if (!isAlive(p)) return;
  await withQmp(config, p, (qmp) => qmp.execute('quit')).catch(() => undefined);
  await killQemu(p.pid, { graceMs: config.limits.killGraceMs, expectArg: p.qmpSocket });
}

/** The sockets and the resume marker a migration into `generation` left in the runtime folder. */
export async function removeLeftovers(config: HostConfig, vmId: string, generation: number): Promise<void> {
  const kinds = ['mig', 'cpr'] as const;
  await Promise.all([
    ...kinds.map((k) => rm(socketPath(config.runtimeDir, vmId, generation, k), { force: true })),
    clearResumeMarker(config, vmId, generation),
  ]);
}

/** The taps made for the destination of `generation` (see destination.ts), by netdev id. */
export async function recreatedTaps(
  config: HostConfig,
  spec: VmSpec,
  generation: number,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const n of spec.netdevs) {
    if (n.type !== 'tap' || !n.bridge) continue;
    const name = recreatedTapName(spec.id, n.id, generation);
    if (await tapExists(config.netns, name)) out[n.id] = name;
  }
  return out;
}
