// The QEMU simulator's API. A simulated QEMU speaks QMP like a (patched) QEMU on a UNIX socket, takes
// QEMU's command line, migrates to another simulated QEMU over a real UNIX socket, records backend
// ownership and lifecycle events (ledger) and injects faults. Run one per process (qemu-sim.js) or
// many in one Node process (SimulatedQemu).
import path from 'node:path';
import { projectRoot } from '../real-parts';
import { SimulatedQemu, SimulatedQemuOptions } from './vm';

export { SimulatedQemu } from './vm';
export type { SimulatedQemuOptions } from './vm';
export { COUNTER_ADDR, COUNTER_PER_MS } from './machine';
export type { Machine, RunState } from './machine';
export { parseArgs, CommandLineError, PROGNAME } from './args';
export type { SimOptions, VmConfig } from './args';
export { DIALECTS, dialectByName } from './dialects';
export type { DialectName, DialectSpec, BackendKind } from './dialects';
export { FAULT_PHASES, FAULT_ACTIONS, SLOW_REPLY_MS, parseFaultSpec } from './faults';
export type { FaultPhase, FaultAction, FaultSpec } from './faults';
export { readLedger, readLedgerEvents, backendOwner, backendKey, runningIntervals } from './ledger';
export type { LedgerEvent, LedgerSnapshot, BackendRecord, Owner } from './ledger';
export { servedSchema, baseSchemaFor, loadBaseSchema, schemaFixturePath, SchemaChecker } from './schema';
export { RawQmp } from './raw-qmp';
export { FIRST_INHERITED_FD } from './fds';
export type { SimFd, SimRam, HeldFd } from './fds';

/** The executable launcher: exec it like qemu-system-x86_64 (after `npm run build`). */
export const simulatorLauncher = path.join(projectRoot, 'infra', 'simulator', 'qemu-sim.js');

/** Construct and start an in-process simulated QEMU; rejects with QEMU's startup error text. */
export async function launchSimulatedQemu(argv: string[], opts: SimulatedQemuOptions = {}): Promise<SimulatedQemu> {
  const vm = new SimulatedQemu(argv, opts);
  await vm.start();
  return vm;
}
