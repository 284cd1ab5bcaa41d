// A simulated QEMU as its parts see it: the machine's state and the operations that the QMP commands
// (commands.ts, hmp.ts, qom.ts) and the migrations (migration.ts) use. SimulatedQemu (vm.ts) implements it;
// the parts depend on this interface, never on vm.ts, so vm.ts can build on them without an import cycle.
import type { DeviceConfig, NetdevConfig, ObjectConfig, SimOptions, VmConfig } from './args';
import type { BackendKind } from './dialects';
import type { DeviceModel } from './devices';
import type { FaultPhase, FaultRegistry } from './faults';
import type { FdTable, HeldFd, SimRam } from './fds';
import type { Ledger, Owner } from './ledger';
import type { SchemaChecker, ServedSchema } from './schema';

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
  backend?: {
    kind: BackendKind;
    name: string;
    state: 'open' | 'deferred' | 'gone';
    generated: boolean;
    /** `fd=`/`fds=`: the inherited fds (duplicates of another process's tap) it was opened through. */
    viaFds?: number[];
    /** The fds this process holds for it while open (one per tap queue). */
    fds?: number[];
  };
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

export type OutgoingStatus =
  'setup' | 'active' | 'pre-switchover' | 'device' | 'cancelling' | 'cancelled' | 'failed' | 'completed';
export type IncomingStatus = 'setup' | 'active' | 'completed' | 'failed';

/** An outgoing migration (migration.ts OutgoingMigration) as the commands drive it. */
export interface OutgoingJob {
  status: OutgoingStatus;
  continueFromPreSwitchover(): void;
  isActive(): boolean;
  start(): void;
  cancel(): void;
  destroy(): void;
  info(): Record<string, unknown>;
}

/** An incoming migration (migration.ts IncomingMigration) as the commands drive it. */
export interface IncomingJob {
  status: IncomingStatus;
  listen(): Promise<void>;
  destroy(): void;
  info(): Record<string, unknown>;
}

/** A simulated QEMU, as the QMP commands and the migrations see it (SimulatedQemu in vm.ts). */
export interface Machine {
  readonly sim: SimOptions;
  readonly cfg: VmConfig;
  readonly schema: ServedSchema;
  readonly checker: SchemaChecker;
  readonly owner: Owner;
  readonly ledger: Ledger;
  readonly faults: FaultRegistry;
  readonly machineType: string;
  readonly memBytes: number;
  runState: RunState;
  autostart: boolean;
  hung: boolean;
  dead: boolean;
  readonly netdevs: Map<string, Netdev>;
  readonly devices: Device[];
  readonly objects: Map<string, MemoryObject>;
  memoryBackend: string;
  readonly fdTable: FdTable;
  ram?: SimRam;
  ramOverwrittenBy?: string;
  readonly params: Record<string, unknown>;
  readonly caps: Map<string, boolean>;
  readonly paramsSet: Set<string>;
  outgoing?: OutgoingJob;
  incoming?: IncomingJob;
  readonly isIncoming: boolean;
  startMonitorsAndIncoming(): Promise<void>;
  greeting(): Record<string, unknown>;
  packageString(): string;
  counter(): number;
  setCounter(value: number): void;
  setRunState(next: RunState): void;
  vmStop(state: RunState): void;
  vmStart(): void;
  emitEvent(event: string, data?: Record<string, unknown>): void;
  emitMigrationEvent(event: 'MIGRATION' | 'MIGRATION_PASS', data: Record<string, unknown>): void;
  phaseFault(phase: FaultPhase): 'error' | 'slow' | 'crash' | 'hang' | undefined;
  faultsChanged(): Promise<void>;
  notifyFaultsChanged(): void;
  quit(reason?: 'host-qmp-quit' | 'host-signal'): void;
  exit(code: number): void;
  closeBackend(n: Netdev): void;
  heldFds(): HeldFd[];
  stderr(line: string): void;
  addObject(o: ObjectConfig): string | undefined;
  ramIgnored(): boolean;
  cprIncompatibleRegion(): string | undefined;
  addNetdev(n: NetdevConfig, hotplug: boolean): string | undefined;
  claimBackend(n: Netdev): string | undefined;
  deviceProperties(driver: string): Record<string, 'str' | 'bool' | 'int32' | 'uint32' | 'uint16' | 'OnOffAuto'>;
  addDevice(d: DeviceConfig, hotplug: boolean): string | undefined;
  findDevice(idOrPath: string): { device: Device; child: boolean } | undefined;
  transferableDevicePaths(): string[];
  selectTransfers(): string[];
  ramBlockName(): string;
}
