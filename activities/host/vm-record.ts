// VM records: `<runtimeDir>/vms/<vmId>.json`, one per VM, naming the live QEMU process that runs it.
// Written atomically, owner-only; read back validated; ids validated so no path leaves the runtime folder.
import { readdir, readFile, rm } from 'node:fs/promises';
import { z } from 'zod';
import { ensurePrivateDir, writeFileAtomic } from './fs-util';
import { recordFile, runtimeSubdir } from './paths';
import { absPath, assertSafeId, ConfigError, safeId, safeLabel, validate } from './validate';
import { VmSpecSchema } from './vm-spec';

export const VmRecordSchema = z
  .strictObject({
    id: safeId,
    pid: z.int().positive(),
    qmpSocket: absPath,
    binary: z.strictObject({ label: safeLabel, path: absPath }),
    spec: VmSpecSchema,
    /** Concrete machine type as QEMU reports it (`pc-i440fx-7.2`), once known. */
    machineType: z.string().optional(),
    startedAt: z.iso.datetime(),
    /** 1 at first launch, +1 for each process that took the VM over. */
    generation: z.int().min(1),
    logFile: absPath.optional(),
    /**
     * Set when an upgrade could not tell which process holds the guest's current state: every process listed
     * is kept as it was, nothing upgrades the VM, and an operator picks one (`fleet-upgrade vm resolve`).
     */
    attention: z
      .strictObject({
        reason: z.string(),
        since: z.iso.datetime(),
        processes: z.array(
          z.strictObject({
            generation: z.int().min(1),
            label: safeLabel,
            pid: z.int().positive(),
            qmpSocket: absPath,
          }),
        ),
      })
      .optional(),
  })
  .refine((r) => r.spec.id === r.id, { message: 'must equal id', path: ['spec', 'id'] });

export type VmRecord = z.output<typeof VmRecordSchema>;

export interface WriteRecordOptions {
  /** Optimistic check: the generation the current record must have, or 'absent' for none. */
  expectGeneration?: number | 'absent';
}

export class RecordConflictError extends Error {
  override name = 'RecordConflictError';
}

export async function readVmRecord(runtimeDir: string, vmId: string): Promise<VmRecord | undefined> {
  const file = recordFile(runtimeDir, vmId);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('', `corrupt VM record: ${(err as Error).message}`, file);
  }
  const rec = validate(VmRecordSchema, data, file);
  if (rec.id !== vmId) throw new ConfigError('id', `record names VM ${rec.id}, expected ${vmId}`, file);
  return rec;
}

export async function writeVmRecord(
  runtimeDir: string,
  record: VmRecord,
  options: WriteRecordOptions = {},
): Promise<void> {
  const rec = validate(VmRecordSchema, record, `VM record ${record.id}`);
  await ensurePrivateDir(runtimeSubdir(runtimeDir, 'vms'));
  if (options.expectGeneration !== undefined) {
    const current = await readVmRecord(runtimeDir, rec.id);
    const have = current ? current.generation : 'absent';
    if (have !== options.expectGeneration) {
      throw new RecordConflictError(
        `VM record ${rec.id}: expected generation ${options.expectGeneration}, found ${have}`,
      );
    }
  }
  await writeFileAtomic(recordFile(runtimeDir, rec.id), `${JSON.stringify(rec, null, 2)}\n`);
}

export async function deleteVmRecord(runtimeDir: string, vmId: string): Promise<void> {
  await rm(recordFile(runtimeDir, vmId), { force: true });
}

/** All records, sorted by id. A corrupt record throws (naming its file) rather than being skipped. */
export async function listVmRecords(runtimeDir: string): Promise<VmRecord[]> {
  let names: string[];
  try {
    names = await readdir(runtimeSubdir(runtimeDir, 'vms'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const ids = names
    .filter((n) => n.endsWith('.json'))
    .map((n) => n.slice(0, -'.json'.length))
    .filter((id) => {
      try {
        return assertSafeId(id) === id;
      } catch {
        return false;
      }
    })
    .sort();
  const records = await Promise.all(ids.map((id) => readVmRecord(runtimeDir, id)));
  return records.filter((r): r is VmRecord => r !== undefined);
}
