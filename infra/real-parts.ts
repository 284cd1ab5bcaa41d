// Where the real parts installed by infra/install.sh live. A test or command that needs one and cannot find
// it fails with a message naming the part and the command that installs it; nothing skips.
import { existsSync } from 'node:fs';
import path from 'node:path';

export const projectRoot = path.resolve(__dirname, '..', __dirname.includes(`${path.sep}dist${path.sep}`) ? '..' : '');
export const cacheDir = path.join(projectRoot, '.cache');

export interface QemuBuild {
  /** Version label as used in allow-lists. */
  label: string;
  binary: string;
  /** Firmware/data folders passed as -L, in order. Empty for the system build. */
  dataDirs: string[];
}

export const qemu72: QemuBuild = { label: '7.2', binary: '/usr/bin/qemu-system-x86_64', dataDirs: [] };

const qemu10Root = path.join(cacheDir, 'qemu-10.0');
export const qemu10: QemuBuild = {
  label: '10.0.2',
  binary: path.join(qemu10Root, 'usr/bin/qemu-system-x86_64'),
  // Its own data first; SeaBIOS comes from bookworm's seabios package (installed with QEMU 7.2).
  dataDirs: [path.join(qemu10Root, 'usr/share/qemu'), '/usr/share/seabios'],
};

export const temporalCli = path.join(cacheDir, 'temporal', 'bin', 'temporal');

export class MissingRealPartError extends Error {}

export function requireRealPart(what: string, file: string): string {
  if (!existsSync(file)) {
    throw new MissingRealPartError(`${what} not found at ${file}: run infra/install.sh (npm run setup)`);
  }
  return file;
}

export function requireQemu(build: QemuBuild): QemuBuild {
  requireRealPart(`QEMU ${build.label}`, build.binary);
  for (const d of build.dataDirs) requireRealPart(`QEMU ${build.label} data folder`, d);
  return build;
}
