// Readings of a VM under upgrade on real QEMU, shared by the real-QEMU fault and restart tests: a short QMP
// conversation, the counter guest's value, and the QEMU processes /proc shows for a VM.
import { readdirSync, readFileSync } from 'node:fs';
import { isProcessAlive } from '../../activities/host/qemu-launcher';
import { QmpClient } from '../../activities/qmp/client';
import { parseCounter } from './counter-guest';

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
