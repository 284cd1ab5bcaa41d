// Command line of the simulator: `--sim-*` options first, then the QEMU subset the product uses, parsed
// the way QEMU parses it (QemuOpts `key=value,...` with `,,` escaping an implied first key, legacy chardev
// syntax for -qmp, JSON or URI for -incoming). Option values of -netdev and -object are checked against
// the served schema (so `x-permit-local-migration` exists only where the dialect has it), with QEMU's texts.
// Cross-references (a NIC's netdev, the machine's memory backend) are checked when the VM is built (vm.ts).
import { existsSync } from 'node:fs';
import { BackendKind, compareVersions, DialectSpec, DIALECTS, dialectByName } from './dialects';
import { parseFaultSpec, FaultSpec, SLOW_REPLY_MS } from './faults';
import { baseSchemaFor, servedSchema, ServedSchema } from './schema';

export const PROGNAME = 'qemu-system-x86_64';

/** A startup error: printed as `qemu-system-x86_64: <message>`, exit status 1. */
export class CommandLineError extends Error {}

/** An error line as QEMU prints it; with -msg timestamp=on prefixed by the UTC time in microseconds. */
export function errorLine(message: string, timestamp: boolean): string {
  let prefix = '';
  if (timestamp) {
    const t = performance.timeOrigin + performance.now();
    const us = String(Math.floor((t * 1000) % 1e6)).padStart(6, '0');
    prefix = `${new Date(t).toISOString().slice(0, 19)}.${us}Z `;
  }
  return `${prefix}${PROGNAME}: ${message}\n`;
}

/** Whether an argv asks for -msg timestamp=on (looked up before parsing, for parse errors too). */
export function wantsMsgTimestamp(argv: string[]): boolean {
  return argv.some((a, i) => (a === '-msg' || a === '--msg') && /(^|,)timestamp=on(,|$)/.test(argv[i + 1] ?? ''));
}

export interface SimOptions {
  dialect: DialectSpec;
  /**
   * Backend kinds this build reports (the list dialect's support query) and hands over or takes (the
   * selection): the dialect's own, or fewer with --sim-transferable-kinds. An incoming process still defers
   * opening every backend of its dialect's kinds, as it learns only from the stream which ones arrive.
   */
  transferable: BackendKind[];
  /** Reported by query-version and the greeting, e.g. 10.1.50. */
  version: string;
  stateDir?: string;
  faults: FaultSpec[];
  cpr: boolean;
  ramRateMbps: number;
  /** Reply delay of a `slow` fault on a command phase. */
  slowMs: number;
}

export type OptValue = string | number | boolean;

export interface NetdevConfig {
  id: string;
  type: string;
  /** Typed per the schema's Netdev variant (without id and type). */
  opts: Record<string, unknown>;
  source?: string;
}

export interface ObjectConfig {
  qomType: string;
  id: string;
  props: Record<string, unknown>;
  source?: string;
}

export interface ChardevConfig {
  id: string;
  backend: string;
  path?: string;
  server: boolean;
  wait: boolean;
  source?: string;
}

export interface DeviceConfig {
  driver: string;
  id?: string;
  props: Record<string, string | boolean | number>;
  source?: string;
}

export interface DriveConfig {
  id?: string;
  file?: string;
  format?: string;
  if: string;
  source?: string;
}

export interface MonitorConfig {
  path: string;
  /** wait=on: QEMU blocks startup until a client connects (accepted, not modelled). */
  wait: boolean;
}

export type MigrationAddress = { transport: 'socket'; type: 'unix'; path: string };
export type IncomingSpec =
  { kind: 'defer' } | { kind: 'main'; addr: MigrationAddress } | { kind: 'cpr'; addr: MigrationAddress };

export interface VmConfig {
  machine: { requested: string; type: string; props: Record<string, string | boolean> };
  memBytes: number;
  memExplicit: boolean;
  smp: number;
  name?: string;
  /** The accelerator in use: the first of the -accel options available here (kvm needs /dev/kvm). */
  accel: string;
  /** -msg timestamp=on: error lines start with an ISO 8601 UTC timestamp. */
  msgTimestamp: boolean;
  objects: ObjectConfig[];
  netdevs: NetdevConfig[];
  chardevs: ChardevConfig[];
  devices: DeviceConfig[];
  drives: DriveConfig[];
  monitors: MonitorConfig[];
  startPaused: boolean;
  incoming: IncomingSpec[];
  daemonize: boolean;
  pidfile?: string;
  dataDirs: string[];
}

export interface ParsedArgs {
  sim: SimOptions;
  vm: VmConfig;
  schema: ServedSchema;
  /** `-machine <type>,help`: text QEMU prints on stdout before exiting 0. */
  help?: string;
}

// ---------------------------------------------------------------------------------------------------------
// QemuOpts

export interface Opts {
  /** Keys in order, values as written; a bare `key` means `key=on`. */
  entries: Array<[string, string]>;
}

/** Split `a=1,b=x,,y,flag` (`,,` is a literal comma). The first bare word is `implied` when given. */
export function parseOpts(text: string, implied?: string): Opts {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === ',') {
      if (text[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      parts.push(cur);
      cur = '';
    } else cur += text[i];
  }
  parts.push(cur);
  const entries: Array<[string, string]> = [];
  parts.forEach((p, i) => {
    const eq = p.indexOf('=');
    if (eq < 0) {
      if (i === 0 && implied) entries.push([implied, p]);
      else if (p !== '') entries.push([p, 'on']);
    } else entries.push([p.slice(0, eq), p.slice(eq + 1)]);
  });
  return { entries };
}

export function optsToRecord(o: Opts): Record<string, string> {
  const r: Record<string, string> = {};
  for (const [k, v] of o.entries) r[k] = v;
  return r;
}

const SIZE_SUFFIX: Record<string, number> = {
  k: 2 ** 10,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
  P: 2 ** 50,
  E: 2 ** 60,
};

/** `64`, `64M`, `1G`, `0x100`; `defaultUnit` applies to bare numbers (MiB for -m). */
export function parseSize(text: string, defaultUnit = 1): number | undefined {
  const m = /^(0x[0-9a-fA-F]+|\d+(?:\.\d+)?)([kKMGTPE]?)[bB]?$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ? SIZE_SUFFIX[m[2]] : defaultUnit;
  return Math.round(n * unit);
}

/**
 * Turn string option values into the schema's member types of `typeName` (a flat union's variant is
 * followed through `tag`). Returns the typed record, or QEMU's error text.
 */
export function coerceOpts(
  schema: ServedSchema,
  typeName: string,
  values: Record<string, string>,
): { ok: Record<string, unknown> } | { error: string } {
  const out: Record<string, unknown> = {};
  const known = new Set<string>();
  const visit = (type: string): string | undefined => {
    const t = schema.get(type);
    for (const m of schema.members(type)) {
      known.add(m.name);
      const raw = values[m.name];
      if (raw === undefined) {
        if (!('default' in m)) return `Parameter '${m.name}' is missing`;
        continue;
      }
      const v = coerceScalar(schema, m.type, m.name, raw);
      if (typeof v === 'object' && v !== null && 'error' in v) return (v as { error: string }).error;
      out[m.name] = v;
    }
    if (t?.tag !== undefined) {
      const variant = t.variants?.find((x) => x.case === values[t.tag as string]);
      if (variant) return visit(variant.type);
    }
    return undefined;
  };
  const err = visit(typeName);
  if (err) return { error: err };
  for (const k of Object.keys(values)) if (!known.has(k)) return { error: `Invalid parameter '${k}'` };
  return { ok: out };
}

function coerceScalar(schema: ServedSchema, type: string, name: string, raw: string): unknown {
  const t = schema.get(type);
  const kind = t?.['meta-type'];
  if (type === 'bool') {
    if (raw === 'on' || raw === 'yes' || raw === 'true') return true;
    if (raw === 'off' || raw === 'no' || raw === 'false') return false;
    return { error: `Parameter '${name}' expects 'on' or 'off'` };
  }
  if (type === 'int' || type === 'number') {
    if (/size/.test(name)) {
      const n = parseSize(raw);
      return n === undefined ? { error: `Parameter '${name}' expects a size value` } : n;
    }
    const n = Number(raw);
    return Number.isFinite(n) && raw.trim() !== '' ? n : { error: `Parameter '${name}' expects a number` };
  }
  if (kind === 'enum') {
    return (t?.values ?? []).includes(raw) ? raw : { error: `Parameter '${name}' does not accept value '${raw}'` };
  }
  return raw;
}

// ---------------------------------------------------------------------------------------------------------
// The command line

const FLAG_OPTIONS = new Set([
  '-S',
  '-daemonize',
  '-nodefaults',
  '-no-user-config',
  '-nographic',
  '-enable-kvm',
  '-no-shutdown',
]);
const VALUE_OPTIONS = new Set([
  '-machine',
  '-M',
  '-m',
  '-object',
  '-netdev',
  '-chardev',
  '-device',
  '-drive',
  '-name',
  '-qmp',
  '-mon',
  '-incoming',
  '-display',
  '-L',
  '-smp',
  '-pidfile',
  '-accel',
  '-msg',
  '-cpu',
  '-vga',
  '-serial',
  '-boot',
]);

function parseSimOptions(argv: string[]): { sim: SimOptions; rest: string[] } {
  const sim: SimOptions = {
    dialect: DIALECTS.none,
    transferable: [],
    version: '10.1.50',
    faults: [],
    cpr: false,
    ramRateMbps: 2000,
    slowMs: SLOW_REPLY_MS,
  };
  let cprSet: boolean | undefined;
  let kinds: { value: string; list: string[] } | undefined;
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('--sim-'); i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const takeValue = (): string => {
      if (eq >= 0) return arg.slice(eq + 1);
      if (i + 1 >= argv.length) throw new CommandLineError(`${name}: requires an argument`);
      return argv[++i];
    };
    switch (name) {
      case '--sim-dialect': {
        const v = takeValue();
        const d = dialectByName(v);
        if (!d)
          throw new CommandLineError(`${name} ${v}: unknown dialect (expected ${Object.keys(DIALECTS).join(', ')})`);
        sim.dialect = d;
        break;
      }
      case '--sim-version': {
        const v = takeValue();
        if (!/^\d+\.\d+\.\d+$/.test(v)) throw new CommandLineError(`${name} ${v}: expected MAJOR.MINOR.MICRO`);
        sim.version = v;
        break;
      }
      case '--sim-state-dir':
        sim.stateDir = takeValue();
        break;
      case '--sim-fault': {
        const v = takeValue();
        const f = parseFaultSpec(v);
        if (typeof f === 'string') throw new CommandLineError(`${name} ${v}: ${f}`);
        sim.faults.push(f);
        break;
      }
      case '--sim-cpr':
        cprSet = eq >= 0 ? arg.slice(eq + 1) !== 'off' : true;
        break;
      case '--sim-no-cpr':
        cprSet = false;
        break;
      case '--sim-ram-rate-mbps': {
        const v = takeValue();
        const n = Number(v);
        if (!(n > 0)) throw new CommandLineError(`${name} ${v}: expected a positive number`);
        sim.ramRateMbps = n;
        break;
      }
      case '--sim-transferable-kinds': {
        const v = takeValue();
        kinds = { value: v, list: v === '' ? [] : v.split(',') };
        break;
      }
      case '--sim-slow-ms': {
        const v = takeValue();
        const n = Number(v);
        if (!(n >= 0)) throw new CommandLineError(`${name} ${v}: expected a number of milliseconds`);
        sim.slowMs = n;
        break;
      }
      default:
        throw new CommandLineError(`${arg}: invalid option`);
    }
  }
  sim.transferable = [...sim.dialect.transferable];
  if (kinds) {
    const foreign = kinds.list.filter((k) => !(sim.dialect.transferable as string[]).includes(k));
    if (foreign.length > 0 || new Set(kinds.list).size !== kinds.list.length) {
      const own = sim.dialect.transferable.join(', ') || 'none';
      throw new CommandLineError(
        `--sim-transferable-kinds ${kinds.value}: expected distinct kinds of the ${sim.dialect.name} dialect (${own}), comma-separated`,
      );
    }
    sim.transferable = kinds.list as BackendKind[];
  }
  sim.cpr = cprSet ?? compareVersions(sim.version, '10.0') >= 0;
  if (sim.cpr && compareVersions(sim.version, '10.0') < 0) {
    throw new CommandLineError(`--sim-cpr: cpr-transfer needs version 10.0 or later (got ${sim.version})`);
  }
  return { sim, rest: argv.slice(i) };
}

/** `pc` → `pc-i440fx-<major.minor>`; versioned types up to the simulated version. */
export function resolveMachineType(requested: string, version: string): string | undefined {
  const [major, minor] = version.split('.');
  const current = `${major}.${minor}`;
  if (requested === 'pc') return `pc-i440fx-${current}`;
  if (requested === 'q35') return `pc-q35-${current}`;
  if (requested === 'none') return 'none';
  const m = /^pc-(i440fx|q35)-(\d+\.\d+)$/.exec(requested);
  if (!m) return undefined;
  if (compareVersions(m[2], '2.0') < 0 || compareVersions(m[2], current) > 0) return undefined;
  return requested;
}

/** Machine properties the simulator knows: name -> [QOM type, description]. */
const MACHINE_PROP_INFO: Record<string, [string, string]> = {
  acpi: ['OnOffAuto', 'Enable ACPI'],
  'aux-ram-share': ['bool', ''],
  'dump-guest-core': ['bool', 'Include guest memory in a core dump'],
  graphics: ['bool', 'Set on/off to enable/disable graphics emulation'],
  hpet: ['bool', 'Enable/disable high precision event timer emulation'],
  'kernel-irqchip': ['OnOffSplit', 'Configure KVM in-kernel irqchip'],
  'mem-merge': ['bool', 'Enable/disable memory merge support'],
  'memory-backend': ['link<memory-backend>', 'Set RAM backendValid value is ID of hostmem based backend'],
  smm: ['OnOffAuto', 'Enable SMM'],
  usb: ['bool', 'Set on/off to enable/disable usb'],
  vmport: ['OnOffAuto', 'Enable vmport (pc & q35)'],
  accel: ['string', 'Accelerator list'],
};
const MACHINE_PROPS = new Set(Object.keys(MACHINE_PROP_INFO));

/** What `-machine <type>,help` prints (QEMU's layout: `  name=<type>`, padded to 24, ` - description`). */
function machineHelpText(type: string, version: string): string {
  const lines = Object.entries(MACHINE_PROP_INFO)
    .filter(([k]) => k !== 'accel' && (k !== 'aux-ram-share' || compareVersions(version, '10.0') >= 0))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, [t, desc]]) => {
      const head = `  ${k}=<${t}>`;
      return desc ? `${head.padEnd(24)} - ${desc}` : head;
    });
  return `${type}-machine options:\n${lines.join('\n')}\n`;
}

const DRIVE_KEYS = new Set([
  'file',
  'format',
  'if',
  'id',
  'index',
  'media',
  'cache',
  'readonly',
  'snapshot',
  'aio',
  'discard',
  'node-name',
  'werror',
  'rerror',
]);
const CHARDEV_SOCKET_KEYS = new Set([
  'id',
  'path',
  'server',
  'wait',
  'reconnect',
  'reconnect-ms',
  'logfile',
  'abstract',
  'tight',
]);

/** Parse a JSON or URI migration address as -incoming takes it; a string is QEMU's error text. */
export function parseIncoming(text: string): IncomingSpec | string {
  if (text === 'defer') return { kind: 'defer' };
  if (text.trim().startsWith('{')) {
    let ch: { 'channel-type'?: string; addr?: Record<string, unknown> };
    try {
      ch = JSON.parse(text) as typeof ch;
    } catch {
      return 'JSON parse error';
    }
    const addr = addressFromJson(ch.addr);
    if (typeof addr === 'string') return addr;
    if (ch['channel-type'] === 'cpr') return { kind: 'cpr', addr };
    if (ch['channel-type'] === 'main' || ch['channel-type'] === undefined) return { kind: 'main', addr };
    return `Parameter 'channel-type' does not accept value '${ch['channel-type']}'`;
  }
  const addr = addressFromUri(text);
  return typeof addr === 'string' ? addr : { kind: 'main', addr };
}

/** `unix:/path` → address; other transports are QEMU's but not simulated. Error text on failure. */
export function addressFromUri(uri: string): MigrationAddress | string {
  if (uri.startsWith('unix:')) return { transport: 'socket', type: 'unix', path: uri.slice(5) };
  const proto = /^([a-z]+):/.exec(uri)?.[1];
  if (proto && ['tcp', 'exec', 'fd', 'file', 'rdma', 'vsock'].includes(proto)) {
    return `migration transport '${proto}' is not simulated (only unix:)`;
  }
  return `unknown migration protocol: ${uri}`;
}

export function addressFromJson(addr: unknown): MigrationAddress | string {
  const a = (addr ?? {}) as Record<string, unknown>;
  if (a.transport !== 'socket')
    return `migration transport '${String(a.transport)}' is not simulated (only socket/unix)`;
  if (a.type !== 'unix') return `socket type '${String(a.type)}' is not simulated (only unix)`;
  if (typeof a.path !== 'string') return "Parameter 'path' is missing";
  return { transport: 'socket', type: 'unix', path: a.path };
}

/** Parse the whole argv (without node and script). Throws CommandLineError with QEMU's text. */
export function parseArgs(argv: string[]): ParsedArgs {
  const { sim, rest } = parseSimOptions(argv);
  const schema = servedSchema({ base: baseSchemaFor(sim.version), dialect: sim.dialect, cpr: sim.cpr });
  const vm: VmConfig = {
    machine: { requested: 'pc', type: '', props: {} },
    memBytes: 128 * 2 ** 20,
    memExplicit: false,
    smp: 1,
    accel: 'tcg',
    msgTimestamp: false,
    objects: [],
    netdevs: [],
    chardevs: [],
    devices: [],
    drives: [],
    monitors: [],
    startPaused: false,
    incoming: [],
    daemonize: false,
    dataDirs: [],
  };
  const chardevSockets = new Map<string, ChardevConfig>();
  const accels: string[] = [];
  let machineHelp = false;
  const mons: Array<{ chardev: string; source: string }> = [];

  for (let i = 0; i < rest.length; i++) {
    const opt = rest[i];
    const norm = opt.startsWith('--') ? opt.slice(1) : opt;
    if (norm.startsWith('--sim-') || opt.startsWith('--sim-')) {
      throw new CommandLineError(`${opt}: simulator options must come before QEMU options`);
    }
    if (FLAG_OPTIONS.has(norm)) {
      if (norm === '-S') vm.startPaused = true;
      else if (norm === '-daemonize') vm.daemonize = true;
      else if (norm === '-enable-kvm') accels.push('kvm');
      continue;
    }
    if (!VALUE_OPTIONS.has(norm)) throw new CommandLineError(`${opt}: invalid option`);
    if (i + 1 >= rest.length) throw new CommandLineError(`${opt}: requires an argument`);
    const val = rest[++i];
    const source = `${opt} ${val}`;
    const fail = (msg: string): never => {
      throw new CommandLineError(`${source}: ${msg}`);
    };
    switch (norm) {
      case '-machine':
      case '-M': {
        const o = optsToRecord(parseOpts(val, 'type'));
        if (o.type !== undefined) vm.machine.requested = o.type;
        for (const [k, v] of Object.entries(o)) {
          if (k === 'type') continue;
          if (k === 'help') machineHelp = true;
          else vm.machine.props[k] = v;
        }
        break;
      }
      case '-m': {
        const o = optsToRecord(parseOpts(val, 'size'));
        for (const k of Object.keys(o)) if (!['size', 'slots', 'maxmem'].includes(k)) fail(`Invalid parameter '${k}'`);
        const n = parseSize(o.size ?? '', 2 ** 20);
        if (n === undefined) {
          fail(
            "Parameter 'size' expects a non-negative number below 2^64\n" +
              'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.',
          );
        }
        vm.memBytes = n as number;
        vm.memExplicit = true;
        break;
      }
      case '-object': {
        const raw = optsToRecord(parseOpts(val, 'qom-type'));
        const r = coerceOpts(schema, schema.objectUnion(), raw);
        if ('error' in r) fail(r.error);
        else {
          const { 'qom-type': qomType, id, ...props } = r.ok;
          vm.objects.push({ qomType: String(qomType), id: String(id), props, source });
        }
        break;
      }
      case '-netdev': {
        const raw = optsToRecord(parseOpts(val, 'type'));
        const r = coerceOpts(schema, schema.netdevUnion(), raw);
        if ('error' in r) fail(r.error);
        else {
          const { type, id, ...opts } = r.ok;
          vm.netdevs.push({ id: String(id), type: String(type), opts, source });
        }
        break;
      }
      case '-chardev': {
        const o = optsToRecord(parseOpts(val, 'backend'));
        if (o.backend !== 'socket') fail(`'${o.backend}' is not a valid char driver name`);
        for (const k of Object.keys(o))
          if (k !== 'backend' && !CHARDEV_SOCKET_KEYS.has(k)) fail(`Invalid parameter '${k}'`);
        if (!o.id) fail("Parameter 'id' is missing");
        if (!o.path) fail('chardev: socket: no local address specified');
        const c: ChardevConfig = {
          id: o.id,
          backend: 'socket',
          path: o.path,
          server: o.server === 'on',
          wait: o.wait !== 'off',
          source,
        };
        vm.chardevs.push(c);
        chardevSockets.set(c.id, c);
        break;
      }
      case '-device': {
        const o = optsToRecord(parseOpts(val, 'driver'));
        const { driver, id, ...props } = o;
        if (driver === undefined) fail("Parameter 'driver' is missing");
        vm.devices.push({ driver, ...(id !== undefined ? { id } : {}), props, source });
        break;
      }
      case '-drive': {
        const o = optsToRecord(parseOpts(val));
        for (const k of Object.keys(o)) if (!DRIVE_KEYS.has(k)) fail(`Invalid parameter '${k}'`);
        vm.drives.push({ id: o.id, file: o.file, format: o.format, if: o.if ?? 'ide', source });
        break;
      }
      case '-name': {
        const o = optsToRecord(parseOpts(val, 'guest'));
        for (const k of Object.keys(o))
          if (!['guest', 'process', 'debug-threads'].includes(k)) fail(`Invalid parameter '${k}'`);
        vm.name = o.guest;
        break;
      }
      case '-qmp': {
        // Legacy chardev syntax: unix:PATH[,server=on|server][,wait=off|nowait]
        const o = parseOpts(val, 'addr');
        const rec = optsToRecord(o);
        if (!rec.addr?.startsWith('unix:')) fail(`parse error: ${val}`);
        for (const k of Object.keys(rec)) {
          if (!['addr', 'server', 'wait', 'nowait'].includes(k)) {
            throw new CommandLineError(
              `${source}: Invalid parameter '${k}'\n${PROGNAME}: ${source}: parse error: ${val}`,
            );
          }
        }
        const server = rec.server === 'on' || rec.server === 'true';
        if (!server) fail('the simulator serves QMP on a listening socket only (server=on)');
        vm.monitors.push({ path: rec.addr.slice(5), wait: rec.nowait === undefined && rec.wait !== 'off' });
        break;
      }
      case '-mon': {
        const o = optsToRecord(parseOpts(val, 'chardev'));
        if (o.mode !== 'control') fail('the simulator models QMP monitors only (mode=control)');
        mons.push({ chardev: o.chardev, source });
        break;
      }
      case '-incoming': {
        const inc = parseIncoming(val);
        if (typeof inc === 'string') fail(inc);
        else vm.incoming.push(inc);
        break;
      }
      case '-display': {
        const o = optsToRecord(parseOpts(val, 'type'));
        if (!['none', 'egl-headless', 'vnc', 'gtk', 'sdl', 'curses'].includes(o.type))
          fail(`Parameter 'type' does not accept value '${o.type}'`);
        break;
      }
      case '-L':
        vm.dataDirs.push(val);
        break;
      case '-smp': {
        const o = optsToRecord(parseOpts(val, 'cpus'));
        const n = Number(o.cpus ?? '1');
        if (!Number.isInteger(n) || n < 1) throw new CommandLineError("Parameter 'smp.cpus' expects integer");
        vm.smp = n;
        break;
      }
      case '-pidfile':
        vm.pidfile = val;
        break;
      case '-accel': {
        const o = optsToRecord(parseOpts(val, 'accel'));
        if (!['tcg', 'kvm', 'qtest'].includes(o.accel)) fail(`invalid accelerator ${o.accel}`);
        accels.push(o.accel);
        break;
      }
      case '-msg': {
        const o = optsToRecord(parseOpts(val));
        for (const k of Object.keys(o)) if (!['timestamp', 'guest-name'].includes(k)) fail(`Invalid parameter '${k}'`);
        vm.msgTimestamp = o.timestamp === 'on';
        break;
      }
      default:
        // -cpu, -vga, -serial, -boot: accepted and ignored.
        break;
    }
  }

  for (const m of mons) {
    const c = chardevSockets.get(m.chardev);
    if (!c) throw new CommandLineError(`${m.source}: chardev "${m.chardev}" not found`);
    if (!c.server)
      throw new CommandLineError(`${m.source}: the simulator serves QMP on a listening socket only (server=on)`);
    vm.monitors.push({ path: c.path as string, wait: c.wait });
    c.backend = 'monitor';
  }

  if (accels.length > 0) {
    const usable = accels.find((a) => a !== 'kvm' || existsSync('/dev/kvm'));
    if (!usable)
      throw new CommandLineError('-accel kvm: Could not access KVM kernel module: No such file or directory');
    vm.accel = usable;
  }
  const type = resolveMachineType(vm.machine.requested, sim.version);
  if (machineHelp && type) return { sim, vm, schema, help: machineHelpText(type, sim.version) };
  if (!type)
    throw new CommandLineError(
      `unsupported machine type: "${vm.machine.requested}"\nUse -machine help to list supported machines`,
    );
  vm.machine.type = type;
  const qomMachine = `${type}-machine`;
  for (const [k, v] of Object.entries(vm.machine.props)) {
    const exists = MACHINE_PROPS.has(k) && (k !== 'aux-ram-share' || compareVersions(sim.version, '10.0') >= 0);
    if (!exists) throw new CommandLineError(`Property '${qomMachine}.${k}' not found`);
    if (k === 'aux-ram-share') {
      if (!['on', 'off', 'true', 'false', 'yes', 'no'].includes(String(v)))
        throw new CommandLineError(`Parameter 'aux-ram-share' expects 'on' or 'off'`);
      vm.machine.props[k] = v === 'on' || v === 'true' || v === 'yes';
    }
  }
  if (
    vm.incoming.filter((x) => x.kind === 'cpr').length > 1 ||
    vm.incoming.filter((x) => x.kind !== 'cpr').length > 1
  ) {
    throw new CommandLineError('-incoming: only one main and one cpr channel may be given');
  }
  if (vm.incoming.some((x) => x.kind === 'cpr') && !sim.cpr) {
    throw new CommandLineError("-incoming: Parameter 'channel-type' does not accept value 'cpr'");
  }
  return { sim, vm, schema };
}
