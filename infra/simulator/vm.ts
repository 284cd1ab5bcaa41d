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
import { compareVersions } from './dialects';
import { DEVICE_MODELS, DeviceModel, defaultMac, parseBool, pciSlot } from './devices';
import { FaultPhase, FaultRegistry } from './faults';
import { FdTable, HeldFd, registerProcPid, resolveProcFd, SimFd, SimRam } from './fds';
import { Ledger, markInstanceLive, Owner } from './ledger';
import { COUNTER_PER_MS, type Device, type Machine, type MemoryObject, type Netdev, type RunState } from './machine';
import { CprIncoming, IncomingMigration, OutgoingMigration } from './migration';
import { QmpMonitor, QmpResult } from './qmp-server';
import { SchemaChecker, ServedSchema } from './schema';

export interface SimulatedQemuOptions {
  /** Where QEMU's stderr lines go (default: process.stderr). */
  stderr?: (text: string) => void;
  /** Running as its own process: a crash is a real SIGKILL of this process. */
  processMode?: boolean;
  /**
   * The pid by which `/proc/<pid>/fd/<n>` names this QEMU's fds for the other simulated QEMUs of this Node
   * process (an in-process launcher's pid-like handle); default: the process's pid in processMode, none else.
   */
  pid?: number;
  /** The fds this QEMU inherits at spawn, as 3, 4, …: duplicates taken from another simulated QEMU. */
  inheritedFds?: readonly SimFd[];
}

let instanceSeq = 0;

export class SimulatedQemu implements Machine {
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
  /** Its fds: inherited ones, tap queues, the guest RAM's memfd or file (heldFds, dupFd). */
  readonly fdTable: FdTable;
  /** The pages of the guest RAM when they live in a memfd or file another process can map (same id, same pages). */
  ram?: SimRam;
  /** The pid its fds are named by under /proc, if any. */
  readonly procPid?: number;
  /** The instance of a destination that wrote a migration stream into this QEMU's shared RAM while it ran. */
  ramOverwrittenBy?: string;
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
    this.fdTable = new FdTable(opts.inheritedFds);
    this.procPid = opts.pid ?? (this.processMode ? process.pid : undefined);
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
    this.ram = this.openRam();
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
    if (this.procPid !== undefined) registerProcPid(this.procPid, this);
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
      this.releaseBackends();
      this.unregister();
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
    this.unregister();
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
    this.unregister();
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
      if (n.backend?.state === 'open') this.closeBackend(n);
    }
  }

  /** Close a netdev's host backend (its fds; in the ledger, the tap passes to a holder of a duplicate). */
  closeBackend(n: Netdev): void {
    const b = n.backend;
    if (!b || b.state !== 'open') return;
    for (const fd of b.fds ?? []) this.fdTable.close(fd);
    b.fds = undefined;
    b.state = 'gone';
    this.ledger.release(b.kind, b.name);
  }

  private unregister(): void {
    if (this.procPid !== undefined) registerProcPid(this.procPid, undefined);
  }

  // ------------------------------------------------------------------------------------------------------
  // Fds, as /proc/<pid>/fd and pidfd_getfd show them

  /** The fds this QEMU holds now: tap queues (by interface name) and guest RAM. */
  heldFds(): HeldFd[] {
    return this.dead ? [] : this.fdTable.list();
  }

  /** pidfd_getfd(): a duplicate of one of its fds, naming the same tap or RAM; undefined for no such fd. */
  dupFd(fd: number): SimFd | undefined {
    const f = this.dead ? undefined : this.fdTable.get(fd);
    return f ? { ...f, from: this.owner } : undefined;
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

  /**
   * Open the guest RAM's memfd or file: a memfd of its own, or the file `mem-path` names — which, for
   * `/proc/<pid>/fd/<n>` of another simulated QEMU, is that QEMU's very RAM. QEMU's errors for a path that
   * cannot be opened or a file too small.
   */
  private openRam(): SimRam | undefined {
    const b = this.objects.get(this.memoryBackend);
    if (!b) return undefined;
    const bytes = Number(b.props.size);
    if (b.qomType === 'memory-backend-memfd') {
      const ram: SimRam = { id: `memfd:${this.owner.instance}:${b.id}`, bytes, memfd: true };
      this.fdTable.open({ kind: 'ram', ram });
      return ram;
    }
    if (b.qomType !== 'memory-backend-file') return undefined;
    const memPath = String(b.props['mem-path']);
    const target = resolveProcFd(memPath);
    let ram: SimRam;
    if (target === null || (target === undefined && /^\/proc\/\d+\/fd\/\d+$/.test(memPath) && !existsSync(memPath))) {
      throw new CommandLineError(`can't open backing store ${memPath} for guest RAM: No such file or directory`);
    } else if (target === undefined) {
      ram = { id: `file:${memPath}`, bytes, memfd: false };
    } else if (target.kind !== 'ram') {
      // A tap's fd is no file to map.
      throw new CommandLineError(
        `${b.id} backing store size 0x0 is too small for 'size' option 0x${bytes.toString(16)} plus 'offset' option 0x0`,
      );
    } else {
      if (target.ram.bytes < bytes) {
        throw new CommandLineError(
          `${b.id} backing store size 0x${target.ram.bytes.toString(16)} is too small for 'size' option 0x${bytes.toString(16)} plus 'offset' option 0x0`,
        );
      }
      ram = target.ram;
    }
    this.fdTable.open({ kind: 'ram', ram });
    return ram;
  }

  /**
   * Whether `x-ignore-shared` leaves the guest RAM out of the stream on this build: shared RAM, and from 8.0
   * only RAM backed by a named file (QEMU's RAM_NAMED_FILE), so never a memfd there.
   */
  ramIgnored(): boolean {
    if (this.caps.get('x-ignore-shared') !== true || !this.ramShared()) return false;
    const named = this.objects.get(this.memoryBackend)?.qomType === 'memory-backend-file';
    return named || compareVersions(this.sim.version, '8.0') < 0;
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
    if (n.type === 'tap' && (n.opts.fd !== undefined || n.opts.fds !== undefined)) {
      const r = this.tapByFds(n);
      if (typeof r === 'string') return r;
      nd.backend = { kind: 'tap', name: r.ifname, state: 'gone', generated: false, viaFds: r.fds };
    } else if (n.type === 'tap') {
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

  /**
   * `-netdev tap,fd=N` / `fds=N:M`: the tap behind inherited fds, with QEMU's checks (the options it refuses
   * beside them, an fd that is not open, an fd that is not a tap).
   */
  private tapByFds(n: NetdevConfig): { ifname: string; fds: number[] } | string {
    const o = n.opts;
    const single = o.fd !== undefined;
    const refused = single
      ? ['ifname', 'script', 'downscript', 'vnet_hdr', 'helper', 'queues', 'fds', 'vhostfds']
      : ['ifname', 'script', 'downscript', 'vnet_hdr', 'helper', 'queues', 'vhostfd'];
    if (refused.some((k) => o[k] !== undefined)) {
      return single
        ? 'ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd='
        : 'ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, and vhostfd= are invalid with fds=';
    }
    const fds = (single ? [String(o.fd)] : String(o.fds).split(':')).map(Number);
    let ifname: string | undefined;
    for (const fd of fds) {
      const f = Number.isInteger(fd) ? this.fdTable.get(fd) : undefined;
      if (!f) return `${n.id}: Can't use file descriptor ${fd}: Bad file descriptor`;
      if (f.kind !== 'tap') return `Unable to query TUNGETIFF on FD ${fd}: Inappropriate ioctl for device`;
      ifname ??= f.ifname;
      if (f.ifname !== ifname) return `fds= names queues of two interfaces (${ifname}, ${f.ifname})`;
    }
    return { ifname: ifname as string, fds };
  }

  /**
   * Open a netdev's host backend now, or defer it on an incoming process in a transfer dialect (every kind
   * the dialect carries, even one this build does not take: it learns from the stream which ones arrive).
   */
  openBackend(n: Netdev): string | undefined {
    const b = n.backend;
    if (!b || b.state !== 'gone') return undefined;
    if (b.viaFds) return this.claimBackend(n);
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
    if (b.viaFds) {
      // A duplicate of the owner's fd: the tap is already open, shared with whoever else holds it.
      const first = this.fdTable.get(b.viaFds[0] as number);
      this.ledger.hold(b.kind, b.name, first?.from);
      b.fds = b.viaFds;
      b.state = 'open';
      return undefined;
    }
    const r = this.ledger.claim(b.kind, b.name);
    if (!r.ok) {
      return b.kind === 'tap'
        ? `could not configure /dev/net/tun (${b.name}): Device or resource busy`
        : `Failed to connect to '${b.name}': Device or resource busy`;
    }
    if (b.kind === 'tap') {
      const queues = Math.max(1, Number(n.opts.queues ?? 1));
      b.fds = Array.from({ length: queues }, () => this.fdTable.open({ kind: 'tap', ifname: b.name }));
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
        return !!b && this.sim.transferable.includes(b.kind);
      })
      .map((d) => `${d.path}/virtio-backend`);
  }

  /** The netdevs this side hands over (source) or expects (destination), by the dialect's rule. */
  selectTransfers(): string[] {
    const d = this.sim.dialect;
    const out: string[] = [];
    // This build's kinds (--sim-transferable-kinds): a backend of another kind stays out of its stream.
    const transferable = (n: Netdev | undefined): n is Netdev =>
      !!n?.backend && this.sim.transferable.includes(n.backend.kind);
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
