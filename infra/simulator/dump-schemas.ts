// Regenerates test/fixtures/schemas/qemu-<version>.json from the real QEMU builds installed by
// infra/install.sh: start each with `-machine none -S`, negotiate, `query-qmp-schema`, quit.
// The simulator serves these (patched per dialect), so its introspection is real QEMU's, not a guess.
//
//   npm run build && node dist/infra/simulator/dump-schemas.js
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QemuBuild, qemu10, qemu72, requireRealPart } from '../real-parts';
import { RawQmp } from './raw-qmp';
import { schemaFixturePath } from './schema';

export async function dumpSchema(build: QemuBuild): Promise<unknown[]> {
  requireRealPart(`QEMU ${build.label}`, build.binary);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qemu-schema-'));
  const sock = path.join(dir, 'qmp.sock');
  const args = [
    ...build.dataDirs.flatMap((d) => ['-L', d]),
    ...['-machine', 'none', '-qmp', `unix:${sock},server=on,wait=off`, '-display', 'none', '-S', '-nodefaults'],
  ];
  const child = spawn(build.binary, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const qmp = await RawQmp.connect(sock, { timeoutMs: 10_000 });
    const schema = await qmp.cmd<unknown[]>('query-qmp-schema');
    await qmp.cmd('quit');
    await exited;
    return schema;
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One SchemaInfo per line: valid JSON that diffs well. */
export function formatSchema(schema: unknown[]): string {
  return `[\n${schema.map((e) => JSON.stringify(e)).join(',\n')}\n]\n`;
}

async function main(): Promise<void> {
  for (const build of [qemu72, qemu10]) {
    const schema = await dumpSchema(build);
    const file = schemaFixturePath(build.label);
    writeFileSync(file, formatSchema(schema));
    process.stdout.write(`${file}: ${schema.length} entries\n`);
  }
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`dump-schemas: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
