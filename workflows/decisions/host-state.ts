// The bookkeeping of one `upgradeHost` run as one value with pure transitions. Pure: no I/O, no clock (the
// workflow passes the time and whether a maintenance window is open).
//
// The host works its pending VMs while the rollout's gate is `run`, no more than `vmsAtOnce` at a time.
// After a failed VM it starts nothing new until the rollout has acknowledged the report that carried it,
// so a failure budget that runs out stops every host before its next VM. A gate of `abort` is final.
import { isFailure, type VmOutcome } from './budget';
import type { MigrationPolicy } from './policy';
import type { MaintenanceWindow } from './windows';

export type Gate = 'run' | 'hold' | 'abort';

export interface HostControl {
  gate: Gate;
  /** Increases with every change of the rollout's gate; the host echoes the last it applied. */
  gateSeq: number;
  /** The highest report seq the rollout has processed. */
  ack?: number;
  /** With gate abort: cancel VMs in flight (each rolls back, or finishes if it is past the point of no return). */
  rollBackInFlight?: boolean;
}

export interface VmFinished {
  vmId: string;
  outcome: VmOutcome;
  reason?: string;
  strategy?: string;
  totalTimeMs?: number;
  downtimeMs?: number | null;
  /** Workflow time, ms since the epoch. */
  at: number;
}

export type OutcomeCounts = Record<VmOutcome, number>;

export function zeroCounts(): OutcomeCounts {
  return {
    upgraded: 0,
    'already-on-target': 0,
    refused: 0,
    'rolled-back': 0,
    failed: 0,
    'needs-operator': 0,
    cancelled: 0,
  };
}

export interface HostReport {
  hostId: string;
  attempt: number;
  seq: number;
  /** VMs this run of the host works on, finished or not. */
  total: number;
  pending: number;
  inFlight: string[];
  counts: OutcomeCounts;
  /** VMs finished since the previous report. */
  finished: VmFinished[];
  gate: Gate;
  /** The rollout's gate change this host has applied: after it, the host starts only what `gate` allows. */
  gateSeq: number;
  windowOpen: boolean;
  /** The host waits for the rollout to acknowledge a failure before it starts another VM. */
  awaitingAck: boolean;
  /** Runs of this workflow (continue-as-new). */
  runs: number;
  /** The last report of this host run. */
  final?: boolean;
  /** The host could not be worked on (its inventory could not be read). */
  error?: string;
}

/** What one run of upgradeHost hands to the next (continue-as-new). */
export interface HostCarry {
  pending: string[];
  total: number;
  counts: OutcomeCounts;
  seq: number;
  ackNeeded: number;
  acked: number;
  gate: Gate;
  gateSeq: number;
  runs: number;
}

export interface UpgradeHostInput {
  rolloutWorkflowId: string;
  rolloutId: string;
  hostId: string;
  /** 1 for the first run of this host in the rollout, +1 for each retry. */
  attempt: number;
  target: string;
  policy: Partial<MigrationPolicy>;
  vmsAtOnce: number;
  windows: MaintenanceWindow[];
  /** VM ids of this host left alone. */
  excludeVms: string[];
  /** Only these VM ids (a retry); all when absent. */
  only?: string[];
  gate: Gate;
  gateSeq: number;
  historyEvents: number;
  carry?: HostCarry;
}

export interface HostProgress {
  hostId: string;
  attempt: number;
  runs: number;
  gate: Gate;
  windowOpen: boolean;
  nextWindowChangeInMs?: number;
  awaitingAck: boolean;
  draining: boolean;
  total: number;
  pending: string[];
  inFlight: string[];
  counts: OutcomeCounts;
}

export interface HostState extends HostCarry {
  /** VMs started and not yet finished, in start order. */
  inFlight: string[];
  /** VMs finished since the last report. */
  finished: VmFinished[];
  /** A VM failed and no report has carried it yet. */
  unreportedFailure: boolean;
  /** Something the rollout has not been told. */
  dirty: boolean;
  /** A report is on its way to the rollout. */
  sending: boolean;
  /** Something happened since the loop last looked (its wake-up). */
  changed: boolean;
  /** History is long: start nothing, let what runs finish, then continue as new. */
  draining: boolean;
  /** The rollout could not be reached: start nothing more. */
  orphaned: boolean;
}

/** A run's first state: carried from the previous run, or fresh with the rollout's gate. */
export function initialHostState(carry: HostCarry | undefined, gate: Gate, gateSeq: number): HostState {
  return {
    pending: carry ? [...carry.pending] : [],
    total: carry?.total ?? 0,
    counts: carry ? { ...carry.counts } : zeroCounts(),
    seq: carry?.seq ?? 0,
    ackNeeded: carry?.ackNeeded ?? 0,
    acked: carry?.acked ?? 0,
    gate: carry?.gate ?? gate,
    gateSeq: carry?.gateSeq ?? gateSeq,
    runs: (carry?.runs ?? 0) + 1,
    inFlight: [],
    finished: [],
    unreportedFailure: false,
    dirty: true,
    sending: false,
    changed: false,
    draining: false,
    orphaned: false,
  };
}

export function awaitingAck(st: HostState): boolean {
  return st.unreportedFailure || st.acked < st.ackNeeded;
}

/** The rollout's control signal: a newer gate (an abort stays), an acknowledgement; cancel what runs? */
export function onControl(st: HostState, ctl: HostControl): { state: HostState; cancelInFlight: boolean } {
  const newer = ctl.gateSeq > st.gateSeq;
  const state: HostState = {
    ...st,
    ...(newer ? { gateSeq: ctl.gateSeq, gate: st.gate !== 'abort' ? ctl.gate : st.gate, dirty: true } : {}),
    ...(ctl.ack !== undefined && ctl.ack > st.acked ? { acked: ctl.ack } : {}),
    changed: true,
  };
  const cancelInFlight = ctl.gate === 'abort' && ctl.rollBackInFlight === true && st.inFlight.length > 0;
  return { state, cancelInFlight };
}

export interface ListedVm {
  vmId: string;
  label?: string;
  running: boolean;
}

export interface InventoryScope {
  hostId: string;
  target: string;
  /** VM ids of this host left alone. */
  excludeVms: string[];
  /** Only these VM ids (a retry); all when absent. */
  only?: string[];
}

/**
 * The host's inventory taken into the state: VMs in scope become pending, those already running the target
 * finish at once, and VMs a retry asked for that are no longer listed fail. `recorded`: what finished, in order.
 */
export function takeInventory(
  st: HostState,
  vms: ListedVm[],
  scope: InventoryScope,
  now: number,
): { state: HostState; recorded: VmFinished[] } {
  let state: HostState = { ...st, pending: [...st.pending] };
  const recorded: VmFinished[] = [];
  const finish = (f: VmFinished) => {
    state = recordFinished(state, f);
    recorded.push(f);
  };
  const excluded = new Set(scope.excludeVms);
  const only = scope.only ? new Set(scope.only) : undefined;
  for (const vm of vms) {
    if (excluded.has(vm.vmId) || (only && !only.has(vm.vmId))) continue;
    state.total += 1;
    if (vm.label === scope.target && vm.running) finish({ vmId: vm.vmId, outcome: 'already-on-target', at: now });
    else state.pending.push(vm.vmId);
  }
  if (only) {
    const listed = new Set(vms.map((v) => v.vmId));
    for (const vmId of scope.only ?? []) {
      if (listed.has(vmId)) continue;
      state.total += 1;
      finish({ vmId, outcome: 'failed', reason: `VM ${vmId} is not in the inventory of ${scope.hostId}`, at: now });
    }
  }
  return { state, recorded };
}

/** A VM finished: counted, listed for the next report; a failure holds new starts until acknowledged. */
export function recordFinished(st: HostState, f: VmFinished): HostState {
  return {
    ...st,
    counts: { ...st.counts, [f.outcome]: st.counts[f.outcome] + 1 },
    finished: [...st.finished, f],
    unreportedFailure: st.unreportedFailure || isFailure(f.outcome),
    dirty: true,
    changed: true,
  };
}

/** A VM in flight finished (its workflow ended, or could not start). */
export function vmFinished(st: HostState, f: VmFinished): HostState {
  return recordFinished({ ...st, inFlight: st.inFlight.filter((v) => v !== f.vmId) }, f);
}

/** Whether the next pending VM may start now. */
export function mayStartVm(st: HostState, vmsAtOnce: number, windowOpen: boolean): boolean {
  return (
    st.gate === 'run' &&
    !st.draining &&
    !awaitingAck(st) &&
    st.pending.length > 0 &&
    st.inFlight.length < vmsAtOnce &&
    windowOpen
  );
}

/** The next pending VM goes in flight. */
export function startNextVm(st: HostState): { state: HostState; vmId: string } {
  const [vmId, ...pending] = st.pending;
  if (vmId === undefined) throw new Error('no pending VM to start');
  const inFlight = st.inFlight.includes(vmId) ? st.inFlight : [...st.inFlight, vmId];
  return { state: { ...st, pending, inFlight, dirty: true }, vmId };
}

/** Nothing in flight and no report on its way. */
export function isIdle(st: HostState): boolean {
  return st.inFlight.length === 0 && !st.sending;
}

/** The run is over once idle, when the gate is abort or nothing is pending. */
export function isDone(st: HostState): boolean {
  return isIdle(st) && (st.gate === 'abort' || st.pending.length === 0);
}

export function startDraining(st: HostState, historyIsLong: boolean): HostState {
  return !st.draining && historyIsLong ? { ...st, draining: true } : st;
}

/** Draining, everything reported, `quiet` as the workflow judges it: time to continue as new. */
export function mayContinueAsNew(st: HostState, quiet: boolean): boolean {
  return quiet && st.draining && !st.dirty;
}

/** Only VMs waiting for a window make the window's edges worth waking for. */
export function waitsForWindow(st: HostState): boolean {
  return st.pending.length > 0 && st.gate === 'run';
}

export interface ReportContext {
  hostId: string;
  attempt: number;
  windowOpen: boolean;
}

/**
 * A report leaves: the next seq, a failure it carries becomes the ack the host waits for, and the finished
 * list starts again.
 */
export function beginReport(
  st: HostState,
  ctx: ReportContext,
  final = false,
  error?: string,
): { state: HostState; report: HostReport } {
  const seq = st.seq + 1;
  const next: HostState = {
    ...st,
    sending: true,
    dirty: false,
    seq,
    ...(st.unreportedFailure ? { ackNeeded: seq, unreportedFailure: false } : {}),
  };
  const report: HostReport = {
    hostId: ctx.hostId,
    attempt: ctx.attempt,
    seq,
    total: next.total,
    pending: next.pending.length,
    inFlight: [...next.inFlight],
    counts: { ...next.counts },
    finished: next.finished,
    gate: next.gate,
    gateSeq: next.gateSeq,
    windowOpen: ctx.windowOpen,
    awaitingAck: awaitingAck(next),
    runs: next.runs,
    ...(final ? { final } : {}),
    ...(error ? { error } : {}),
  };
  return { state: { ...next, finished: [] }, report };
}

/** The report reached the rollout, or not: then the rollout is gone and nothing more starts. */
export function reportSent(st: HostState, delivered: boolean): HostState {
  return { ...st, ...(delivered ? {} : { orphaned: true, gate: 'abort' as const }), sending: false, changed: true };
}

export function carryOf(st: HostState): HostCarry {
  const { pending, total, counts, seq, ackNeeded, acked, gate, gateSeq, runs } = st;
  return { pending, total, counts, seq, ackNeeded, acked, gate, gateSeq, runs };
}

export function hostProgressOf(
  st: HostState,
  ctx: ReportContext & { nextWindowChangeInMs: number | undefined },
): HostProgress {
  return {
    hostId: ctx.hostId,
    attempt: ctx.attempt,
    runs: st.runs,
    gate: st.gate,
    windowOpen: ctx.windowOpen,
    nextWindowChangeInMs: ctx.nextWindowChangeInMs,
    awaitingAck: awaitingAck(st),
    draining: st.draining,
    total: st.total,
    pending: [...st.pending],
    inFlight: [...st.inFlight],
    counts: { ...st.counts },
  };
}

/** Reasons travel in reports and failure lists: at most 500 characters. */
export function clip(s: string | undefined): string | undefined {
  return s && s.length > 500 ? `${s.slice(0, 497)}...` : s;
}
