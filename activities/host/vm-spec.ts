// The VM spec (YAML) and the pure QEMU command-line builder. The spec has no escape hatch for raw QEMU
// arguments: everything on the command line comes from a validated field.
import { z } from 'zod';
import { dialectByName, type DialectName } from '../capabilities/dialects';
import { absPath, ConfigError, parseYamlText, qemuId, safeId, safeLabel, validate } from './validate';

const machineName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'must be a QEMU machine type such as pc-i440fx-7.2');
const driverName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'must be a QEMU device driver name');
const ifName = z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be a network interface name (at most 15 characters)');

export const DriveSchema = z
  .strictObject({
    id: qemuId,
    file: absPath,
    format: z.enum(['raw', 'qcow2']),
    interface: z.enum(['ide', 'virtio', 'none']),
    readonly: z.boolean().default(false),
  })
  .refine((d) => !(d.readonly && d.interface === 'ide'), {
    message: 'an IDE disk cannot be read-only',
    path: ['readonly'],
  });

export const NetdevSchema = z
  .strictObject({
    id: qemuId,
    type: z.enum(['tap', 'user', 'vhost-user']),
    /** tap only: an existing (or to-be-created) host interface. */
    ifname: ifName.optional(),
    /** tap only: enable the virtio-net header. */
    vnetHdr: z.boolean().optional(),
    /** tap only: queues of a multiqueue tap (its virtio-net device gets `mq=on`). */
    queues: z.int().min(1).max(16).optional(),
    /** tap only: vhost-net in the host kernel (`vhost=on`). */
    vhost: z.boolean().optional(),
    /** tap only: the bridge the tap is on. Lets an upgrade re-create the tap (a new one on this bridge). */
    bridge: ifName.optional(),
    /** vhost-user only: the backend's UNIX socket. */
    chardevPath: absPath.optional(),
  })
  .superRefine((n, ctx) => {
    if (n.type !== 'tap' && n.ifname !== undefined)
      ctx.addIssue({ code: 'custom', path: ['ifname'], message: 'only for type tap' });
    for (const field of ['vnetHdr', 'queues', 'vhost', 'bridge'] as const) {
      if (n.type !== 'tap' && n[field] !== undefined)
        ctx.addIssue({ code: 'custom', path: [field], message: 'only for type tap' });
    }
    if (n.type === 'tap' && n.bridge !== undefined && n.ifname === undefined)
      ctx.addIssue({ code: 'custom', path: ['ifname'], message: 'is required with bridge' });
    if (n.type === 'vhost-user' && !n.chardevPath)
      ctx.addIssue({ code: 'custom', path: ['chardevPath'], message: 'is required for type vhost-user' });
    if (n.type !== 'vhost-user' && n.chardevPath)
      ctx.addIssue({ code: 'custom', path: ['chardevPath'], message: 'only for type vhost-user' });
  });

export const DeviceSchema = z.strictObject({
  id: qemuId,
  driver: driverName,
  netdev: qemuId.optional(),
  drive: qemuId.optional(),
  /** A NIC's MAC address (QEMU gives every NIC 52:54:00:12:34:56 otherwise: VMs sharing a bridge need their own). */
  mac: z
    .string()
    .regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, 'must be a MAC address like 52:54:00:00:00:01 (lower case)')
    .optional(),
});

export const VmSpecSchema = z
  .strictObject({
    id: safeId,
    name: z
      .string()
      .regex(/^[A-Za-z0-9 ._-]{1,64}$/, 'must be at most 64 letters, digits, spaces, . _ -')
      .optional(),
    /** Version label of an allow-listed binary of the host config. */
    binary: safeLabel,
    /** Machine type; an alias (`pc`, `q35`) is allowed at first launch, never for a migration destination. */
    machine: machineName,
    accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
    memoryMiB: z
      .int()
      .min(16)
      .max(16 * 1024 * 1024),
    memoryBackend: z.enum(['memfd', 'file', 'ram']).default('memfd'),
    memoryShared: z.boolean().default(true),
    cpus: z.int().min(1).max(1024).default(1),
    /** Direct kernel boot: the kernel, its initramfs and its command line. */
    kernel: absPath.optional(),
    initrd: absPath.optional(),
    append: z
      .string()
      .regex(/^[A-Za-z0-9=/._ ,:+-]{0,1024}$/, 'must be a kernel command line of letters, digits, spaces and =/._,:+-')
      .optional(),
    /** The first serial port's output, appended to this file by every QEMU process of the VM. */
    serialLog: absPath.optional(),
    drives: z.array(DriveSchema).default([]),
    netdevs: z.array(NetdevSchema).default([]),
    devices: z.array(DeviceSchema).default([]),
  })
  .superRefine((s, ctx) => {
    const ids = new Map<string, string>();
    const seen = (id: string, at: (string | number)[]) => {
      if (ids.has(id)) ctx.addIssue({ code: 'custom', path: at, message: `duplicate id ${id} (also ${ids.get(id)})` });
      else ids.set(id, at.join('.'));
    };
    s.drives.forEach((d, i) => seen(d.id, ['drives', i, 'id']));
    s.netdevs.forEach((n, i) => seen(n.id, ['netdevs', i, 'id']));
    s.devices.forEach((d, i) => seen(d.id, ['devices', i, 'id']));
    const usedNetdevs = new Set<string>();
    s.devices.forEach((d, i) => {
      if (d.netdev !== undefined) {
        if (!s.netdevs.some((n) => n.id === d.netdev))
          ctx.addIssue({ code: 'custom', path: ['devices', i, 'netdev'], message: `no netdev ${d.netdev}` });
        if (usedNetdevs.has(d.netdev))
          ctx.addIssue({ code: 'custom', path: ['devices', i, 'netdev'], message: `netdev ${d.netdev} already used` });
        usedNetdevs.add(d.netdev);
      }
      if (d.drive !== undefined && !s.drives.some((x) => x.id === d.drive && x.interface === 'none')) {
        ctx.addIssue({
          code: 'custom',
          path: ['devices', i, 'drive'],
          message: `no drive ${d.drive} with interface none`,
        });
      }
    });
    if ((s.initrd !== undefined || s.append !== undefined) && s.kernel === undefined)
      ctx.addIssue({ code: 'custom', path: ['kernel'], message: 'is required with initrd or append' });
    if (s.netdevs.some((n) => n.type === 'vhost-user') && !(s.memoryShared && s.memoryBackend !== 'ram')) {
      ctx.addIssue({ code: 'custom', path: ['memoryShared'], message: 'vhost-user needs shared memfd or file memory' });
    }
  });

export type VmSpec = z.output<typeof VmSpecSchema>;
export type VmSpecInput = z.input<typeof VmSpecSchema>;

export function parseVmSpec(data: unknown, source?: string): VmSpec {
  return validate(VmSpecSchema, data, source);
}

export function parseVmSpecYaml(text: string, source?: string): VmSpec {
  return parseVmSpec(parseYamlText(text, source), source);
}

export type Incoming = { kind: 'defer' } | { kind: 'cpr-transfer'; mainSocket: string; cprSocket: string };

interface CommonArgsOptions {
  /** The QMP socket QEMU listens on. */
  qmpSocket: string;
  /** Firmware/data folders of the binary (`-L`, in order). */
  dataDirs?: string[];
  /** Add `aux-ram-share=on` to the machine: only when the binary has the property (QEMU >= 10.0). */
  auxRamShare?: boolean;
  /** Path of the RAM file, required for memoryBackend `file`. */
  memFile?: string;
}

/** What the host worker hands a destination besides the migration stream (see activities/host/fd-handover.ts). */
export interface Handover {
  /** netdev id → the destination's fd numbers of the source's tap queues (inherited at spawn). */
  tapFds: Record<string, number[]>;
  /** The source's RAM as a file the destination maps (`/proc/<pid>/fd/<n>` of a memfd, or the RAM file). */
  ramPath?: string;
}

export interface SourceArgsOptions extends CommonArgsOptions {
  mode: 'source';
  /** With `local`, tap netdevs carry the permit option so a later local migration may take them. */
  dialect?: DialectName;
  tapPermitOption?: string;
}

export interface DestinationArgsOptions extends CommonArgsOptions {
  mode: 'destination';
  /** The concrete machine type of the source (`pc-i440fx-7.2` or its QOM name `pc-i440fx-7.2-machine`). */
  machineType: string;
  incoming: Incoming;
  paused: true;
  /** Netdev ids handed over from the source instead of re-created. */
  transferBackends: string[];
  dialect: DialectName;
  /** The tap option of the `local` dialect this build accepts; default: the dialect's newest name. */
  tapPermitOption?: string;
  /** Backends and RAM handed over by the host worker. */
  handover?: Handover;
  /** netdev id → the ifname of a tap re-created for this destination. */
  recreatedTaps?: Record<string, string>;
}

export type QemuArgsOptions = SourceArgsOptions | DestinationArgsOptions;

/** Machine aliases that must never name a migration destination. */
const MACHINE_ALIASES = new Set(['pc', 'q35', 'microvm', 'isapc']);

/** `pc-i440fx-7.2-machine` → `pc-i440fx-7.2`; refuses aliases and unversioned types. */
export function concreteMachineType(type: string): string {
  const t = type.replace(/-machine$/, '');
  if (MACHINE_ALIASES.has(t) || !/^[a-z0-9][a-z0-9._-]*-\d+\.\d+$/.test(t)) {
    throw new ConfigError(
      'machineType',
      `${JSON.stringify(type)} is not a concrete versioned machine type (e.g. pc-i440fx-7.2)`,
    );
  }
  return t;
}

/** Comma-separated QEMU option values escape a comma by doubling it. */
const esc = (v: string) => v.replace(/,/g, ',,');

type Props = Record<string, string | undefined>;
const kv = (props: Props) => Object.entries(props).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${esc(v)}`]));
const opts = (kind: string, props: Props) => [kind, ...kv(props)].join(',');

const onOff = (b: boolean) => (b ? 'on' : 'off');

const unixAddr = (p: string) => ({ transport: 'socket', type: 'unix', path: p });

function checkSocketArg(p: string, field: string): void {
  if (!p.startsWith('/') || p.includes(',') || p.includes('\0'))
    throw new ConfigError(field, `socket path ${JSON.stringify(p)} must be absolute, without commas`);
}

/** Pure: the argv (without the binary) that starts `spec` as a source VM or as a migration destination. */
export function buildQemuArgs(spec: VmSpec, o: QemuArgsOptions): string[] {
  checkSocketArg(o.qmpSocket, 'qmpSocket');
  const dst = o.mode === 'destination' ? o : undefined;
  const dialect = o.dialect ?? 'none';
  const transfer = new Set(dst?.transferBackends ?? []);
  for (const id of transfer) {
    if (!spec.netdevs.some((n) => n.id === id))
      throw new ConfigError('transferBackends', `no netdev ${id} in VM ${spec.id}`);
  }
  if (transfer.size && dialect === 'none')
    throw new ConfigError('transferBackends', 'dialect none cannot transfer backends');
  const permit = o.tapPermitOption ?? dialectByName('local').tapPermitOptions?.[0] ?? 'x-permit-local-migration';

  const args: string[] = [];
  for (const d of o.dataDirs ?? []) args.push('-L', d);
  args.push('-name', `guest=${spec.id}`, '-nodefaults', '-no-user-config', '-display', 'none');
  args.push('-qmp', `unix:${o.qmpSocket},server=on,wait=off`);
  args.push('-msg', 'timestamp=on');

  const machine = dst ? concreteMachineType(dst.machineType) : spec.machine;
  args.push(
    '-machine',
    opts(machine, { 'memory-backend': 'pc.ram', 'aux-ram-share': o.auxRamShare ? 'on' : undefined }),
  );
  if (spec.accel === 'auto') args.push('-accel', 'kvm', '-accel', 'tcg');
  else args.push('-accel', spec.accel);
  args.push('-smp', String(spec.cpus), '-m', `${spec.memoryMiB}M`);

  const size = `${spec.memoryMiB}M`;
  const share = onOff(spec.memoryShared);
  const ramPath = dst?.handover?.ramPath;
  if (ramPath !== undefined) {
    // The very pages the source runs on; the stream skips them (x-ignore-shared on both sides).
    args.push('-object', opts('memory-backend-file', { id: 'pc.ram', size, 'mem-path': ramPath, share: 'on' }));
  } else if (spec.memoryBackend === 'memfd') {
    args.push('-object', opts('memory-backend-memfd', { id: 'pc.ram', size, share }));
  } else if (spec.memoryBackend === 'file') {
    if (!o.memFile) throw new ConfigError('memFile', 'memoryBackend file needs a memFile path');
    args.push('-object', opts('memory-backend-file', { id: 'pc.ram', size, 'mem-path': o.memFile, share }));
  } else {
    args.push('-object', opts('memory-backend-ram', { id: 'pc.ram', size, share }));
  }

  if (spec.kernel !== undefined) {
    args.push('-kernel', spec.kernel);
    if (spec.initrd !== undefined) args.push('-initrd', spec.initrd);
    if (spec.append !== undefined) args.push('-append', spec.append);
  }
  if (spec.serialLog !== undefined) {
    args.push('-chardev', opts('file', { id: 'serial0', path: spec.serialLog, append: 'on' }));
    args.push('-serial', 'chardev:serial0');
  }

  for (const d of spec.drives) {
    args.push(
      '-drive',
      kv({ id: d.id, file: d.file, format: d.format, if: d.interface, readonly: d.readonly ? 'on' : undefined }).join(
        ',',
      ),
    );
  }

  for (const n of spec.netdevs) {
    const handed = transfer.has(n.id);
    if (n.type === 'user') {
      args.push('-netdev', opts('user', { id: n.id }));
    } else if (n.type === 'vhost-user') {
      args.push('-chardev', opts('socket', { id: `chr-${n.id}`, path: n.chardevPath }));
      args.push('-netdev', opts('vhost-user', { id: n.id, chardev: `chr-${n.id}` }));
    } else if (handed && dialect === 'local') {
      // The fd arrives in the migration stream: no ifname, no vnet_hdr.
      args.push('-netdev', opts('tap', { id: n.id, script: 'no', downscript: 'no', [permit]: 'on' }));
    } else if (dst?.handover?.tapFds[n.id] !== undefined) {
      // The source's own queue fds, inherited at spawn. With fd(s)= QEMU refuses ifname, script and
      // vnet_hdr: it asks the fd itself.
      const fds = dst.handover.tapFds[n.id]!;
      const vhost = n.vhost === undefined ? undefined : onOff(n.vhost);
      args.push(
        '-netdev',
        opts('tap', { id: n.id, ...(fds.length > 1 ? { fds: fds.join(':') } : { fd: String(fds[0]) }), vhost }),
      );
    } else {
      args.push(
        '-netdev',
        opts('tap', {
          id: n.id,
          ifname: dst?.recreatedTaps?.[n.id] ?? n.ifname,
          script: 'no',
          downscript: 'no',
          vnet_hdr: n.vnetHdr === undefined ? undefined : onOff(n.vnetHdr),
          queues: n.queues === undefined || n.queues === 1 ? undefined : String(n.queues),
          vhost: n.vhost === undefined ? undefined : onOff(n.vhost),
          [permit]: dialect === 'local' ? 'on' : undefined,
        }),
      );
    }
  }

  const isHostBackend = (id: string) => spec.netdevs.some((n) => n.id === id && n.type !== 'user');
  for (const d of spec.devices) {
    // A source marks every network device for transfer (the property defaults to off before 10.2); a
    // destination only those whose backend it receives.
    const bt =
      dialect === 'backend-transfer-bool' &&
      d.netdev !== undefined &&
      (dst ? transfer.has(d.netdev) : isHostBackend(d.netdev));
    // A virtio-net device on a multiqueue tap: mq on, a vector per queue each way plus config and control.
    const queues = spec.netdevs.find((n) => n.id === d.netdev)?.queues ?? 1;
    const mq = queues > 1 && d.driver.startsWith('virtio-net');
    args.push(
      '-device',
      opts(d.driver, {
        id: d.id,
        netdev: d.netdev,
        drive: d.drive,
        mac: d.mac,
        mq: mq ? 'on' : undefined,
        vectors: mq ? String(2 * queues + 2) : undefined,
        'backend-transfer': bt ? 'on' : undefined,
      }),
    );
  }

  if (dst) {
    if (dst.incoming.kind === 'defer') {
      args.push('-incoming', 'defer');
    } else {
      checkSocketArg(dst.incoming.mainSocket, 'incoming.mainSocket');
      checkSocketArg(dst.incoming.cprSocket, 'incoming.cprSocket');
      args.push('-incoming', JSON.stringify({ 'channel-type': 'main', addr: unixAddr(dst.incoming.mainSocket) }));
      args.push('-incoming', JSON.stringify({ 'channel-type': 'cpr', addr: unixAddr(dst.incoming.cprSocket) }));
    }
    args.push('-S');
  }
  return args;
}
