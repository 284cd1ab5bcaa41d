// Readings of a VM under upgrade, shared by the real-QEMU fault and restart tests and the simulator's e2e
// tests: a short QMP conversation, the counter guest's value, the QEMU processes /proc shows for a VM, and a
// counter-guest VM launched on QEMU 7.2 the product's way.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { HostConfig } from '../../activities/host/config';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { launchVm } from '../../activities/host/vm-launch';
import { parseVmSpec } from '../../activities/host/vm-spec';
import type { VmRecord } from '../../activities/host/vm-record';
import { QmpClient } from '../../activities/qmp/client';
import { parseCounter, writeCounterGuest } from '../../infra/guest/counter-guest';

/** Connect, run `use`, close. Only while no activity may hold the monitor: it serves one client at a time. */
export async function qmpOf<T>(socket: string, use: (q: QmpClient) => Promise<T>): Promise<T> {
  const q = await QmpClient.connect(socket);
  try {
    return await use(q);
  } finally {
    await q.close();
  }
}

/** The counter guest's value, read over the monitor. */
export const counterOf = (socket: string): Promise<number> =>
  qmpOf(socket, async (q) =>
    parseCounter(String(await q.execute('human-monitor-command', { 'command-line': 'x /1wx 0x7e00' }))),
  );

/** Live QEMU processes whose command line names this VM (`-name guest=<id>`) under this runtime folder. */
export function qemuProcessesOf(runtimeDir: string, vmId: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (argv.includes(`guest=${vmId}`) && argv.some((a) => a.includes(runtimeDir)) && isProcessAlive(pid)) {
        out.push(pid);
      }
    } catch {
      /* gone */
    }
  }
  return out;
}

/**
 * A VM `id` on the host's `7.2` build running the counter guest from a disk under `dir`, recorded. Its RAM
 * is private, so it is copied through the stream: the fault and restart tests need a migration that lasts
 * (slowed by a bandwidth limit) while they inject their faults; shared RAM would move in milliseconds.
 */
export function launchCounterVm(config: HostConfig, dir: string, id: string, memoryMiB = 64): Promise<VmRecord> {
  const disk = writeCounterGuest(path.join(dir, `${id}.img`));
  const spec = parseVmSpec({
    id,
    binary: '7.2',
    machine: 'pc-i440fx-7.2',
    accel: 'tcg',
    memoryMiB,
    memoryShared: false,
    drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
  });
  return launchVm({ config, spec });
}
