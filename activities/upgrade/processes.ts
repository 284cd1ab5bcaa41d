// The QEMU processes of one VM on this host, named by generation. The VM record names the process that
// runs the VM; a destination being prepared has a process file `run/<vmId>.<generation>.proc.json` until
// finalize folds it into the record. Nothing here trusts a path or pid that came through Temporal.
import { readFile, rm } from 'node:fs/promises';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { failureTypes } from '../../workflows/failures';
import { resolveBinary, type HostConfig, type ResolvedBinary } from '../host/config';
import { writeFileAtomic } from '../host/fs-util';
import { pidFile, processFile, socketPath } from '../host/paths';
import { isProcessAlive } from '../host/qemu-launcher';
import { assertSafeId, SAFE_LABEL } from '../host/validate';
import { readVmRecord, type VmRecord } from '../host/vm-record';
import { QmpClient } from '../qmp/client';
import type { ProcessRef } from './api';

export interface VmProcess {
  vmId: string;
  generation: number;
  label: string;
  pid: number;
  qmpSocket: string;
}

const procFileSchema = z.object({ pid: z.number().int().positive(), label: z.string(), startedAt: z.string() });

function procFile(config: HostConfig, vmId: string, generation: number): string {
  return processFile(config.runtimeDir, vmId, generation);
}

/** The VM's record, or a non-retryable VmNotFound: the worker serves only VMs in its inventory. */
export async function requireRecord(config: HostConfig, vmId: string): Promise<VmRecord> {
  assertSafeIdOrRefuse(vmId);
  const record = await readVmRecord(config.runtimeDir, vmId);
  if (!record) {
    throw ApplicationFailure.nonRetryable(
      `VM ${vmId} is not in the inventory of host ${config.hostId}`,
      failureTypes.vmNotFound,
    );
  }
  return record;
}

function assertSafeIdOrRefuse(vmId: string): void {
  try {
    assertSafeId(vmId, 'vmId');
  } catch (err) {
    throw ApplicationFailure.nonRetryable((err as Error).message, failureTypes.notAllowed);
  }
}

/**
 * Refuses, non-retryable NotAllowed, a VM id or process ref that could not name a file of the runtime folder
 * (a path-like id, a generation that is not a positive integer, a label that is not a version label). Every
 * activity that takes them calls this first, before any file is read, written or removed. Without it, such
 * a value was stopped only by whichever path helper met it first (procFile checks no generation at all, so
 * only the call order kept it out), and with a plain ConfigError that Temporal retries, not NotAllowed.
 */
export function refuseUnsafeInput(vmId: unknown, ...refs: unknown[]): void {
  assertSafeIdOrRefuse(vmId as string);
  for (const ref of refs) {
    const { generation, label } = (ref ?? {}) as Partial<ProcessRef>;
    if (!Number.isSafeInteger(generation) || (generation as number) < 1)
      throw ApplicationFailure.nonRetryable(
        `invalid generation ${JSON.stringify(generation)}: must be a positive integer`,
        failureTypes.notAllowed,
      );
    if (typeof label !== 'string' || !SAFE_LABEL.test(label))
      throw ApplicationFailure.nonRetryable(
        `invalid version label ${JSON.stringify(label)}: must match ${SAFE_LABEL.source}`,
        failureTypes.notAllowed,
      );
  }
}

/** An allow-listed binary, or a non-retryable NotAllowed naming the label. */
export function allowedBinary(config: HostConfig, label: string): ResolvedBinary {
  try {
    return resolveBinary(config, label, 'label');
  } catch (err) {
    throw ApplicationFailure.nonRetryable((err as Error).message, failureTypes.notAllowed);
  }
}

export async function rememberProcess(
  config: HostConfig,
  vmId: string,
  generation: number,
  label: string,
  pid: number,
) {
  const body = { pid, label, startedAt: new Date().toISOString() };
  await writeFileAtomic(procFile(config, vmId, generation), JSON.stringify(body));
}

export async function forgetProcess(config: HostConfig, vmId: string, generation: number): Promise<void> {
  await Promise.all([
    rm(procFile(config, vmId, generation), { force: true }),
    rm(pidFile(config.runtimeDir, vmId, generation), { force: true }),
  ]);
}

/**
 * The process of a generation, from the record or its process file; undefined when none was started.
 * `record`: the VM's record as the calling step read it at its start (each step reads it once, not once per
 * process it looks up); read here when not given.
 */
export async function findProcess(
  config: HostConfig,
  vmId: string,
  ref: ProcessRef,
  record?: VmRecord,
): Promise<VmProcess | undefined> {
  const qmpSocket = socketPath(config.runtimeDir, vmId, ref.generation, 'qmp');
  record ??= await requireRecord(config, vmId);
  if (record.generation === ref.generation) {
    return {
      vmId,
      generation: ref.generation,
      label: record.binary.label,
      pid: record.pid,
      qmpSocket: record.qmpSocket,
    };
  }
  let text: string;
  try {
    text = await readFile(procFile(config, vmId, ref.generation), 'utf8');
  } catch {
    // No process file: a launch cut short (the worker died) may have left a QEMU that wrote its pidfile.
    const pid = Number(
      (await readFile(pidFile(config.runtimeDir, vmId, ref.generation), 'utf8').catch(() => '')).trim(),
    );
    if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
    const orphan = { vmId, generation: ref.generation, label: ref.label, pid, qmpSocket };
    return isAlive(orphan) ? orphan : undefined;
  }
  const p = procFileSchema.parse(JSON.parse(text));
  return { vmId, generation: ref.generation, label: p.label, pid: p.pid, qmpSocket };
}

export function isAlive(p: VmProcess): boolean {
  return isProcessAlive(p.pid, p.qmpSocket);
}

/** A live process of the generation, or a non-retryable ProcessLost naming it. `record` as for findProcess. */
export async function requireLiveProcess(
  config: HostConfig,
  vmId: string,
  ref: ProcessRef,
  role: string,
  record?: VmRecord,
): Promise<VmProcess> {
  return requireAlive(await findProcess(config, vmId, ref, record), vmId, ref, role);
}

/** The process itself when it lives, or the non-retryable ProcessLost of requireLiveProcess. */
export function requireAlive(p: VmProcess | undefined, vmId: string, ref: ProcessRef, role: string): VmProcess {
  if (!p || !isAlive(p)) {
    throw ApplicationFailure.nonRetryable(
      `${role} QEMU of ${vmId} (generation ${ref.generation}) is not running${p ? ` (pid ${p.pid} gone)` : ''}`,
      failureTypes.processLost,
    );
  }
  return p;
}

export function connect(config: HostConfig, p: VmProcess, timeoutMs = config.limits.qmpTimeoutMs): Promise<QmpClient> {
  return QmpClient.connect(p.qmpSocket, { timeoutMs });
}

/** Runs `use` with a QMP connection to the process, closing it afterwards. */
export async function withQmp<T>(config: HostConfig, p: VmProcess, use: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const qmp = await connect(config, p);
  try {
    return await use(qmp);
  } finally {
    await qmp.close();
  }
}

/** Steps that name two processes of one VM always move it forward: the destination is the later one. */
export function refuseGenerations(source: ProcessRef, destination: ProcessRef): void {
  if (destination.generation <= source.generation) {
    throw ApplicationFailure.nonRetryable(
      `destination generation ${destination.generation} must be after source generation ${source.generation}`,
      failureTypes.notAllowed,
    );
  }
}
