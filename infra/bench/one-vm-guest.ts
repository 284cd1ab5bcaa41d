// The guest the one-VM benchmark upgrades: the Linux test guest (infra/guest/build-guest.sh) booted straight
// from its kernel and initramfs, with no disk and no NIC, its console on a serial log. It is measured only
// once it has booted and idles (its /init sleeps and prints a tick a second), so neither the boot's CPU nor
// a busy vCPU competes with the Temporal service and the workers for the machine's cores.
import type { HostConfig } from '../../activities/host/config';
import { launchVm } from '../../activities/host/vm-launch';
import type { VmRecord } from '../../activities/host/vm-record';
import type { VmSpec } from '../../activities/host/vm-spec';
import type { RamMode } from '../../workflows/decisions/plan';
import { linuxGuestVm, waitForGuest } from '../guest/guest-vm';
import { procCpuSec } from './fleet';

/** The guest's RAM, as the demo and `host init` give the Linux test guest. */
export const ONE_VM_GUEST_MIB = 256;

export interface OneVmGuestOptions {
  id: string;
  /** Version label of the binary the guest starts under. */
  binary: string;
  /** Folder of the console log. */
  dir: string;
  /** `copied`: a memfd with share=off, sent through the stream; `shared`: share=on, mapped by both QEMUs. */
  ram: RamMode;
  memoryMiB?: number;
}

export function oneVmGuestSpec(o: OneVmGuestOptions): { spec: VmSpec; serialLog: string } {
  const { spec, serialLog } = linuxGuestVm({
    id: o.id,
    binary: o.binary,
    dir: o.dir,
    memoryMiB: o.memoryMiB ?? ONE_VM_GUEST_MIB,
    noDisk: true,
    memfd: { shared: o.ram === 'shared' },
  });
  return { spec, serialLog };
}

export interface BootedGuest {
  record: VmRecord;
  serialLog: string;
  /** Launch → the first tick after `fu-ready`. */
  bootMs: number;
  /** Share of one CPU the idle guest's QEMU used over `idleSampleMs` before it was handed over. */
  idleCpuShare: number;
}

/**
 * Launches the guest and waits until it has booted and idles: `fu-ready`, then a tick (its /init reached
 * the loop that only sleeps), then `idleSampleMs` more, over which its QEMU's CPU is measured.
 */
export async function bootOneVmGuest(
  config: HostConfig,
  o: OneVmGuestOptions,
  { timeoutMs = 120_000, idleSampleMs = 1_000 } = {},
): Promise<BootedGuest> {
  const { spec, serialLog } = oneVmGuestSpec(o);
  const t0 = performance.now();
  const record = await launchVm({ config, spec });
  await waitForGuest(serialLog, (c) => c.ready && c.ticks >= 1, timeoutMs);
  const bootMs = performance.now() - t0;
  const before = procCpuSec(record.pid);
  const s0 = performance.now();
  await new Promise((r) => setTimeout(r, idleSampleMs));
  const idleCpuShare = (procCpuSec(record.pid) - before) / ((performance.now() - s0) / 1000);
  return { record, serialLog, bootMs, idleCpuShare };
}
