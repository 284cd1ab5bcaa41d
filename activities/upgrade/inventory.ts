// The host's inventory, for the fleet workflows: which VMs this host runs (from its own records, each
// checked against its live process) and which QEMU version labels it allows. Read-only; names no paths.
import type { HostConfig } from '../host/config';
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
