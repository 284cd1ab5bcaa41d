// One simulated QEMU: machine, devices and backends, run state, the guest (a dword at 0x7e00 that rises
// while the VM runs), QMP monitors, migration. Usable in-process (many per Node process: no timers while
// idle, the guest counter is computed from the clock) or as a process (main.ts).
import { existsSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import {
  CommandLineError,
  DeviceConfig,
  errorLine,
  NetdevConfig,
  ObjectConfig,
  parseArgs,
  SimOptions,
  VmConfig,
} from './args';
import { executeCommand } from './commands';
import { BackendKind, compareVersions } from './dialects';
import { DEVICE_MODELS, DeviceModel, defaultMac, parseBool, pciSlot } from './devices';
import { FaultPhase, FaultRegistry } from './faults';
import { Ledger, markInstanceLive, Owner } from './ledger';
import { CprIncoming, IncomingMigration, OutgoingMigration } from './migration';
import { QmpMonitor, QmpResult } from './qmp-server';
import { SchemaChecker, ServedSchema } from './schema';

export type RunState = 'prelaunch' | 'inmigrate' | 'running' | 'paused' | 'postmigrate' | 'finish-migrate' | 'shutdown';

/** Increments of the guest's counter per millisecond of running (TCG runs the loop about this fast). */
export const COUNTER_PER_MS = 1000;
/** Address of the counter dword in guest memory (the boot sector's loop increments it). */
export const COUNTER_ADDR = 0x7e00;

export interface Netdev {
  id: string;
  type: string;
  opts: Record<string, unknown>;
  /** Host backend: state `open` (owned), `deferred` (incoming: from the stream or opened at the end), `gone`. */
  backend?: { kind: BackendKind; name: string; state: 'open' | 'deferred' | 'gone'; generated: boolean };
  usedBy?: string;
}

export interface Device {
  driver: string;
  model: DeviceModel;
  id?: string;
  /** Canonical QOM path, /machine/peripheral/<id> or /machine/peripheral-anon/device[N]. */
  path: string;
  props: Record<string, string | boolean | number>;
  netdev?: string;
  slot?: number;
  mac?: string;
  hotplugged: boolean;
}

export interface MemoryObject {
  id: string;
  qomType: string;
  props: Record<string, unknown>;
  implicit: boolean;
}

export interface SimulatedQemuOptions {
  /** Where QEMU's stderr lines go (default: process.stderr). */
  stderr?: (text: string) => void;
  /** Running as its own process: a crash is a real SIGKILL of this process. */
  processMode?: boolean;
}

let instanceSeq = 0;

export class SimulatedQemu {
  readonly sim: SimOptions;
  readonly cfg: VmConfig;
  readonly schema: ServedSchema;
  readonly checker: SchemaChecker;
  readonly owner: Owner;
  readonly ledger: Ledger;
  readonly faults: FaultRegistry;
  readonly machineType: string;
  readonly memBytes: number;
  /** Resolves with the exit status once the simulated process has ended (crash: 137). */
  readonly exited: Promise<number>;

  runState: RunState;
  /** Whether the guest starts running when an incoming migration completes (-S clears it). */
  autostart: boolean;
  hung = false;
  dead = false;
  exitCode?: number;

  readonly netdevs = new Map<string, Netdev>();
  readonly devices: Device[] = [];
  readonly objects = new Map<string, MemoryObject>();
  readonly chardevs = new Map<string, { id: string; path?: string; server: boolean }>();
  readonly drives: Array<{ id?: string; file?: string }> = [];
  memoryBackend: string;
  monitors: QmpMonitor[] = [];

  readonly params: Record<string, unknown>;
  readonly caps = new Map<string, boolean>();
  /** Which parameters were set explicitly (max-bandwidth only limits the rate then). */
  readonly paramsSet = new Set<string>();
  outgoing?: OutgoingMigration;
  incoming?: IncomingMigration;
  cprIncoming?: CprIncoming;

  private counterBase = 0;
  private runningSince?: number;
  private anonSeq = 0;
  private nicSeq = 0;
  private pciSeq = 0;
  private tapSeq = 0;
  private resolveExit!: (code: number) => void;
  private readonly stderrSink: (text: string) => void;
  private readonly processMode: boolean;
  private faultWaiters: Array<() => void> = [];

  constructor(argv: string[], opts: SimulatedQemuOptions = {}) {
    const parsed = parseArgs(argv);
    this.sim = parsed.sim;
    this.cfg = parsed.vm;
    this.schema = parsed.schema;
    this.checker = new SchemaChecker(this.schema);
    this.stderrSink = opts.stderr ?? ((t) => process.stderr.write(t));
    this.processMode = opts.processMode ?? false;
    const instance = this.processMode ? String(process.pid) : `${process.pid}-${++instanceSeq}`;
    this.owner = { pid: process.pid, instance, ...(this.cfg.name ? { vm: this.cfg.name } : {}) };
    this.ledger = new Ledger(this.sim.stateDir, this.owner);
    this.faults = new FaultRegistry(this.sim.faults);
    this.machineType = this.cfg.machine.type;
    this.exited = new Promise((r) => (this.resolveExit = r));
    this.runState = this.cfg.incoming.length > 0 ? 'inmigrate' : this.cfg.startPaused ? 'prelaunch' : 'running';
    this.autostart = !this.cfg.startPaused;
    this.params = defaultMigrationParameters(this.schema, this.sim);
    for (const c of this.schema.migrationCapabilities()) this.caps.set(c, false);

    // Build the machine in command-line order of kinds, as QEMU creates them (objects, chardevs, netdevs,
    // machine memory, drives, devices). Backends are opened in start().
    for (const o of this.cfg.objects) this.throwing(o.source, this.addObject(o));
    for (const c of this.cfg.chardevs) {
      if (c.backend === 'monitor') continue;
      if (!c.server && c.path && !existsSync(c.path)) {
        throw new CommandLineError(`${c.source}: Failed to connect to '${c.path}': No such file or directory`);
      }
      this.chardevs.set(c.id, { id: c.id, path: c.path, server: c.server });
    }
    for (const n of this.cfg.netdevs) this.throwing(n.source, this.addNetdev(n, false));
    this.memoryBackend = this.setupMemory();
    this.memBytes = Number(this.objects.get(this.memoryBackend)?.props.size ?? this.cfg.memBytes);
    for (const d of this.cfg.drives) {
      if (d.file !== undefined && !existsSync(d.file)) {
        throw new CommandLineError(`${d.source}: Could not open '${d.file}': No such file or directory`);
      }
      this.drives.push({ id: d.id, file: d.file });
    }
    for (const d of this.cfg.devices) this.throwing(d.source, this.addDevice(d, false));
  }

  private throwing(source: string | undefined, err: string | undefined): void {
    if (err !== undefined) throw new CommandLineError(source ? `${source}: ${err}` : err);
  }

  get isIncoming(): boolean {
    return this.cfg.incoming.length > 0;
  }

  /** Bring the process up: open backends, listen on the monitors (after the cpr channel, for cpr-transfer). */
  async start(): Promise<void> {
    markInstanceLive(this.owner.instance, true);
    try {
      for (const n of this.netdevs.values()) {
        const e = this.openBackend(n);
        if (e)
          throw new CommandLineError(
            `${this.cfg.netdevs.find((x) => x.id === n.id)?.source ?? `-netdev id=${n.id}`}: ${e}`,
          );
      }
      if (this.cfg.pidfile) writeFileSync(this.cfg.pidfile, `${process.pid}\n`);
      this.ledger.log('start', {
        version: this.sim.version,
        dialect: this.sim.dialect.name,
        machine: this.machineType,
        status: this.runState,
      });
      if (this.runState === 'running') this.setRunState('running');
      const cpr = this.cfg.incoming.find((x) => x.kind === 'cpr');
      if (cpr) {
        // cpr-transfer: QEMU reads the cpr state before it creates its monitors.
        this.cprIncoming = new CprIncoming(this, cpr.addr.path);
        await this.cprIncoming.listen();
        return;
      }
      await this.startMonitorsAndIncoming();
    } catch (e) {
      this.teardown();
      markInstanceLive(this.owner.instance, false);
      throw e instanceof CommandLineError ? e : new CommandLineError((e as Error).message);
    }
  }

  /** Second half of start(); for cpr-transfer, once the cpr state has arrived. */
  async startMonitorsAndIncoming(): Promise<void> {
    for (const m of this.cfg.monitors) {
      const mon = new QmpMonitor(m.path, {
        greeting: () => this.greeting(),
        execute: (name, args) => this.execute(name, args),
        isHung: () => this.hung,
      });
      try {
        await mon.listen();
      } catch (e) {
        throw new CommandLineError(`-qmp unix:${m.path},server=on,wait=off: ${(e as Error).message}`);
      }
      this.monitors.push(mon);
    }
    const main = this.cfg.incoming.find((x) => x.kind === 'main');
    if (main && main.kind === 'main') {
      this.incoming = new IncomingMigration(this, main.addr, true);
      await this.incoming.listen();
    }
  }

  greeting(): Record<string, unknown> {
    const [major, minor, micro] = this.sim.version.split('.').map(Number);
    return {
      QMP: { version: { qemu: { micro, minor, major }, package: this.packageString() }, capabilities: ['oob'] },
    };
  }

  packageString(): string {
    return `qemu-fleet-upgrade simulator (dialect ${this.sim.dialect.name})`;
  }

  execute(name: string, args: Record<string, unknown>): Promise<QmpResult> | QmpResult {
    return executeCommand(this, name, args);
  }

  // ------------------------------------------------------------------------------------------------------
  // Run state and the guest

  /** The counter dword at 0x7e00 now. */
  counter(): number {
    const running =
      this.runningSince === undefined ? 0 : Math.floor((performance.now() - this.runningSince) * COUNTER_PER_MS);
    return (this.counterBase + running) % 2 ** 32;
  }

  /** Set the guest state received from a migration stream. */
  setCounter(value: number): void {
    this.counterBase = value;
    if (this.runningSince !== undefined) this.runningSince = performance.now();
  }

  setRunState(next: RunState): void {
    const was = this.runState;
    if (next === 'running' && this.runningSince === undefined) this.runningSince = performance.now();
    if (next !== 'running' && this.runningSince !== undefined) {
      this.counterBase = this.counter();
      this.runningSince = undefined;
    }
    this.runState = next;
    if (was !== next || next === 'running') this.ledger.log('status', { status: next });
  }

  /** vm_stop(): STOP event when the guest was running. */
  vmStop(state: RunState): void {
    const wasRunning = this.runState === 'running';
    this.setRunState(state);
    if (wasRunning) this.emitEvent('STOP');
  }

  /** vm_start(): RESUME event. */
  vmStart(): void {
    if (this.runState === 'running') return;
    this.setRunState('running');
    this.emitEvent('RESUME');
  }

  emitEvent(event: string, data?: Record<string, unknown>): void {
    if (this.dead) return;
    for (const m of this.monitors) m.emitEvent(event, data);
  }

  /** MIGRATION / MIGRATION_PASS are sent only with the `events` capability, as in QEMU. */
  emitMigrationEvent(event: 'MIGRATION' | 'MIGRATION_PASS', data: Record<string, unknown>): void {
    if (this.caps.get('events')) this.emitEvent(event, data);
  }

  // ------------------------------------------------------------------------------------------------------
  // Faults

  /** Apply a fault at a phase. Returns the action for the caller to act on ('error', 'slow'), if any. */
  phaseFault(phase: FaultPhase): 'error' | 'slow' | 'crash' | 'hang' | undefined {
    const action = this.faults.take(phase);
    if (!action) return undefined;
    this.ledger.log('fault', { phase, action });
    if (action === 'crash') this.crash();
    else if (action === 'hang') this.hang();
    return action;
  }

  /** Resolves when faults change (x-sim-clear-faults / x-sim-inject-fault), for stalled migrations. */
  faultsChanged(): Promise<void> {
    return new Promise((r) => this.faultWaiters.push(r));
  }

  notifyFaultsChanged(): void {
    for (const w of this.faultWaiters.splice(0)) w();
  }

  hang(): void {
    this.hung = true;
    this.ledger.log('hang');
  }

  // ------------------------------------------------------------------------------------------------------
  // Ending

  /** quit: SHUTDOWN event, then the reply, then the process ends (after is run by the monitor). */
  quit(reason: 'host-qmp-quit' | 'host-signal' = 'host-qmp-quit'): void {
    if (this.dead) return;
    this.emitEvent('SHUTDOWN', { guest: false, reason });
    this.ledger.log('quit', { reason });
  }

  /** End the process with an exit status (QEMU's exit()). */
  exit(code: number): void {
    if (this.dead) return;
    this.setRunState('shutdown');
    this.dead = true;
    this.exitCode = code;
    this.teardown();
    this.releaseBackends();
    this.ledger.log('exit', { code });
    markInstanceLive(this.owner.instance, false);
    if (this.cfg.pidfile) {
      try {
        unlinkSync(this.cfg.pidfile);
      } catch {
        // gone
      }
    }
    this.resolveExit(code);
  }

  /** Die at once like SIGKILL: no SHUTDOWN, sockets reset. The kernel frees the backends. */
  crash(): void {
    if (this.dead) return;
    this.ledger.log('crash');
    this.dead = true;
    this.exitCode = 137;
    if (this.processMode) process.kill(process.pid, 'SIGKILL');
    this.runningSince = undefined;
    for (const m of this.monitors) m.destroy();
    this.outgoing?.destroy();
    this.incoming?.destroy();
    this.cprIncoming?.destroy();
    markInstanceLive(this.owner.instance, false);
    this.resolveExit(137);
  }

  /** Graceful stop as on SIGTERM: SHUTDOWN (host-signal), exit 0. */
  async stop(): Promise<number> {
    if (!this.dead) {
      this.quit('host-signal');
      this.exit(0);
    }
    return this.exited;
  }

  private teardown(): void {
    for (const m of this.monitors) m.close();
    this.outgoing?.destroy();
    this.incoming?.destroy();
    this.cprIncoming?.destroy();
  }

  private releaseBackends(): void {
    for (const n of this.netdevs.values()) {
      if (n.backend?.state === 'open') this.ledger.release(n.backend.kind, n.backend.name);
    }
  }

  stderr(line: string): void {
    if (!this.dead) this.stderrSink(errorLine(line, this.cfg.msgTimestamp));
  }

  // ------------------------------------------------------------------------------------------------------
  // Machine building (command line and hotplug share these; an error is QEMU's text)

  addObject(o: ObjectConfig): string | undefined {
    if (this.objects.has(o.id)) return `attempt to add duplicate property '${o.id}' to object (type 'container')`;
    if (!o.qomType.startsWith('memory-backend-')) {
      this.objects.set(o.id, { id: o.id, qomType: o.qomType, props: o.props, implicit: false });
      return undefined;
    }
    if (o.props.size === undefined) return "can't create backend with size 0";
    if (o.qomType === 'memory-backend-file' && o.props['mem-path'] === undefined) return 'mem-path property not set';
    this.objects.set(o.id, { id: o.id, qomType: o.qomType, props: o.props, implicit: false });
    return undefined;
  }

  private setupMemory(): string {
    const requested = this.cfg.machine.props['memory-backend'];
    if (this.machineType === 'none') return '';
    if (typeof requested === 'string') {
      const b = this.objects.get(requested);
      if (!b || !b.qomType.startsWith('memory-backend-'))
        throw new CommandLineError(`Memory backend '${requested}' not found`);
      if (this.cfg.memExplicit && Number(b.props.size) !== this.cfg.memBytes) {
        throw new CommandLineError('Machine memory size does not match the size of the memory backend');
      }
      return requested;
    }
    // Legacy -m: QEMU creates /objects/pc.ram, a private memory-backend-ram.
    this.objects.set('pc.ram', {
      id: 'pc.ram',
      qomType: 'memory-backend-ram',
      props: { size: this.cfg.memBytes, share: false },
      implicit: true,
    });
    return 'pc.ram';
  }

  /** Guest RAM that a new process can map by fd (cpr-transfer): memfd or file, share=on, aux-ram-share=on. */
  cprIncompatibleRegion(): string | undefined {
    if (this.cfg.machine.props['aux-ram-share'] !== true) return '/rom@etc/acpi/rsdp';
    const b = this.objects.get(this.memoryBackend);
    const fdBacked = b && (b.qomType === 'memory-backend-memfd' || b.qomType === 'memory-backend-file');
    if (!fdBacked || b.props.share !== true) return this.memoryBackend;
    return undefined;
  }

  /** Guest RAM is shared (x-ignore-shared leaves it in place). */
  ramShared(): boolean {
    return this.objects.get(this.memoryBackend)?.props.share === true;
  }

  addNetdev(n: NetdevConfig, hotplug: boolean): string | undefined {
    if (this.netdevs.has(n.id)) return `Duplicate ID '${n.id}' for netdev`;
    const nd: Netdev = { id: n.id, type: n.type, opts: n.opts };
    if (n.type === 'tap') {
      const ifname = n.opts.ifname;
      nd.backend =
        typeof ifname === 'string'
          ? { kind: 'tap', name: ifname, state: 'gone', generated: false }
          : { kind: 'tap', name: `simtap${this.owner.instance}.${this.tapSeq++}`, state: 'gone', generated: true };
    } else if (n.type === 'vhost-user') {
      const chr = this.chardevs.get(String(n.opts.chardev));
      if (!chr) return `chardev "${String(n.opts.chardev)}" not found`;
      nd.backend = { kind: 'vhost-user', name: chr.path ?? chr.id, state: 'gone', generated: false };
    }
    this.netdevs.set(n.id, nd);
    if (hotplug) {
      const e = this.openBackend(nd);
      if (e) {
        this.netdevs.delete(n.id);
        return e;
      }
    }
    return undefined;
  }

  /** Open a netdev's host backend now, or defer it on an incoming process in a transfer dialect. */
  openBackend(n: Netdev): string | undefined {
    const b = n.backend;
    if (!b || b.state !== 'gone') return undefined;
    if (
      this.runState === 'inmigrate' &&
      this.sim.dialect.deferOpenOnIncoming &&
      this.sim.dialect.transferable.includes(b.kind)
    ) {
      b.state = 'deferred';
      return undefined;
    }
    return this.claimBackend(n);
  }

  /** Claim ownership of a backend (EBUSY while a live process owns it). */
  claimBackend(n: Netdev): string | undefined {
    const b = n.backend;
    if (!b) return undefined;
    const r = this.ledger.claim(b.kind, b.name);
    if (!r.ok) {
      return b.kind === 'tap'
        ? `could not configure /dev/net/tun (${b.name}): Device or resource busy`
        : `Failed to connect to '${b.name}': Device or resource busy`;
    }
    b.state = 'open';
    return undefined;
  }

  deviceProperties(driver: string): DeviceModel['props'] {
    const model = DEVICE_MODELS[driver];
    const props = { ...model.props };
    const dp = this.sim.dialect.deviceProperty;
    if (dp && model.nic && model.virtioChild) props[dp.name] = 'bool';
    return props;
  }

  /** Default of the per-device backend-transfer property: off for machine types before the dialect's. */
  deviceTransferDefault(): boolean {
    const dp = this.sim.dialect.deviceProperty;
    const v = /-(\d+\.\d+)$/.exec(this.machineType)?.[1];
    return !!dp && !!v && compareVersions(v, dp.defaultOnSinceMachine) >= 0;
  }

  addDevice(d: DeviceConfig, hotplug: boolean): string | undefined {
    const model = DEVICE_MODELS[d.driver];
    if (!model) return `'${d.driver}' is not a valid device model name`;
    if (d.id !== undefined && this.devices.some((x) => x.id === d.id)) return `Duplicate device ID '${d.id}'`;
    const allowed = this.deviceProperties(d.driver);
    const props: Device['props'] = {};
    for (const [k, v] of Object.entries(d.props)) {
      const t = allowed[k];
      if (!t) return `Property '${d.driver}.${k}' not found`;
      if (t === 'bool') {
        const b = parseBool(v);
        if (b === undefined) return `Property '${d.driver}.${k}' doesn't take value '${String(v)}'`;
        props[k] = b;
      } else props[k] = v;
    }
    const dev: Device = {
      driver: d.driver,
      model,
      ...(d.id !== undefined ? { id: d.id } : {}),
      path: d.id !== undefined ? `/machine/peripheral/${d.id}` : `/machine/peripheral-anon/device[${this.anonSeq++}]`,
      props,
      hotplugged: hotplug && this.runState !== 'inmigrate' && this.runState !== 'prelaunch',
    };
    if (model.nic) {
      const nd = props.netdev;
      const owner = model.virtioChild ? 'virtio-net-device' : d.driver;
      if (nd !== undefined) {
        const n = this.netdevs.get(String(nd));
        if (!n) return `Property '${owner}.netdev' can't find value '${String(nd)}'`;
        if (n.usedBy) return `Property '${owner}.netdev' can't take value '${String(nd)}', it's in use`;
        n.usedBy = dev.path;
        dev.netdev = n.id;
      }
      dev.mac = typeof props.mac === 'string' ? props.mac : defaultMac(this.nicSeq++);
      const dp = this.sim.dialect.deviceProperty;
      if (dp && model.virtioChild && props[dp.name] === undefined) props[dp.name] = this.deviceTransferDefault();
    }
    if (model.pci) dev.slot = pciSlot(this.pciSeq++);
    this.devices.push(dev);
    return undefined;
  }

  /** find_device_state(): an ID under /machine/peripheral or a QOM path (full or partial). */
  findDevice(idOrPath: string): { device: Device; child: boolean } | undefined {
    for (const d of this.devices) {
      if (idOrPath === d.path || idOrPath === d.id) return { device: d, child: false };
      if (d.model.virtioChild && idOrPath === `${d.path}/virtio-backend`) return { device: d, child: true };
    }
    return undefined;
  }

  /** The devices whose backend this build can hand over now (list dialect's support query). */
  transferableDevicePaths(): string[] {
    return this.devices
      .filter((d) => d.model.nic && d.model.virtioChild && d.netdev !== undefined)
      .filter((d) => {
        const b = this.netdevs.get(d.netdev as string)?.backend;
        return !!b && this.sim.dialect.transferable.includes(b.kind);
      })
      .map((d) => `${d.path}/virtio-backend`);
  }

  /** The netdevs this side hands over (source) or expects (destination), by the dialect's rule. */
  selectTransfers(): string[] {
    const d = this.sim.dialect;
    const out: string[] = [];
    const transferable = (n: Netdev | undefined): n is Netdev =>
      !!n?.backend && d.transferable.includes(n.backend.kind);
    switch (d.selection) {
      case 'device-property': {
        if (this.params[d.parameter?.name ?? ''] !== true) break;
        for (const dev of this.devices) {
          const n = dev.netdev === undefined ? undefined : this.netdevs.get(dev.netdev);
          if (dev.props[d.deviceProperty?.name ?? ''] === true && transferable(n)) out.push(n.id);
        }
        break;
      }
      case 'device-list': {
        const list = (this.params[d.parameter?.name ?? ''] as string[] | undefined) ?? [];
        for (const entry of list) {
          const f = this.findDevice(entry);
          if (!f?.child || f.device.netdev === undefined) continue;
          const n = this.netdevs.get(f.device.netdev);
          if (transferable(n) && !out.includes(n.id)) out.push(n.id);
        }
        break;
      }
      case 'tap-option': {
        if (this.params[d.parameter?.name ?? ''] !== true) break;
        for (const n of this.netdevs.values()) {
          if (n.type === 'tap' && n.opts[d.tapOption ?? ''] === true && n.usedBy && transferable(n)) out.push(n.id);
        }
        break;
      }
      default:
        break;
    }
    return out.sort();
  }

  ramBlockName(): string {
    return this.memoryBackend || 'pc.ram';
  }

  /** Stat a path for the simulator's own checks (drive files etc.). */
  static fileExists(p: string): boolean {
    try {
      statSync(p);
      return true;
    } catch {
      return false;
    }
  }
}

/** query-migrate-parameters defaults as real QEMU reports them, restricted to the served schema's members. */
function defaultMigrationParameters(schema: ServedSchema, sim: SimOptions): Record<string, unknown> {
  const defaults: Record<string, unknown> = {
    'announce-initial': 50,
    'announce-max': 550,
    'announce-rounds': 5,
    'announce-step': 100,
    'throttle-trigger-threshold': 50,
    'cpu-throttle-initial': 20,
    'cpu-throttle-increment': 10,
    'cpu-throttle-tailslow': false,
    'tls-creds': '',
    'tls-hostname': '',
    'tls-authz': '',
    'max-bandwidth': 134217728,
    'avail-switchover-bandwidth': 0,
    'downtime-limit': 300,
    'x-checkpoint-delay': 20000,
    'block-incremental': false,
    'multifd-channels': 2,
    'multifd-compression': 'none',
    'multifd-zlib-level': 1,
    'multifd-qatzip-level': 1,
    'multifd-zstd-level': 1,
    'xbzrle-cache-size': 67108864,
    'max-postcopy-bandwidth': 0,
    'max-cpu-throttle': 99,
    'x-vcpu-dirty-limit-period': 1000,
    'vcpu-dirty-limit': 1,
    mode: 'normal',
    'zero-page-detection': 'multifd',
    'direct-io': false,
    'compress-level': 1,
    'compress-threads': 8,
    'compress-wait-thread': true,
    'decompress-threads': 2,
  };
  const p = sim.dialect.parameter;
  if (p?.type === 'bool') defaults[p.name] = false;
  const members = new Set(schema.members(schema.migrationParametersType()).map((m) => m.name));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(defaults)) if (members.has(k)) out[k] = v;
  return out;
}
