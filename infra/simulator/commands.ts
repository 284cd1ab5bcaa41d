// QMP commands of the simulated QEMU. Arguments are checked against the served schema first (QEMU's
// texts); results are shaped like real QEMU's (keys the served schema lacks are dropped).
import { addressFromJson, addressFromUri, MigrationAddress } from './args';
import { DEVICE_MODELS } from './devices';
import { isFaultAction, isFaultPhase } from './faults';
import { humanMonitorCommand } from './hmp';
import { IncomingMigration, OutgoingMigration } from './migration';
import { qomGet, qomList } from './qom';
import { genericError, QmpResult } from './qmp-server';
import type { Machine } from './machine';

type Handler = (vm: Machine, args: Record<string, unknown>) => QmpResult | Promise<QmpResult>;

const ok = (value: unknown = {}): QmpResult => ({ return: value });

/** Keep only the members the served schema has for a type (older bases lack newer fields). */
export function shape(vm: Machine, typeName: string, value: Record<string, unknown>): Record<string, unknown> {
  const members = new Set(vm.schema.members(typeName).map((m) => m.name));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (members.has(k) && v !== undefined) out[k] = v;
  return out;
}

const HANDLERS: Record<string, Handler> = {
  'query-version': (vm) => ok((vm.greeting().QMP as { version: unknown }).version),

  'query-status': (vm) => {
    const status = vm.runState;
    const r: Record<string, unknown> = { status, running: status === 'running' };
    if (vm.schema.member(vm.schema.retType('query-status'), 'singlestep')) r.singlestep = false;
    return ok(r);
  },

  'query-machines': (vm) => {
    const [major, minor] = String(
      (vm.greeting().QMP as { version: { qemu: { major: number; minor: number } } }).version.qemu.major,
    )
      .concat('.', String((vm.greeting().QMP as { version: { qemu: { minor: number } } }).version.qemu.minor))
      .split('.')
      .map(Number);
    const lastMinor: Record<number, number> = { 2: 12, 3: 1, 4: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2, 10: 2, 11: 2 };
    const out: Record<string, unknown>[] = [
      {
        name: 'none',
        'cpu-max': 1,
        'hotpluggable-cpus': false,
        'numa-mem-supported': false,
        deprecated: false,
        acpi: false,
      },
    ];
    for (let ma = 2; ma <= major!; ma++) {
      for (let mi = 0; mi <= (ma === major ? minor! : (lastMinor[ma] ?? 2)); mi++) {
        for (const kind of ['i440fx', 'q35']) {
          const current = ma === major && mi === minor;
          out.push({
            name: `pc-${kind}-${ma}.${mi}`,
            ...(current ? { alias: kind === 'i440fx' ? 'pc' : 'q35' } : {}),
            'cpu-max': kind === 'i440fx' ? 255 : 4096,
            'hotpluggable-cpus': true,
            'numa-mem-supported': false,
            deprecated: false,
            acpi: true,
          });
        }
      }
    }
    return ok(out);
  },

  'query-name': (vm) => ok(vm.cfg.name !== undefined ? { name: vm.cfg.name } : {}),

  'query-kvm': (vm) => ok({ enabled: vm.cfg.accel === 'kvm', present: true }),

  'query-commands': (vm) => ok(vm.schema.commandNames().map((name) => ({ name }))),

  'query-qmp-schema': (vm) => ok(vm.schema.entries),

  'qom-get': (vm, a) => qomGet(vm, String(a.path), String(a.property)),

  'qom-list': (vm, a) => qomList(vm, String(a.path)),

  'device-list-properties': (vm, a) => {
    const t = String(a.typename);
    if (!DEVICE_MODELS[t]) return { error: { class: 'DeviceNotFound', desc: `Device '${t}' not found` } };
    const props = vm.deviceProperties(t);
    return ok(Object.entries(props).map(([name, type]) => ({ name, type })));
  },

  'human-monitor-command': (vm, a) => ok(humanMonitorCommand(vm, String(a['command-line']))),

  stop: (vm) => {
    if (vm.runState === 'running') vm.vmStop('paused');
    else if (vm.runState === 'inmigrate') vm.autostart = false;
    return ok();
  },

  cont: (vm) => {
    const f = vm.phaseFault('cont');
    if (f === 'crash' || f === 'hang') return { noReply: true };
    if (f === 'error') return genericError('simulated fault: cont failed (cont:error)');
    if (vm.runState === 'inmigrate') {
      vm.autostart = true;
      return ok();
    }
    if (vm.runState === 'finish-migrate') return genericError('Migration is not finalized yet');
    vm.vmStart();
    return ok();
  },

  quit: (vm) => {
    vm.quit('host-qmp-quit');
    return { return: {}, after: () => vm.exit(0) };
  },

  system_powerdown: (vm) => {
    vm.emitEvent('POWERDOWN');
    return ok();
  },

  'query-migrate-capabilities': (vm) =>
    ok([...vm.caps.entries()].map(([capability, state]) => ({ state, capability }))),

  'migrate-set-capabilities': (vm, a) => {
    if (vm.outgoing?.isActive()) return genericError("There's a migration process in progress");
    for (const c of a.capabilities as Array<{ capability: string; state: boolean }>) vm.caps.set(c.capability, c.state);
    return ok();
  },

  'query-migrate-parameters': (vm) => {
    const p = { ...vm.params };
    const dp = vm.sim.dialect.parameter;
    // In the list dialect, QEMU reports the list only while one is set.
    if (dp?.type === '[str]' && !(Array.isArray(p[dp.name]) && (p[dp.name] as unknown[]).length > 0)) delete p[dp.name];
    return ok(p);
  },

  'migrate-set-parameters': (vm, a) => {
    const dp = vm.sim.dialect.parameter;
    if (dp?.type === '[str]' && Array.isArray(a[dp.name])) {
      for (const entry of a[dp.name] as string[]) {
        if (!vm.findDevice(entry)) return { error: { class: 'DeviceNotFound', desc: `Device '${entry}' not found` } };
      }
    }
    for (const [k, v] of Object.entries(a)) {
      vm.params[k] = v === null ? '' : v;
      vm.paramsSet.add(k);
    }
    return ok();
  },

  migrate: (vm, a) => {
    if (vm.runState === 'inmigrate') return genericError('Guest is waiting for an incoming migration');
    if (vm.outgoing?.isActive()) return genericError("There's a migration process in progress");
    if (vm.runState === 'postmigrate')
      return genericError("Can't migrate the vm that was paused due to previous migration");
    const hasUri = a.uri !== undefined;
    const hasChannels = a.channels !== undefined;
    if (hasUri === hasChannels) return genericError("need either 'uri' or 'channels' argument");
    let main: MigrationAddress | undefined;
    let cpr: MigrationAddress | undefined;
    if (hasUri) {
      const addr = addressFromUri(String(a.uri));
      if (typeof addr === 'string') return genericError(addr);
      main = addr;
    } else {
      for (const ch of a.channels as Array<{ 'channel-type': string; addr: unknown }>) {
        const addr = addressFromJson(ch.addr);
        if (typeof addr === 'string') return genericError(addr);
        if (ch['channel-type'] === 'cpr') cpr = addr;
        else if (main) return genericError('Channel list has more than one main entry');
        else main = addr;
      }
      if (!main) return genericError('Channel list has no main entry');
    }
    const mode = String(vm.params.mode ?? 'normal');
    if (mode === 'cpr-transfer') {
      if (!cpr) return genericError("missing 'cpr' migration channel");
      const region = vm.cprIncompatibleRegion();
      if (region) {
        return genericError(
          `Memory region ${region} is not compatible with CPR. share=on is required for memory-backend objects, and aux-ram-share=on is required.`,
        );
      }
    }
    vm.outgoing = new OutgoingMigration(vm, main, mode === 'cpr-transfer' ? cpr : undefined);
    vm.outgoing.start();
    return ok();
  },

  'migrate-incoming': async (vm, a) => {
    if (!vm.isIncoming || vm.runState !== 'inmigrate')
      return genericError("'-incoming' was not specified on the command line");
    if (vm.incoming && vm.incoming.status !== 'failed')
      return genericError('The incoming migration has already been started');
    const hasUri = a.uri !== undefined;
    if (hasUri === (a.channels !== undefined)) return genericError("need either 'uri' or 'channels' argument");
    let addr: MigrationAddress | string;
    if (hasUri) addr = addressFromUri(String(a.uri));
    else {
      const chs = a.channels as Array<{ 'channel-type': string; addr: unknown }>;
      if (chs.length !== 1 || chs[0]['channel-type'] !== 'main')
        return genericError('Channel list has more than one entries');
      addr = addressFromJson(chs[0].addr);
    }
    if (typeof addr === 'string') return genericError(addr);
    const inc = new IncomingMigration(vm, addr, a['exit-on-error'] !== false);
    vm.incoming = inc;
    try {
      await inc.listen();
    } catch (e) {
      vm.incoming = undefined;
      return genericError((e as Error).message);
    }
    return ok();
  },

  migrate_cancel: (vm) => {
    vm.outgoing?.cancel();
    return ok();
  },

  'migrate-continue': (vm, a) => {
    const m = vm.outgoing;
    if (!m || m.status !== a.state) {
      return genericError(`Migration not in expected state: ${m?.status ?? 'none'}`);
    }
    m.continueFromPreSwitchover();
    return ok();
  },

  'query-migrate': (vm) => {
    const info = vm.outgoing?.info() ?? vm.incoming?.info() ?? {};
    return ok(shape(vm, vm.schema.retType('query-migrate'), info));
  },

  netdev_add: (vm, a) => {
    const { type, id, ...opts } = a;
    const e = vm.addNetdev({ id: String(id), type: String(type), opts }, true);
    return e ? genericError(e.replace(/ for netdev$/, '')) : ok();
  },

  netdev_del: (vm, a) => {
    const n = vm.netdevs.get(String(a.id));
    if (!n) return { error: { class: 'DeviceNotFound', desc: `Device '${String(a.id)}' not found` } };
    vm.closeBackend(n);
    vm.netdevs.delete(n.id);
    return ok();
  },

  device_add: (vm, a) => {
    const { driver, id, bus: _bus, ...props } = a;
    const e = vm.addDevice(
      {
        driver: String(driver),
        ...(id !== undefined ? { id: String(id) } : {}),
        props: props as Record<string, string | boolean | number>,
      },
      true,
    );
    return e ? genericError(e) : ok();
  },

  'object-add': (vm, a) => {
    const { 'qom-type': qomType, id, ...props } = a;
    const e = vm.addObject({ qomType: String(qomType), id: String(id), props });
    return e ? genericError(e) : ok();
  },

  'query-backend-transfer-support': (vm) => ok(vm.transferableDevicePaths().map((path) => ({ path }))),

  // Simulator-only commands (not in the served schema).
  'x-sim-inject-fault': (vm, a) => {
    if (!isFaultPhase(a.phase)) return genericError(`Parameter 'phase' does not accept value '${String(a.phase)}'`);
    if (!isFaultAction(a.action)) return genericError(`Parameter 'action' does not accept value '${String(a.action)}'`);
    vm.faults.inject({ phase: a.phase, action: a.action });
    vm.ledger.log('fault-injected', { phase: a.phase, action: a.action });
    vm.notifyFaultsChanged();
    return ok();
  },

  'x-sim-clear-faults': (vm, a) => {
    if (a.phase !== undefined && !isFaultPhase(a.phase))
      return genericError(`Parameter 'phase' does not accept value '${String(a.phase)}'`);
    vm.faults.clear(a.phase as Parameters<typeof vm.faults.clear>[0]);
    vm.notifyFaultsChanged();
    return ok();
  },

  'x-sim-query': (vm) =>
    ok({
      pid: vm.owner.pid,
      instance: vm.owner.instance,
      dialect: vm.sim.dialect.name,
      version: vm.sim.version,
      counter: vm.counter(),
      faults: vm.faults.list(),
      backends: [...vm.netdevs.values()].flatMap((n) => (n.backend ? [{ netdev: n.id, ...n.backend }] : [])),
      fds: vm.heldFds(),
      ...(vm.ram ? { ram: vm.ram } : {}),
      ...(vm.ramOverwrittenBy !== undefined ? { 'ram-overwritten-by': vm.ramOverwrittenBy } : {}),
    }),
};

/** Dispatch one negotiated command: fault hooks, existence, schema check, handler. */
export async function executeCommand(vm: Machine, name: string, args: Record<string, unknown>): Promise<QmpResult> {
  if (vm.hung || vm.dead) return { noReply: true };
  const simOnly = name.startsWith('x-sim-');
  if (!simOnly) {
    const f = vm.phaseFault('qmp');
    if (f === 'crash' || f === 'hang') return { noReply: true };
    if (f === 'error') return genericError(`simulated fault: ${name} failed (qmp:error)`);
    if (vm.faults.isSlow('qmp')) await new Promise((r) => setTimeout(r, vm.sim.slowMs));
  }
  const handler = HANDLERS[name];
  if (!simOnly && !vm.schema.hasCommand(name)) {
    return { error: { class: 'CommandNotFound', desc: `The command ${name} has not been found` } };
  }
  if (!simOnly) {
    const err = vm.checker.checkArgs(name, args);
    if (err) return genericError(err);
  }
  if (!handler) return genericError(`The simulator does not implement ${name}`);
  return handler(vm, args);
}
