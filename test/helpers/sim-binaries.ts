// Simulated QEMU "binaries" for host configs: small executables that run the simulator in one dialect and
// version, with its ledger in a given folder. The allow-list names them like any other build.
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { simulatorLauncher } from '../../infra/simulator';
import { requireRealPart } from '../../infra/real-parts';

export function writeSimBinary(
  dir: string,
  name: string,
  o: { dialect: string; version: string; ledger: string; extra?: string[] },
): string {
  requireRealPart(
    'the compiled simulator (npm run build)',
    path.join(path.dirname(simulatorLauncher), '..', '..', 'dist', 'infra', 'simulator', 'main.js'),
  );
  const file = path.join(dir, name);
  const args = [
    '--sim-dialect',
    o.dialect,
    '--sim-version',
    o.version,
    '--sim-state-dir',
    o.ledger,
    ...(o.extra ?? []),
  ];
  writeFileSync(
    file,
    `#!/bin/sh\nexec "${process.execPath}" "${simulatorLauncher}" ${args.map((a) => `'${a}'`).join(' ')} "$@"\n`,
  );
  chmodSync(file, 0o755);
  return file;
}
