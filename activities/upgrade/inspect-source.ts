// Step 1 of the saga: inspect the source as QEMU reports it (only reads).
import { ApplicationFailure } from '@temporalio/common';
import type { HandoverAbility, SourceBackend, SourceFacts } from '../../workflows/decisions/plan';
import { failureTypes } from '../../workflows/failures';
import { featuresOf } from '../capabilities/binary-probe';
import type { BuildFeatures, GuestMemory } from '../capabilities/features';
import { probeVm } from '../capabilities/probe';
import type { HostConfig } from '../host/config';
import { handoverAbility, tapFdsOf } from '../host/fd-handover';
import type { VmSpec } from '../host/vm-spec';
import type { SourceInspection } from './api';
import { probeTarget } from './probe-target';
import { requireLiveProcess, requireRecord, withQmp } from './processes';

/** Where the dialect cannot tell over QMP (`local`), the taps the VM was launched with are its candidates. */
export function transferableFromSpec(spec: VmSpec): string[] {
  return spec.netdevs.filter((n) => n.type === 'tap').map((n) => n.id);
}

export async function inspectSource(config: HostConfig, input: { vmId: string }): Promise<SourceInspection> {
  const record = await requireRecord(config, input.vmId);
  if (record.attention) {
    const gens = record.attention.processes.map((p) => p.generation).join(' or ');
    throw ApplicationFailure.nonRetryable(
      `VM ${input.vmId} waits for an operator since ${record.attention.since}: ${record.attention.reason}. ` +
        `Check which process holds the guest (generation ${gens || '?'}), then run ` +
        `\`fleet-upgrade vm resolve --config <host config> --vm ${input.vmId} --keep <generation>\``,
      failureTypes.notAllowed,
    );
  }
  const ref = { generation: record.generation, label: record.binary.label };
  const process = await requireLiveProcess(config, input.vmId, ref, 'source', record);
  const caps = await withQmp(config, process, async (qmp) => probeVm(qmp, await knownFeatures(config, ref.label)));
  if (caps.status === 'paused') {
    // The switchover resumes the guest on the destination, and a rollback resumes the source: either would
    // start a guest somebody stopped — or, for a source a failed upgrade left paused because its destination
    // may have run, resume a stale state. Refused, nothing touched; the operator decides.
    throw ApplicationFailure.nonRetryable(
      `source QEMU of ${input.vmId} is paused: upgrading would resume it. Resume it first if that is safe ` +
        `(a source left paused by a failed upgrade may hold a stale state), then retry`,
      failureTypes.notAllowed,
    );
  }
  if (caps.status !== 'running') {
    throw ApplicationFailure.nonRetryable(
      `source QEMU of ${input.vmId} is ${caps.status}, not running`,
      failureTypes.migrationFailed,
    );
  }
  return {
    vmId: input.vmId,
    process: ref,
    status: caps.status,
    qemuVersion: caps.qemuVersion,
    machine: caps.machine,
    ramMiB: record.spec.memoryMiB,
    strategies: caps.strategies,
    dialect: caps.backendTransfer.dialect,
    transferable: caps.backendTransfer.transferable ?? transferableFromSpec(record.spec),
    ...backendFacts(record.spec, process.pid, caps.qemuVersion, caps.memory, caps.features.ignoreShared),
  };
}

/**
 * The QEMU builds whose `x-ignore-shared` also skips memfd RAM: later builds skip only RAM backed by a named
 * file (QEMU 8.0 tied it to RAM_NAMED_FILE), so a memfd source on them streams its RAM anyway.
 */
export function ignoreSharedSkipsMemfd(qemuVersion: string): boolean {
  const major = Number(qemuVersion.split('.')[0]);
  return Number.isFinite(major) && major < 8;
}

/** The facts about backends and RAM that decide how each reaches the destination (decideBackends, decideRam). */
export function backendFacts(
  spec: VmSpec,
  pid: number,
  qemuVersion: string,
  memory: GuestMemory,
  ignoreShared: boolean,
): Pick<SourceFacts, 'backends' | 'ram' | 'handover'> {
  // The fds of the source's kind of QEMU: an in-process simulated one's are the simulator's, always ours to take.
  const handover: HandoverAbility = handoverAbility(pid);
  // The fds are read (every fd's fdinfo of a real process) only for a VM with a tap to look for.
  const taps = spec.netdevs.some((n) => n.type === 'tap' && n.ifname);
  const held = handover.possible && taps ? tapFdsOf(pid) : new Map<string, number[]>();
  const backends = spec.netdevs.map((n): SourceBackend => {
    const device = spec.devices.find((d) => d.netdev === n.id)?.id;
    return {
      id: n.id,
      type: n.type,
      ...(device ? { device } : {}),
      ...(n.ifname ? { ifname: n.ifname } : {}),
      ...(n.type === 'tap' ? { queues: n.queues ?? 1, heldFds: n.ifname ? (held.get(n.ifname)?.length ?? 0) : 0 } : {}),
      ...(n.bridge ? { bridge: n.bridge } : {}),
    };
  });
  const backend =
    memory.backend === 'memory-backend-memfd' ? 'memfd' : memory.backend === 'memory-backend-file' ? 'file' : 'ram';
  const skipped =
    ignoreShared &&
    memory.shared &&
    (backend === 'file' || (backend === 'memfd' && ignoreSharedSkipsMemfd(qemuVersion)));
  return { backends, ram: { backend, shared: memory.shared, skippedWhenShared: skipped }, handover };
}

/** The source binary's features from the probe cache, when its label is still allow-listed. */
async function knownFeatures(config: HostConfig, label: string): Promise<BuildFeatures | undefined> {
  if (!Object.hasOwn(config.binaries, label)) return undefined;
  return featuresOf(await probeTarget(config, { label }));
}
