// Step 2 of the saga: what a QEMU binary can do, asked of the binary itself (`-machine none`, no guest),
// cached per path, size and mtime like libvirt's capability cache: in memory, and on disk under the
// runtime folder so a restarted worker does not start the binary again. The binary's launcher starts it
// (a simulator binary in-process, cached in memory only: nothing on disk identifies it).
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import type { TargetFacts } from '../../workflows/decisions/plan';
import { writeFileAtomic } from '../host/fs-util';
import { ensurePrivateDir } from '../host/fs-util';
import type { BinaryEntry, SimulatorSpec } from '../host/config';
import { launcherFor } from '../host/qemu-launcher';
import { QmpClient } from '../qmp/client';
import { buildFeatures, type BuildFeatures } from './features';
import { queryVersion, querySchema } from './probe';

export interface BinaryToProbe {
  label: string;
  path: string;
  dataDirs: string[];
  env?: Record<string, string>;
  /** A simulator binary's spec (its launcher then runs it in-process). */
  simulator?: SimulatorSpec;
}

const entryOf = (binary: BinaryToProbe): BinaryEntry => ({ ...binary, env: binary.env ?? {} });

const machinesSchema = z.array(z.object({ name: z.string() }).passthrough());
const memory = new Map<string, TargetFacts>();

function cacheKey(binary: BinaryToProbe, stamp: { size: number; mtimeMs: number } | undefined): string {
  const s = stamp ?? { size: 0, mtimeMs: 0 };
  return createHash('sha256')
    .update(JSON.stringify([binary.path, s.size, s.mtimeMs, binary.dataDirs, binary.label]))
    .digest('hex')
    .slice(0, 32);
}

/** Probes a binary, or returns what an earlier probe of the same file found. */
export async function probeBinary(binary: BinaryToProbe, cacheDir: string, timeoutMs = 20_000): Promise<TargetFacts> {
  const entry = entryOf(binary);
  const stamp = await launcherFor(entry).buildStamp(entry);
  const key = cacheKey(binary, stamp);
  const hit = memory.get(key);
  if (hit) return hit;
  if (!stamp) {
    const facts = await probeBinaryNow(binary, timeoutMs);
    memory.set(key, facts);
    return facts;
  }
  const file = path.join(cacheDir, `caps-${key}.json`);
  try {
    const cached = JSON.parse(await readFile(file, 'utf8')) as TargetFacts;
    memory.set(key, cached);
    return cached;
  } catch {
    /* not cached yet */
  }
  const facts = await probeBinaryNow(binary, timeoutMs);
  await ensurePrivateDir(cacheDir);
  await writeFileAtomic(file, JSON.stringify(facts));
  memory.set(key, facts);
  return facts;
}

async function probeBinaryNow(binary: BinaryToProbe, timeoutMs: number): Promise<TargetFacts> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fu-probe-'));
  const sock = path.join(dir, 'qmp');
  const args = [
    ...binary.dataDirs.flatMap((d) => ['-L', d]),
    ...['-machine', 'none', '-S', '-nodefaults', '-no-user-config', '-display', 'none'],
    ...['-qmp', `unix:${sock},server=on,wait=off`],
  ];
  const entry = entryOf(binary);
  const child = launcherFor(entry).startProbe(entry, args);
  const exited = child.exited;
  exited.catch(() => undefined);
  try {
    const deadline = Date.now() + timeoutMs;
    let qmp: QmpClient | undefined;
    while (!qmp) {
      qmp = await Promise.race([QmpClient.connect(sock, { timeoutMs }).catch(() => undefined), exited]);
      if (!qmp) {
        if (Date.now() > deadline) throw new Error(`${binary.path}: its QMP socket never came up`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    try {
      const [version, schema, machines, sandbox] = await Promise.all([
        queryVersion(qmp),
        querySchema(qmp),
        qmp.execute('query-machines').then((m) => machinesSchema.parse(m)),
        // A build without seccomp has no `-sandbox` option group: the command refuses to name it.
        qmp.execute('query-command-line-options', { option: 'sandbox' }).then(
          () => true,
          () => false,
        ),
      ]);
      const features = buildFeatures(schema);
      return {
        label: binary.label,
        qemuVersion: version.version,
        dialect: features.dialect,
        migrationModes: features.migrationModes,
        machineTypes: machines.map((m) => m.name).sort(),
        ...(features.tapPermitOption ? { tapPermitOption: features.tapPermitOption } : {}),
        ignoreShared: features.ignoreShared,
        sandbox,
      };
    } finally {
      await qmp.close();
    }
  } finally {
    child.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A probed binary's schema-derived features, as the VM probe needs them. */
export function featuresOf(facts: TargetFacts): BuildFeatures {
  return {
    dialect: facts.dialect,
    migrationModes: facts.migrationModes,
    ...(facts.tapPermitOption ? { tapPermitOption: facts.tapPermitOption } : {}),
    ignoreShared: facts.ignoreShared === true,
  };
}
