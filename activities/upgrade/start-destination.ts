// Step 4 of the saga: start the destination paused, with the source's concrete machine type and each
// backend in transfer or re-create mode as decided. A retry finds a destination already waiting and keeps it.
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import type { MigrationPlan } from '../../workflows/decisions/plan';
import { failureTypes } from '../../workflows/failures';
import { queryAuxRamShare, queryStatus, queryTransferable } from '../capabilities/probe';
import { ramDir, type HostConfig } from '../host/config';
import { ensurePrivateDir } from '../host/fs-util';
import { memFile, socketPath } from '../host/paths';
import { createTap, recreatedTapName } from '../host/taps';
import { closeFds, FdHandoverError, holdTapHeaderSizes, ramMemfdOf, takeFds, tapFdsOf } from '../host/fd-handover';
import { killQemu, launchQemu, QemuLaunchError } from '../host/qemu-launcher';
import type { Handover, VmSpec } from '../host/vm-spec';
import { buildQemuArgs } from '../host/vm-spec';
import type { DestinationStarted, HostActivities } from './api';
import { probeTarget } from './probe-target';
import { clearResumeMarker } from './resume-marker';
import {
  allowedBinary,
  connect,
  findProcess,
  forgetProcess,
  isAlive,
  rememberProcess,
  requireAlive,
  requireLiveProcess,
  refuseGenerations,
  refuseUnsafeInput,
  requireRecord,
  withQmp,
  type VmProcess,
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
  refuseGenerations(input.source, input.destination);
  const record = await requireRecord(config, vmId);
  if (record.generation !== input.source.generation) {
    throw ApplicationFailure.nonRetryable(
      `VM ${vmId} is at generation ${record.generation}, not ${input.source.generation}: another upgrade moved it`,
      failureTypes.migrationFailed,
    );
  }
  const source = await requireLiveProcess(config, vmId, input.source, 'source', record);
  const existing = await findProcess(config, vmId, input.destination, record);
  if (existing && isAlive(existing)) {
    if (plan.strategy !== 'cpr-transfer' && (await isWaitingForMigration(config, existing))) {
      return { process: input.destination, transferable: await destinationTransferable(config, existing, plan) };
    }
    // A destination from an earlier attempt in an unknown state: never reuse it.
    await killQemu(existing.pid, { graceMs: 0, expectArg: existing.qmpSocket });
  }
  // A resume marker speaks of the process it was written for: one left by an earlier destination of this
  // generation (rolled back) must not make the new one look as if it had run.
  await Promise.all([
    forgetProcess(config, vmId, input.destination.generation),
    clearResumeMarker(config, vmId, input.destination.generation),
  ]);

  const binary = allowedBinary(config, input.destination.label);
  // The destination's machine gets the source's aux-ram-share (the rest of its RAM facts are the plan's).
  const auxRamShare = await withQmp(config, source, queryAuxRamShare);
  const qmpSocket = socketPath(config.runtimeDir, vmId, input.destination.generation, 'qmp');
  const mainSocket = socketPath(config.runtimeDir, vmId, input.destination.generation, 'mig');
  const cprSocket = socketPath(config.runtimeDir, vmId, input.destination.generation, 'cpr');
  const mem = record.spec.memoryBackend === 'file' ? memFile(config.runtimeDir, vmId, ramDir(config)) : undefined;
  if (mem) await ensurePrivateDir(path.dirname(mem));
  const recreatedTaps = await recreateTaps(config, record.spec, input.destination.generation, plan);
  // The probe is cached per binary (the workflow's probe step made it): QEMU's sandbox where the build has it.
  const sandbox = (await probeTarget(config, { label: binary.label })).sandbox === true;
  const taken = takeHandover(record.spec, source.pid, plan);
  let started: VmProcess | undefined;
  try {
    const args = buildQemuArgs(record.spec, {
      mode: 'destination',
      qmpSocket,
      dataDirs: binary.dataDirs,
      auxRamShare: auxRamShare === true,
      memFile: mem,
      machineType: plan.machine,
      incoming: plan.strategy === 'cpr-transfer' ? { kind: 'cpr-transfer', mainSocket, cprSocket } : { kind: 'defer' },
      paused: true,
      transferBackends: netdevsOf(record.spec, plan.transferBackends),
      dialect: plan.dialect,
      handover: taken.handover,
      recreatedTaps,
    });
    const headers = holdTapHeaderSizes(taken.fds);
    const launched = await launchQemu({
      binary,
      args,
      runtimeDir: config.runtimeDir,
      vmId,
      role: 'destination',
      generation: input.destination.generation,
      env: binary.env,
      timeoutMs: config.limits.launchTimeoutMs,
      ...(plan.strategy === 'cpr-transfer' ? { ready: { socketFile: cprSocket } } : {}),
      ...(config.netns ? { netns: config.netns } : {}),
      passFds: taken.fds,
      sandbox,
    })
      .catch((err: unknown) => {
        throw failFastOnLaunch(err);
      })
      .finally(() => headers.stop());
    await rememberProcess(config, vmId, input.destination.generation, binary.label, launched.pid);
    started = {
      vmId,
      generation: input.destination.generation,
      label: binary.label,
      pid: launched.pid,
      qmpSocket,
    };
  } finally {
    // The destination holds its own copies now (or never started): ours are closed either way.
    closeFds(taken.fds);
  }
  if (plan.strategy === 'cpr-transfer') return { process: input.destination, transferable: null };
  // The process just launched and remembered, as findProcess would read it back from its process file.
  const live = requireAlive(started, vmId, input.destination, 'destination');
  return { process: input.destination, transferable: await destinationTransferable(config, live, plan) };
}

/** The taps the plan re-creates: netdev id → the new interface, made on the VM's bridge. */
export function recreatedTapsOf(spec: VmSpec, generation: number, plan: MigrationPlan): Record<string, string> {
  const out: Record<string, string> = {};
  for (const b of plan.backends ?? []) {
    const n = spec.netdevs.find((x) => x.id === b.id);
    if (b.mode === 'recreate' && n?.type === 'tap') out[b.id] = recreatedTapName(spec.id, b.id, generation);
  }
  return out;
}

async function recreateTaps(
  config: HostConfig,
  spec: VmSpec,
  generation: number,
  plan: MigrationPlan,
): Promise<Record<string, string>> {
  const taps = recreatedTapsOf(spec, generation, plan);
  for (const [id, name] of Object.entries(taps)) {
    const n = spec.netdevs.find((x) => x.id === id)!;
    if (!n.bridge) {
      throw ApplicationFailure.nonRetryable(
        `tap ${id} names no bridge to re-create it on`,
        failureTypes.migrationFailed,
      );
    }
    await createTap(config.netns, name, n.bridge, { multiQueue: (n.queues ?? 1) > 1 });
  }
  return taps;
}

/**
 * A QEMU that gave up with its error status (1) before it was ready will do so again on a retry (a tap busy,
 * an option the build refuses, a missing image): no retry, the saga rolls back at once with QEMU's own words.
 * A crash (a signal, or another status) may not repeat, and is retried.
 */
function failFastOnLaunch(err: unknown): unknown {
  if (err instanceof QemuLaunchError && err.exitCode === 1) {
    return ApplicationFailure.nonRetryable(err.message, failureTypes.launchFailed);
  }
  return err;
}

/**
 * Takes from the live source what the plan hands over: every queue fd of each handed-over tap, and, for
 * shared RAM outside cpr-transfer, the path through which the destination maps the source's own RAM.
 * The destination inherits the fds as 3, 4, … in the order of `fds`.
 */
export function takeHandover(
  spec: VmSpec,
  sourcePid: number,
  plan: MigrationPlan,
): { handover: Handover; fds: number[] } {
  const handover: Handover = { tapFds: {} };
  const fds: number[] = [];
  const handed = (plan.backends ?? []).filter((b) => b.mode === 'handover');
  try {
    const held = handed.length ? tapFdsOf(sourcePid) : new Map<string, number[]>();
    for (const b of handed) {
      const ifname = spec.netdevs.find((n) => n.id === b.id)?.ifname;
      const queueFds = ifname ? held.get(ifname) : undefined;
      if (!queueFds?.length) {
        throw ApplicationFailure.nonRetryable(
          `the source QEMU (pid ${sourcePid}) holds no fd of tap ${ifname ?? b.id} to hand over`,
          failureTypes.migrationFailed,
        );
      }
      const mine = takeFds(sourcePid, queueFds);
      handover.tapFds[b.id] = mine.map((_, i) => 3 + fds.length + i);
      fds.push(...mine);
    }
    if (plan.ram === 'shared' && plan.strategy !== 'cpr-transfer') {
      const ramFd = ramMemfdOf(sourcePid, spec.memoryMiB * 1024 * 1024, spec.memoryBackend === 'file');
      if (ramFd === undefined) {
        throw ApplicationFailure.nonRetryable(
          `cannot find the guest RAM (${spec.memoryMiB} MiB) among the fds of the source QEMU (pid ${sourcePid})`,
          failureTypes.migrationFailed,
        );
      }
      // Opening /proc/<pid>/fd/<n> opens the very memfd or file the source maps.
      handover.ramPath = `/proc/${sourcePid}/fd/${ramFd}`;
    }
    return { handover, fds };
  } catch (err) {
    closeFds(fds);
    if (err instanceof FdHandoverError)
      throw ApplicationFailure.nonRetryable(err.message, failureTypes.migrationFailed);
    throw err;
  }
}

async function isWaitingForMigration(config: HostConfig, p: Parameters<typeof connect>[1]): Promise<boolean> {
  try {
    return await withQmp(config, p, async (qmp) => {
      return (await queryStatus(qmp)).status === 'inmigrate';
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
