// The resume marker of a destination: written just before its `cont`, so that from then on every step knows
// the source's state may be stale and the destination is never killed (workflows/decisions/recovery.ts).
import { existsSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { HostConfig } from '../host/config';
import { resumeMarkerFile } from '../host/paths';

/**
 * Not fsynced: it guards against a crash of the worker (the page cache survives it); a crash of the host
 * takes both QEMUs with it. An fsync here would lengthen the guest's pause by milliseconds.
 */
export function markResumed(config: HostConfig, vmId: string, generation: number): void {
  writeFileSync(resumeMarkerFile(config.runtimeDir, vmId, generation), new Date().toISOString(), { mode: 0o600 });
}

export function destinationMayHaveRun(config: HostConfig, vmId: string, generation: number): boolean {
  return existsSync(resumeMarkerFile(config.runtimeDir, vmId, generation));
}

export async function clearResumeMarker(config: HostConfig, vmId: string, generation: number): Promise<void> {
  await rm(resumeMarkerFile(config.runtimeDir, vmId, generation), { force: true });
}
