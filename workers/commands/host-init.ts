// `fleet-upgrade host init`: a host config allow-listing the QEMU builds this checkout installed, a first VM
// spec running the counter guest, and a spec running the Linux guest (a data disk it keeps writing, its
// console on a serial log) — with `--netns`, as root, its NIC on a tap on a bridge in a network namespace
// of its own — so one real VM can be upgraded by hand in a few commands.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { parseHostConfig } from '../../activities/host/config';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { writeCounterGuest } from '../../infra/guest/counter-guest';
import { projectRoot, qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import { linuxGuestVm } from '../../infra/guest/guest-vm';
import { guestImage } from '../../infra/guest/linux-guest';
import { createHostNetwork, whyNoHostNetwork } from '../../infra/guest/network';
import { BadInputError, CliError, ExitCode } from '../cli-errors';

export function hostInit(hostId: string, runtimeDir: string, netns?: string): string {
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
      ...(netns !== undefined ? { netns } : {}),
    },
    '--host-id/--runtime-dir/--netns',
  );
  const configFile = path.join(dir, 'host.yaml');
  if (existsSync(configFile)) throw new BadInputError(`--runtime-dir: ${configFile} exists already; not overwritten`);
  try {
    guestImage(projectRoot);
  } catch (err) {
    throw new CliError((err as Error).message, ExitCode.failed);
  }
  if (netns !== undefined) {
    const why = whyNoHostNetwork();
    if (why) throw new BadInputError(`--netns: needs root, network namespaces and taps (${why})`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const net = netns !== undefined ? createHostNetwork(netns) : undefined;
  net?.addTap('tap-linux1');
  writeFileSync(
    configFile,
    `# Written by fleet-upgrade host init; see infra/examples/host.yaml for every field.\n${stringify({
      hostId: config.hostId,
      runtimeDir: config.runtimeDir,
      binaries: config.binaries,
      ...(config.netns ? { netns: config.netns } : {}),
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
  const linux = linuxGuestVm({
    id: 'linux1',
    binary: '7.2',
    dir,
    ...(net ? { nic: { tap: 'tap-linux1', bridge: net.bridge, ip: '10.77.0.11/24', mac: '52:54:00:00:00:11' } } : {}),
  });
  const linuxFile = path.join(dir, 'linux1.yaml');
  writeFileSync(
    linuxFile,
    `# A VM running the Linux guest: it writes numbered sectors to ${linux.disk} and reports on its console\n` +
      `# (${linux.serialLog}: fu-ready, fu-wrote <n>)${net ? `; eth0 10.77.0.11/24 on tap-linux1, bridge br0 of network namespace ${net.ns}` : ''}.\n${stringify(linux.spec)}`,
    { mode: 0o600 },
  );
  return [
    `wrote ${configFile}`,
    `wrote ${specFile} (counter guest ${disk})`,
    `wrote ${linuxFile} (Linux guest, 256 MiB, data disk ${linux.disk}, console ${linux.serialLog})`,
    net
      ? `made network namespace ${net.ns}: bridge br0 10.77.0.1/24, tap-linux1; ping the guest with \`ip netns exec ${net.ns} ping 10.77.0.11\`; remove it with \`ip netns del ${net.ns}\``
      : 'linux1 has no NIC: pass --netns <name> (as root) for one on a tap, on a bridge in a network namespace of its own',
  ].join('\n');
}
