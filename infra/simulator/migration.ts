// Migration between simulated QEMUs over a real UNIX socket, with QEMU's state machine and events.
//
// Source: setup -> active -> [pre-switchover -> device] -> completed | failed | cancelled. As in real QEMU
// the `device` status is visible only with pause-before-switchover (after migrate-continue) and in
// cpr-transfer mode; otherwise the device phase happens while the status still reads `active` and
// query-status reads `finish-migrate` (STOP sent). The guest is stopped for the device phase (for
// cpr-transfer from the start). On failure or cancel a guest stopped by the migration is resumed.
// Destination: `inmigrate`; MIGRATION setup on migrate-incoming, active on connect, completed after load;
// then `paused` (-S) or running (RESUME). A failed load prints QEMU's errors and exits 1.
//
// The stream (JSON lines) carries a header (machine type: checked first, like QEMU's configuration
// section), RAM progress, then the device state: the guest counter, the device list and the backends
// handed over. The destination checks RAM size and devices like QEMU's loader, takes ownership of the
// transferred backends (ledger), opens the ones it re-creates (EBUSY if a live process still owns them),
// and acknowledges. Guest RAM and `x-ignore-shared` as in real QEMU (checked against 7.2 and 10.0.2): the
// capability must be the same on both sides (the header carries it, the destination refuses a mismatch);
// RAM it leaves out (shared, and from 8.0 backed by a named file) is not streamed; a destination whose own
// RAM is left out refuses pages for it ("should not be migrated"); one that maps the very pages the source
// runs on but receives them anyway writes into the running source's RAM (ledger `ram-overwritten`); one
// whose RAM was skipped but is not the source's pages loads garbage and fails. cpr-transfer adds a first channel carrying the cpr state; the destination creates its
// monitors only after it has read it.
import net from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';
import type { MigrationAddress } from './args';
import type { BackendKind } from './dialects';
import type { FaultPhase } from './faults';
import type { Owner } from './ledger';
import { describeErrno } from './qmp-server';
import type { IncomingStatus, Machine, OutgoingStatus } from './machine';

/** Bytes of ROMs and other RAM blocks besides guest RAM (pc-i440fx with a NIC, as QEMU reports them). */
const ROM_BYTES = 794624;
/** Size of the device state sent after the guest stopped. */
const DEVICE_STATE_BYTES = 20527;
const PAGE = 4096;
const MAGIC = 'QEVM-SIM';

interface Header {
  type: 'header';
  magic: string;
  machine: string;
  mode: string;
  source: Owner;
  qemu: string;
  /** The source's `x-ignore-shared` (QEMU's configuration section checks it against the destination's). */
  ignoreShared: boolean;
  /** The guest RAM's pages (when another process could map them) and whether the stream leaves them out. */
  ram: { id?: string; skipped: boolean };
}

interface DeviceState {
  type: 'device';
  counter: number;
  ram: { block: string; size: number };
  devices: Array<{ section: string; driver: string }>;
  transfers: Array<{ netdev: string; kind: BackendKind; name: string }>;
  source: Owner;
}

type StreamMsg =
  | Header
  | DeviceState
  | { type: 'ram'; pass: number; total: number }
  | { type: 'ack' }
  | { type: 'ram-overwritten'; by: Owner }
  | { type: 'cpr'; machine: string; source: Owner };

function send(sock: net.Socket | undefined, msg: StreamMsg): void {
  if (sock && !sock.destroyed) sock.write(JSON.stringify(msg) + '\n');
}

function onLines(sock: net.Socket, cb: (msg: StreamMsg) => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) cb(JSON.parse(line) as StreamMsg);
    }
  });
}

function connectUnix(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) =>
      reject(Object.assign(new Error(`Failed to connect to '${path}': ${describeErrno(e)}`), { code: e.code })),
    );
  });
}

function listenUnix(path: string, onConn: (s: net.Socket) => void): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    if (existsSync(path)) {
      try {
        unlinkSync(path);
      } catch {
        // bind reports it
      }
    }
    const server = net.createServer(onConn);
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new Error(`Failed to bind socket to ${path}: ${describeErrno(e)}`)),
    );
    server.listen(path, () => resolve(server));
  });
}

const never = (): Promise<never> => new Promise<never>(() => undefined);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The section id QEMU's loader names a device by. */
function sectionOf(driver: string, slot: number | undefined, path: string): string {
  const vmsd = driver.replace(/-pci$/, '');
  return slot === undefined ? `${path}/${vmsd}` : `0000:00:${slot.toString(16).padStart(2, '0')}.0/${vmsd}`;
}

export class OutgoingMigration {
  status: OutgoingStatus = 'setup';
  private readonly t0 = performance.now();
  private setupTime?: number;
  private stopAt?: number;
  private endAt?: number;
  private errorDesc?: string;
  private sock?: net.Socket;
  private cprSock?: net.Socket;
  private readonly ramTotal: number;
  private readonly ramSkipped: boolean;
  /** The guest's state when RAM started to move: what a destination writing into shared pages puts back. */
  private readonly counterAtStart: number;
  private readonly bytesPerMs: number;
  private transferred = 0;
  /** While RAM is moving: since when (the amount is computed from the clock, no per-tick timers). */
  private flowingSince?: number;
  private pendingTransfers: DeviceState['transfers'] = [];
  private downtimeBytes = 0;
  private pass = 0;
  private finished = false;
  private stoppedGuest = false;
  private readonly wasRunning: boolean;
  private continueResolve?: () => void;
  private finishResolve!: () => void;
  private readonly finishedPromise = new Promise<void>((r) => (this.finishResolve = r));

  constructor(
    private readonly vm: Machine,
    private readonly main: MigrationAddress,
    private readonly cpr?: MigrationAddress,
  ) {
    this.wasRunning = vm.runState === 'running';
    this.ramSkipped = vm.ramIgnored();
    this.ramTotal = cpr ? 0 : ROM_BYTES + (this.ramSkipped ? 0 : vm.memBytes);
    this.counterAtStart = vm.counter();
    let rate = vm.sim.ramRateMbps * 125; // Mbit/s -> bytes/ms
    const limit = Number(vm.params['max-bandwidth']);
    if (vm.paramsSet.has('max-bandwidth') && limit > 0) rate = Math.min(rate, limit / 1000);
    this.bytesPerMs = rate;
  }

  isActive(): boolean {
    return ['setup', 'active', 'pre-switchover', 'device', 'cancelling'].includes(this.status);
  }

  start(): void {
    this.run().catch((e: unknown) => this.fail((e as Error).message));
  }

  private setStatus(s: OutgoingStatus): void {
    this.status = s;
    this.vm.emitMigrationEvent('MIGRATION', { status: s });
    this.vm.ledger.log('migration', {
      role: 'source',
      status: s,
      ...(this.errorDesc && s === 'failed' ? { error: this.errorDesc } : {}),
    });
  }

  private passEvent(): void {
    this.pass++;
    this.vm.emitMigrationEvent('MIGRATION_PASS', { pass: this.pass });
  }

  private stopGuest(): void {
    if (this.stoppedGuest) return;
    this.stoppedGuest = true;
    this.stopAt = performance.now();
    this.vm.vmStop('finish-migrate');
  }

  /** A phase is reached: apply its fault. False when the migration must not go on. */
  private async phase(p: FaultPhase): Promise<boolean> {
    if (this.finished) return false;
    const f = this.vm.phaseFault(p);
    if (f === 'crash') return false;
    if (f === 'hang') await never();
    if (f === 'error') {
      this.fail(`simulated fault: migration failed in ${p} (${p}:error)`);
      return false;
    }
    while (this.vm.faults.isSlow(p) && !this.finished) {
      await Promise.race([this.vm.faultsChanged(), this.finishedPromise]);
      if (this.vm.hung) await never();
    }
    return !this.finished;
  }

  private async run(): Promise<void> {
    this.setStatus('setup');
    if (!(await this.phase('setup'))) return;
    if (this.cpr) {
      this.stopGuest();
      await this.cprHandshake(this.cpr.path);
      if (this.finished) return;
    }
    this.sock = await this.connectMain();
    if (this.finished) {
      this.sock.destroy();
      return;
    }
    this.sock.on('close', () => this.fail('Unable to write to socket: Broken pipe'));
    this.sock.on('error', () => undefined);
    onLines(this.sock, (m) => {
      if (m.type === 'ack') this.complete();
      if (m.type === 'ram-overwritten') this.overwritten(m.by);
    });
    send(this.sock, {
      type: 'header',
      magic: MAGIC,
      machine: this.vm.machineType,
      mode: this.cpr ? 'cpr-transfer' : 'normal',
      source: this.vm.owner,
      qemu: this.vm.sim.version,
      ignoreShared: this.vm.caps.get('x-ignore-shared') === true,
      ram: { ...(this.vm.ram ? { id: this.vm.ram.id } : {}), skipped: this.ramSkipped },
    });
    this.setupTime = performance.now() - this.t0;
    this.passEvent();
    this.setStatus('active');
    if (!(await this.phase('active'))) return;
    send(this.sock, { type: 'ram', pass: 1, total: this.ramTotal });
    if (!(await this.transferRam())) return;

    if (this.cpr) this.setStatus('device');
    else {
      this.passEvent();
      this.stopGuest();
      if (this.vm.caps.get('pause-before-switchover')) {
        this.setStatus('pre-switchover');
        await new Promise<void>((r) => (this.continueResolve = r));
        if (this.finished) return;
        this.setStatus('device');
      }
    }
    if (!(await this.phase('device'))) return;
    const transfers = this.vm.selectTransfers().flatMap((id) => {
      const b = this.vm.netdevs.get(id)?.backend;
      return b && b.state === 'open' ? [{ netdev: id, kind: b.kind, name: b.name }] : [];
    });
    this.pendingTransfers = transfers;
    this.downtimeBytes = DEVICE_STATE_BYTES;
    send(this.sock, {
      type: 'device',
      counter: this.vm.counter(),
      ram: { block: this.vm.ramBlockName(), size: this.vm.memBytes },
      devices: this.vm.devices.map((d) => ({ section: sectionOf(d.driver, d.slot, d.path), driver: d.driver })),
      transfers,
      source: this.vm.owner,
    });
    // completion comes with the destination's ack (complete()).
  }

  private async cprHandshake(path: string): Promise<void> {
    this.cprSock = await connectUnix(path);
    const closed = new Promise<void>((r) => this.cprSock?.once('close', () => r()));
    this.cprSock.on('error', () => undefined);
    send(this.cprSock, { type: 'cpr', machine: this.vm.machineType, source: this.vm.owner });
    // The destination reads the cpr state, then hangs up: it is creating its monitors and listeners.
    await Promise.race([closed, this.finishedPromise]);
  }

  /** Connect the main channel; for cpr-transfer the destination may not be listening yet: retry a while. */
  private async connectMain(): Promise<net.Socket> {
    const deadline = performance.now() + (this.cpr ? 10_000 : 0);
    for (;;) {
      try {
        return await connectUnix(this.main.path);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (this.finished || performance.now() > deadline || (code !== 'ENOENT' && code !== 'ECONNREFUSED')) throw e;
        await sleep(10);
      }
    }
  }

  /** Move the RAM at the simulated rate; stalls while `active:slow` is armed or the process hangs. */
  private async transferRam(): Promise<boolean> {
    while (this.transferred < this.ramTotal) {
      if (this.finished) return false;
      if (this.vm.hung) await never();
      if (this.vm.faults.isSlow('active')) {
        await Promise.race([this.vm.faultsChanged(), this.finishedPromise]);
        continue;
      }
      const since = performance.now();
      this.flowingSince = since;
      const remainingMs = (this.ramTotal - this.transferred) / this.bytesPerMs;
      let timer: NodeJS.Timeout | undefined;
      const woke = await Promise.race([
        new Promise<'done'>((r) => (timer = setTimeout(() => r('done'), Math.max(1, Math.ceil(remainingMs))))),
        this.vm.faultsChanged().then(() => 'faults' as const),
        this.finishedPromise.then(() => 'finished' as const),
      ]);
      clearTimeout(timer);
      this.flowingSince = undefined;
      this.transferred = Math.min(this.ramTotal, this.transferred + (performance.now() - since) * this.bytesPerMs);
      if (woke === 'done') this.transferred = this.ramTotal;
      // A fault injected while active applies now.
      if (woke === 'faults' && !(await this.phase('active'))) return false;
    }
    return !this.finished;
  }

  /** The destination maps our RAM and wrote the stream into it: the running guest's pages are stale now. */
  private overwritten(by: Owner): void {
    if (this.vm.dead) return;
    this.vm.ramOverwrittenBy = by.instance;
    this.vm.setCounter(this.counterAtStart);
    this.vm.ledger.log('ram-overwritten', { by: by.instance, byPid: by.pid });
  }

  continueFromPreSwitchover(): void {
    this.continueResolve?.();
  }

  private complete(): void {
    if (this.finished) return;
    this.finished = true;
    this.finishResolve();
    this.endAt = performance.now();
    for (const t of this.pendingTransfers) {
      const n = this.vm.netdevs.get(t.netdev);
      if (n?.backend) {
        // The fd went with the stream: this process no longer holds it (the destination owns the tap).
        for (const fd of n.backend.fds ?? []) this.vm.fdTable.close(fd);
        n.backend.fds = undefined;
        n.backend.state = 'gone';
      }
      this.vm.ledger.log('backend-transfer-out', { backend: `${t.kind}:${t.name}` });
    }
    this.passEvent();
    this.vm.setRunState('postmigrate');
    this.setStatus('completed');
    this.sock?.removeAllListeners('close');
    this.sock?.end();
  }

  private restartGuest(): void {
    if (this.stoppedGuest && this.wasRunning && this.vm.runState === 'finish-migrate') this.vm.vmStart();
    else if (this.stoppedGuest && this.vm.runState === 'finish-migrate') this.vm.setRunState('paused');
  }

  fail(desc: string): void {
    if (this.finished || this.vm.dead) return;
    this.finished = true;
    this.finishResolve();
    this.errorDesc = desc;
    this.endAt = performance.now();
    this.closeSockets();
    this.vm.stderr(desc);
    this.setStatus('failed');
    this.restartGuest();
  }

  cancel(): void {
    if (!this.isActive() || this.status === 'cancelling') return;
    this.finished = true;
    this.finishResolve();
    this.setStatus('cancelling');
    this.closeSockets();
    setImmediate(() => {
      if (this.vm.dead) return;
      this.endAt = performance.now();
      this.setStatus('cancelled');
      this.restartGuest();
    });
  }

  private closeSockets(): void {
    this.sock?.removeAllListeners('close');
    this.sock?.destroy();
    this.cprSock?.destroy();
  }

  /** The process ends: drop everything silently. */
  destroy(): void {
    this.finished = true;
    this.finishResolve();
    this.closeSockets();
  }

  info(): Record<string, unknown> {
    const now = this.endAt ?? performance.now();
    const ms = (x: number): number => Math.round(x);
    switch (this.status) {
      case 'setup':
        return { status: 'setup' };
      case 'failed':
        return { status: 'failed', 'error-desc': this.errorDesc };
      case 'cancelled':
        return { status: 'cancelled' };
      default:
        break;
    }
    const totalTime = ms(now - this.t0);
    const base: Record<string, unknown> = { status: this.status, 'setup-time': ms(this.setupTime ?? 0) };
    if (this.status === 'completed') base.downtime = ms((this.endAt ?? now) - (this.stopAt ?? now));
    else base['expected-downtime'] = Number(this.vm.params['downtime-limit'] ?? 300);
    base['total-time'] = totalTime;
    base.ram = this.ramStats(totalTime);
    return base;
  }

  private ramStats(totalTime: number): Record<string, unknown> {
    const precopy = Math.floor(this.currentTransferred());
    const transferred = precopy + this.downtimeBytes;
    const normal = Math.floor(precopy / PAGE);
    const mbps = totalTime > 0 ? (transferred * 8) / (totalTime * 1000) : 0;
    const stats: Record<string, unknown> = {
      total: this.ramTotal,
      'postcopy-requests': 0,
      'dirty-sync-count': Math.max(1, this.pass),
      'multifd-bytes': 0,
      'pages-per-second': totalTime > 0 ? Math.round((normal * 1000) / totalTime) : 0,
      'downtime-bytes': this.downtimeBytes,
      'page-size': PAGE,
      remaining: this.ramTotal - precopy,
      'postcopy-bytes': 0,
      mbps,
      transferred,
      'dirty-sync-missed-zero-copy': 0,
      'precopy-bytes': precopy,
      duplicate: 0,
      'dirty-pages-rate': 0,
      skipped: 0,
      'normal-bytes': normal * PAGE,
      normal,
    };
    const ramType = this.vm.schema.member(this.vm.schema.retType('query-migrate'), 'ram')?.type ?? '';
    const members = new Set(this.vm.schema.members(ramType).map((m) => m.name));
    return Object.fromEntries(Object.entries(stats).filter(([k]) => members.has(k)));
  }

  /** RAM moved so far. */
  private currentTransferred(): number {
    const flowing = this.flowingSince === undefined ? 0 : (performance.now() - this.flowingSince) * this.bytesPerMs;
    return Math.min(this.ramTotal, this.transferred + flowing);
  }
}

export class IncomingMigration {
  status: IncomingStatus = 'setup';
  private server?: net.Server;
  private sock?: net.Socket;
  private header?: Header;
  private errorDesc?: string;
  private finished = false;

  constructor(
    private readonly vm: Machine,
    readonly addr: MigrationAddress,
    private readonly exitOnError: boolean,
  ) {}

  async listen(): Promise<void> {
    this.server = await listenUnix(this.addr.path, (s) => this.onConnection(s));
    this.setStatus('setup');
  }

  private setStatus(s: IncomingStatus): void {
    this.status = s;
    this.vm.emitMigrationEvent('MIGRATION', { status: s });
    this.vm.ledger.log('migration', {
      role: 'destination',
      status: s,
      ...(s === 'failed' ? { error: this.errorDesc } : {}),
    });
  }

  private onConnection(sock: net.Socket): void {
    if (this.sock) return void sock.destroy();
    this.sock = sock;
    this.server?.close();
    this.setStatus('active');
    sock.on('error', () => undefined);
    sock.on('close', () =>
      this.fail([
        'check_section_footer: Read section footer failed: -5',
        'load of migration failed: Input/output error',
      ]),
    );
    const f = this.vm.phaseFault('incoming');
    if (f === 'crash' || f === 'hang') return;
    if (f === 'error')
      return this.fail([
        'simulated fault: incoming migration failed (incoming:error)',
        'load of migration failed: Invalid argument',
      ]);
    const queue: StreamMsg[] = [];
    let busy = false;
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      while (queue.length > 0 && !this.finished) {
        while (this.vm.faults.isSlow('incoming') && !this.finished) await this.vm.faultsChanged();
        if (this.vm.hung || this.vm.dead) return;
        this.handle(queue.shift() as StreamMsg);
      }
      busy = false;
    };
    onLines(sock, (m) => {
      queue.push(m);
      void pump();
    });
  }

  private handle(m: StreamMsg): void {
    if (this.finished) return;
    if (m.type === 'header') {
      if (m.magic !== MAGIC)
        return this.fail(['Unknown migration stream', 'load of migration failed: Invalid argument']);
      if (m.machine !== this.vm.machineType) {
        return this.fail([
          `Machine type received is '${m.machine}' and local is '${this.vm.machineType}'`,
          'load of migration failed: Invalid argument',
        ]);
      }
      const mine = this.vm.caps.get('x-ignore-shared') === true;
      if (m.ignoreShared !== mine) {
        const onOff = (b: boolean) => (b ? 'on' : 'off');
        return this.fail([
          `Capability x-ignore-shared is ${onOff(mine)}, but received capability is ${onOff(m.ignoreShared)}`,
          'load of migration failed: Invalid argument',
        ]);
      }
      this.header = m;
      return;
    }
    if (m.type === 'ram') return this.ramArrives();
    if (m.type === 'device') return this.load(m);
  }

  /** The source streams its RAM pages (unless it skips them): where do they land? */
  private ramArrives(): void {
    const vm = this.vm;
    if (!this.header || this.header.ram.skipped) return;
    if (vm.ramIgnored()) {
      return this.fail([
        `block ${vm.ramBlockName()} should not be migrated !`,
        'Illegal RAM offset 0',
        'error while loading state section id 1(ram)',
        'load of migration failed: Invalid argument',
      ]);
    }
    if (vm.ram !== undefined && vm.ram.id === this.header.ram.id) {
      // Both processes map the same pages and the stream writes into them while the source runs.
      vm.ledger.log('ram-overwritten', { of: this.header.source.instance, ofPid: this.header.source.pid });
      send(this.sock, { type: 'ram-overwritten', by: vm.owner });
    }
  }

  private load(m: DeviceState): void {
    const vm = this.vm;
    if (!this.header) return this.fail(['Unknown migration stream', 'load of migration failed: Invalid argument']);
    if (m.ram.size !== vm.memBytes) {
      return this.fail([
        `Length mismatch: ${m.ram.block}: 0x${m.ram.size.toString(16)} in != 0x${vm.memBytes.toString(16)}: Invalid argument`,
        "error while loading state for instance 0x0 of device 'ram'",
        'load of migration failed: Invalid argument',
      ]);
    }
    const mine = new Set(vm.devices.map((d) => `${sectionOf(d.driver, d.slot, d.path)}|${d.driver}`));
    for (const d of m.devices) {
      if (!mine.has(`${d.section}|${d.driver}`)) {
        return this.fail([
          `Unknown savevm section or instance '${d.section}' 0. Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices`,
          'load of migration failed: Invalid argument',
        ]);
      }
    }
    // Both sides must agree on the backends in the stream (a field present on one side only corrupts it).
    const expected = vm.selectTransfers();
    const sent = m.transfers.map((t) => t.netdev).sort();
    const disagree = [...new Set([...expected, ...sent])].filter((id) => expected.includes(id) !== sent.includes(id));
    if (disagree.length > 0) {
      const dev = vm.devices.find((d) => d.netdev === disagree[0]);
      const section = dev ? sectionOf(dev.driver, dev.slot, dev.path) : disagree[0];
      return this.fail([`Missing section footer for ${section}`, 'load of migration failed: Invalid argument']);
    }
    for (const t of m.transfers) {
      const n = vm.netdevs.get(t.netdev);
      if (!n?.backend || n.backend.kind !== t.kind || n.backend.state !== 'deferred') {
        return this.fail([
          `backend of netdev '${t.netdev}' cannot take a transferred fd`,
          'load of migration failed: Invalid argument',
        ]);
      }
    }
    for (const t of m.transfers) {
      const n = vm.netdevs.get(t.netdev);
      if (!n?.backend) continue;
      n.backend.name = t.name;
      n.backend.generated = false;
      n.backend.state = 'open';
      if (t.kind === 'tap') n.backend.fds = [vm.fdTable.open({ kind: 'tap', ifname: t.name, from: m.source })];
      vm.ledger.transferIn(t.kind, t.name, m.source);
    }
    for (const n of vm.netdevs.values()) {
      if (n.backend?.state !== 'deferred') continue;
      const e = vm.claimBackend(n);
      if (e) return this.fail([`netdev ${n.id}: ${e}`, 'load of migration failed: Device or resource busy']);
    }
    if (this.header.ram.skipped && !(vm.ramIgnored() && vm.ram?.id === this.header.ram.id)) {
      // The source left its RAM out, and ours is not its pages: the device state reads garbage guest memory.
      // The source has sent everything and completes; this side fails.
      send(this.sock, { type: 'ack' });
      this.sock?.removeAllListeners('close');
      this.sock?.end();
      this.sock = undefined;
      return this.fail([
        "error while loading state for instance 0x0 of device 'kvm-tpr-opt'",
        'load of migration failed: Operation not permitted',
      ]);
    }
    vm.setCounter(m.counter);
    this.finished = true;
    this.setStatus('completed');
    send(this.sock, { type: 'ack' });
    this.sock?.removeAllListeners('close');
    this.sock?.end();
    if (vm.autostart) vm.vmStart();
    else vm.setRunState('paused');
  }

  private fail(lines: string[]): void {
    if (this.finished || this.vm.dead) return;
    this.finished = true;
    this.errorDesc = lines[0];
    for (const l of lines) this.vm.stderr(l);
    this.sock?.removeAllListeners('close');
    this.sock?.destroy();
    this.server?.close();
    this.setStatus('failed');
    if (this.exitOnError) this.vm.exit(1);
  }

  destroy(): void {
    this.finished = true;
    this.sock?.destroy();
    this.server?.close();
  }

  info(): Record<string, unknown> {
    const r: Record<string, unknown> = { status: this.status };
    if (this.status === 'failed' && this.errorDesc) r['error-desc'] = this.errorDesc;
    if (this.status === 'setup' || this.status === 'active')
      r['socket-address'] = [{ path: this.addr.path, type: 'unix' }];
    return r;
  }
}

/** The destination's cpr channel: read the cpr state, hang up, then bring up monitors and main listener. */
export class CprIncoming {
  private server?: net.Server;

  constructor(
    private readonly vm: Machine,
    private readonly path: string,
  ) {}

  async listen(): Promise<void> {
    this.server = await listenUnix(this.path, (s) => this.onConnection(s));
  }

  private onConnection(sock: net.Socket): void {
    this.server?.close();
    sock.on('error', () => undefined);
    onLines(sock, (m) => {
      if (m.type !== 'cpr') return;
      this.vm.ledger.log('cpr-state', { from: m.source.instance, machine: m.machine });
      sock.end();
      this.vm.startMonitorsAndIncoming().catch((e: unknown) => {
        this.vm.stderr((e as Error).message);
        this.vm.exit(1);
      });
    });
  }

  destroy(): void {
    this.server?.close();
  }
}
