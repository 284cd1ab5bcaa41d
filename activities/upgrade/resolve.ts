// `fleet-upgrade vm resolve`: the operator's answer to an upgrade that could not tell which process holds the
// guest (the record's `attention`). The operator names the generation to keep; it becomes the VM's process,
// every other kept process is stopped, and the VM can be upgraded again. Run on the host, with its config.
import type { HostConfig } from '../host/config';
import { resolveBinary } from '../host/config';
import { killQemu } from '../host/qemu-launcher';
import { ConfigError } from '../host/validate';
import { readVmRecord, writeVmRecord } from '../host/vm-record';
import { queryStatus } from '../capabilities/probe';
import { clearResumeMarker } from './resume-marker';
import { forgetProcess, isAlive, withQmp, type VmProcess } from './processes';

export interface ResolveOutcome {
  vmId: string;
  kept: { generation: number; label: string; pid: number };
  stopped: number[];
  /** The kept process's run state afterwards (QEMU's `query-status`). */
  status: string;
  resumed: boolean;
}

export async function resolveVm(
  config: HostConfig,
  vmId: string,
  keep: number,
  o: { resume: boolean },
): Promise<ResolveOutcome> {
  const record = await readVmRecord(config.runtimeDir, vmId);
  if (!record) throw new ConfigError('vm', `no VM ${vmId} on host ${config.hostId}`);
  if (!record.attention) throw new ConfigError('vm', `VM ${vmId} does not wait for an operator: nothing to resolve`);
  const candidates = record.attention.processes;
  const chosen = candidates.find((p) => p.generation === keep);
  if (!chosen) {
    throw new ConfigError(
      'keep',
      `generation ${keep} is not one the upgrade kept (${candidates.map((p) => p.generation).join(', ') || 'none'})`,
    );
  }
  const kept: VmProcess = { vmId, ...chosen };
  if (!isAlive(kept)) throw new ConfigError('keep', `the process of generation ${keep} (pid ${chosen.pid}) is gone`);
  const binary = resolveBinary(config, chosen.label, 'keep');
  const before = await withQmp(config, kept, async (qmp) => queryStatus(qmp));
  if (before.status === 'inmigrate') {
    throw new ConfigError(
      'keep',
      `generation ${keep} never received the guest's state (it is waiting for a migration)`,
    );
  }

  // The record first, so it always names a live process; then the others go.
  await writeVmRecord(
    config.runtimeDir,
    {
      ...record,
      pid: chosen.pid,
      qmpSocket: chosen.qmpSocket,
      binary: { label: binary.label, path: binary.path },
      generation: chosen.generation,
      attention: undefined,
    },
    { expectGeneration: record.generation },
  );
  const stopped: number[] = [];
  for (const p of candidates) {
    if (p.generation === keep) continue;
    const other: VmProcess = { vmId, ...p };
    if (isAlive(other)) {
      await killQemu(p.pid, { graceMs: config.limits.killGraceMs, expectArg: p.qmpSocket });
      stopped.push(p.pid);
    }
  }
  for (const p of candidates) {
    await forgetProcess(config, vmId, p.generation);
    await clearResumeMarker(config, vmId, p.generation);
  }
  const { status, resumed } = await withQmp(config, kept, async (qmp) => {
    const now = await queryStatus(qmp);
    if (now.running || !o.resume) return { status: now.status, resumed: false };
    await qmp.execute('cont');
    return { status: (await queryStatus(qmp)).status, resumed: true };
  });
  return {
    vmId,
    kept: { generation: chosen.generation, label: chosen.label, pid: chosen.pid },
    stopped,
    status,
    resumed,
  };
}
