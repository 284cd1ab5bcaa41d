// `fleet-upgrade host init`: a host config allow-listing the QEMU builds this checkout installed, and a first
// VM spec running the counter guest, so one real VM can be upgraded by hand in a few commands.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { parseHostConfig } from '../../activities/host/config';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { writeCounterGuest } from '../../infra/counter-guest';
import { qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import { BadInputError } from '../cli-errors';

export function hostInit(hostId: string, runtimeDir: string): string {
  requireQemu(qemu72);
  requireQemu(qemu10);
  const dir = path.resolve(runtimeDir);
  const config = parseHostConfig(
    {
      hostId,
      runtimeDir: dir,
      binaries: {
        '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
        '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
      },
    },
    '--host-id/--runtime-dir',
  );
  const configFile = path.join(dir, 'host.yaml');
  if (existsSync(configFile)) throw new BadInputError(`--runtime-dir: ${configFile} exists already; not overwritten`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(
    configFile,
    `# Written by fleet-upgrade host init; see infra/examples/host.yaml for every field.\n${stringify({
      hostId: config.hostId,
      runtimeDir: config.runtimeDir,
      binaries: config.binaries,
    })}`,
    { mode: 0o600 },
  );
  const disk = writeCounterGuest(path.join(dir, 'vm1.img'));
  const spec = parseVmSpec({
    id: 'vm1',
    binary: '7.2',
    machine: 'pc-i440fx-7.2',
    accel: 'tcg',
    memoryMiB: 64,
    drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
  });
  const specFile = path.join(dir, 'vm1.yaml');
  writeFileSync(specFile, `# A VM running the counter guest (it increments the dword at 0x7e00).\n${stringify(spec)}`, {
    mode: 0o600,
  });
  return [`wrote ${configFile}`, `wrote ${specFile} (counter guest ${disk})`].join('\n');
}
