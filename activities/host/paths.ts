// The runtime folder's layout, pure: `vms/` records, `run/` sockets, `log/` QEMU logs, `mem/` RAM files.
// Every name is built from a validated VM id, so nothing escapes the runtime folder, and every socket path
// is checked against the UNIX socket limit (sun_path is 108 bytes including the terminating NUL).
import path from 'node:path';
import { assertSafeId, ConfigError } from './validate';

export const MAX_SOCKET_PATH_BYTES = 107;

export type QemuRole = 'source' | 'destination';

export const runtimeSubdirs = ['vms', 'run', 'log', 'mem'] as const;

export function runtimeSubdir(runtimeDir: string, sub: (typeof runtimeSubdirs)[number]): string {
  if (!path.isAbsolute(runtimeDir)) throw new ConfigError('runtimeDir', `must be an absolute path: ${runtimeDir}`);
  return path.join(runtimeDir, sub);
}

/** Fails clearly when a UNIX socket path would not fit. */
export function checkSocketPath(p: string): string {
  const n = Buffer.byteLength(p);
  if (n > MAX_SOCKET_PATH_BYTES) {
    throw new ConfigError(
      'runtimeDir',
      `socket path ${p} is ${n} bytes, over the ${MAX_SOCKET_PATH_BYTES}-byte limit of UNIX sockets: use a shorter runtimeDir or VM id`,
    );
  }
  return p;
}

export function recordFile(runtimeDir: string, vmId: string): string {
  return path.join(runtimeSubdir(runtimeDir, 'vms'), `${assertSafeId(vmId, 'id')}.json`);
}

/** A socket of one QEMU process of a VM, e.g. `run/<vmId>.3.qmp` for the QMP socket of generation 3. */
export function socketPath(runtimeDir: string, vmId: string, generation: number, kind: 'qmp' | 'mig' | 'cpr'): string {
  assertSafeId(vmId, 'id');
  if (!Number.isSafeInteger(generation) || generation < 1)
    throw new ConfigError('generation', `invalid generation ${generation}`);
  return checkSocketPath(path.join(runtimeSubdir(runtimeDir, 'run'), `${vmId}.${generation}.${kind}`));
}

/** QEMU's own pidfile of a process (`-pidfile`): written by QEMU as it starts, so a launch cut short is found. */
export function pidFile(runtimeDir: string, vmId: string, generation: number): string {
  assertSafeId(vmId, 'id');
  return path.join(runtimeSubdir(runtimeDir, 'run'), `${vmId}.${generation}.pid`);
}

/** The worker's note of a process it started (pid, label), by generation: `run/<vmId>.<gen>.proc.json`. */
export function processFile(runtimeDir: string, vmId: string, generation: number): string {
  assertSafeId(vmId, 'id');
  return path.join(runtimeSubdir(runtimeDir, 'run'), `${vmId}.${generation}.proc.json`);
}

/** Written just before a destination's `cont`: from then on the source's state may be stale. */
export function resumeMarkerFile(runtimeDir: string, vmId: string, generation: number): string {
  assertSafeId(vmId, 'id');
  return path.join(runtimeSubdir(runtimeDir, 'run'), `${vmId}.${generation}.resumed`);
}

export function logFile(runtimeDir: string, vmId: string, generation: number, role: QemuRole): string {
  assertSafeId(vmId, 'id');
  return path.join(runtimeSubdir(runtimeDir, 'log'), `${vmId}.${generation}.${role}.log`);
}

/**
 * RAM file of a VM with memoryBackend `file`: one per VM, shared by the source and its destination, in the
 * host config's memoryDir (a tmpfs or hugetlbfs mount) or the runtime folder's `mem/`.
 */
export function memFile(runtimeDir: string, vmId: string, dir?: string): string {
  return path.join(dir ?? runtimeSubdir(runtimeDir, 'mem'), `${assertSafeId(vmId, 'id')}.ram`);
}
