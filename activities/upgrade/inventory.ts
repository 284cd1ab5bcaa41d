// The host's inventory, for the fleet workflows: which VMs this host runs (from its own records, each
// checked against its live process) and which QEMU version labels it allows; and for `fleet-upgrade
// inventory`, what each VM's live QEMU reports. Read-only; names no paths.
import type { HostConfig } from '../host/config';
import { QmpClient } from '../qmp/client';
import { queryStatus, queryVersion } from '../capabilities/probe';
import { isProcessAlive } from '../host/qemu-launcher';
import { listVmRecords } from '../host/vm-record';

export interface InventoryVm {
  vmId: string;
  /** Version label of the QEMU the record says runs the VM. */
  label: string;
  generation: number;
  /** Whether the recorded process is alive. */
  running: boolean;
}

export interface HostInventory {
  hostId: string;
  vms: InventoryVm[];
}

export interface HostDescription {
  hostId: string;
  /** Allow-listed version labels, sorted. */
  labels: string[];
  /** The worker process, as in its identity `host-worker/<hostId>/<pid>`. */
  pid: number;
}

export async function listVms(config: HostConfig): Promise<HostInventory> {
  const records = await listVmRecords(config.runtimeDir);
  return {
    hostId: config.hostId,
    vms: records.map((r) => ({
      vmId: r.id,
      label: r.binary.label,
      generation: r.generation,
      running: isProcessAlive(r.pid, r.qmpSocket),
    })),
  };
}

export function describeHost(config: HostConfig): HostDescription {
  return { hostId: config.hostId, labels: Object.keys(config.binaries).sort(), pid: process.pid };
}

/** One VM as `fleet-upgrade inventory` shows it: what runs it, asked of its live QEMU where it is alive. */
export interface InventoryVmDetail {
  vmId: string;
  label: string;
  /** QEMU version the live process reports (query-version), or null when it could not be asked. */
  version: string | null;
  /** Concrete machine type (as QEMU reported it at launch). */
  machineType: string | null;
  /** QEMU's run state (`running`, `paused`, …), `not-running` when the recorded process is gone, `unknown`. */
  state: string;
  generation: number;
  /** Why the state or version is unknown. */
  problem?: string;
}

export interface HostVmInventory {
  hostId: string;
  labels: string[];
  vms: InventoryVmDetail[];
}

async function askQemu(socket: string, timeoutMs: number): Promise<{ version: string; state: string }> {
  const q = await QmpClient.connect(socket, { timeoutMs });
  try {
    const { version } = await queryVersion(q);
    return { version, state: (await queryStatus(q)).status };
  } finally {
    await q.close();
  }
}

/**
 * Every VM of the host with its label, the version and run state its live QEMU reports, and its machine
 * type; read-only (QMP queries only), a few monitors at a time, each bounded by `timeoutMs`.
 */
export async function inventoryVms(config: HostConfig, timeoutMs = 3_000): Promise<HostVmInventory> {
  const records = await listVmRecords(config.runtimeDir);
  const vms: InventoryVmDetail[] = new Array(records.length);
  let next = 0;
  const work = async () => {
    for (let i = next++; i < records.length; i = next++) {
      const r = records[i]!;
      const base = { vmId: r.id, label: r.binary.label, machineType: r.machineType ?? null, generation: r.generation };
      if (!isProcessAlive(r.pid, r.qmpSocket)) {
        vms[i] = { ...base, version: null, state: 'not-running' };
        continue;
      }
      try {
        vms[i] = { ...base, ...(await askQemu(r.qmpSocket, timeoutMs)) };
      } catch (err) {
        vms[i] = { ...base, version: null, state: 'unknown', problem: `its QEMU monitor: ${(err as Error).message}` };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, records.length) }, work));
  return { ...describeHost(config), vms };
}
