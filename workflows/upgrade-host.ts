// Workflow `upgradeHost`: the VMs of one host, each by a child `upgradeVm`, at most `vmsAtOnce` at a time,
// only while the rollout's gate is open and a maintenance window is open. A child of `rollout`.
//
// The rollout steers it with the `hostControl` signal (gate run | hold | abort, and acknowledgements); it
// reports to the rollout with `hostReport` signals (counts, VMs in flight, VMs finished since the last
// report). After a failed VM it starts nothing new until the rollout has acknowledged that report, so a
// failure budget that runs out stops every host before its next VM. Past `historyEvents` it stops
// starting VMs, lets those in flight finish and continues as new. Deterministic: no I/O here.
import {
  CancellationScope,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  ParentClosePolicy,
  patched,
  proxyActivities,
  proxySinks,
  setHandler,
  startChild,
  workflowInfo,
  type Sinks,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError, WorkflowIdReusePolicy } from '@temporalio/common';
import type { HostActivities } from '../activities/upgrade/api';
import { isFailure, type VmOutcome } from './decisions/budget';
import type { MigrationPolicy } from './decisions/policy';
import { msUntilWindowChange, windowState, type MaintenanceWindow } from './decisions/windows';
import { upgradeVmSearchAttributes } from './search-attributes';
import { upgradeVm, type UpgradeVmResult } from './upgrade-vm';

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

/** Metrics and logs leave the workflow through this sink (activities/fleet/telemetry.ts). */
export interface FleetSinks extends Sinks {
  fleet: {
    vmFinished(f: VmFinished & { hostId: string; rolloutId: string }): void;
    rolloutVms(rolloutId: string, byState: Record<string, number>): void;
  };
}

export const hostControlSignal = defineSignal<[HostControl]>('hostControl');
export const hostReportSignal = defineSignal<[HostReport]>('hostReport');
export const hostProgressQuery = defineQuery<HostProgress>('progress');

export function upgradeVmWorkflowId(hostId: string, vmId: string): string {
  return `upgrade-vm/${hostId}/${vmId}`;
}

/** The failure's own words, through Temporal's wrapping. */
function reasonOf(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && 'cause' in e && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

const clip = (s: string | undefined) => (s && s.length > 500 ? `${s.slice(0, 497)}...` : s);

/** Changes of the workflow's shape, each guarded by `patched` so histories recorded before replay. */
export const patches = {
  /** Continue as new only once the last report was delivered (see the loop). */
  reportBeforeContinueAsNew: 'report-before-continue-as-new',
} as const;

export async function upgradeHost(input: UpgradeHostInput): Promise<HostReport> {
  const { hostId } = input;
  const sinks = proxySinks<FleetSinks>();
  const c = input.carry;
  const pending: string[] = c ? [...c.pending] : [];
  let total = c?.total ?? 0;
  const counts: OutcomeCounts = c ? { ...c.counts } : zeroCounts();
  let seq = c?.seq ?? 0;
  let ackNeeded = c?.ackNeeded ?? 0;
  let acked = c?.acked ?? 0;
  let gate: Gate = c?.gate ?? input.gate;
  let gateSeq = c?.gateSeq ?? input.gateSeq;
  const runs = (c?.runs ?? 0) + 1;
  const inFlight = new Set<string>();
  let finished: VmFinished[] = [];
  let unreportedFailure = false;
  let dirty = true;
  let sending = false;
  let changed = false;
  let draining = false;
  let orphaned = false;
  const vmScope = new CancellationScope();
  const host = proxyActivities<HostActivities>({
    taskQueue: `qemu-host.${hostId}`,
    startToCloseTimeout: '60s',
    scheduleToCloseTimeout: '5m',
    retry: { initialInterval: '1s', maximumInterval: '20s', maximumAttempts: 10 },
  });
  const rollout = getExternalWorkflowHandle(input.rolloutWorkflowId);

  const windowOpen = () => windowState(input.windows, Date.now()).open;
  const awaitingAck = () => unreportedFailure || acked < ackNeeded;

  setHandler(hostControlSignal, (ctl) => {
    if (ctl.gateSeq > gateSeq) {
      gateSeq = ctl.gateSeq;
      if (gate !== 'abort') gate = ctl.gate;
      dirty = true; // confirm the gate to the rollout
    }
    if (ctl.ack !== undefined && ctl.ack > acked) acked = ctl.ack;
    if (ctl.gate === 'abort' && ctl.rollBackInFlight && inFlight.size > 0) vmScope.cancel();
    changed = true;
  });
  setHandler(hostProgressQuery, () => ({
    hostId,
    attempt: input.attempt,
    runs,
    gate,
    windowOpen: windowOpen(),
    nextWindowChangeInMs: msUntilWindowChange(input.windows, Date.now()),
    awaitingAck: awaitingAck(),
    draining,
    total,
    pending: [...pending],
    inFlight: [...inFlight],
    counts: { ...counts },
  }));

  const report = (final: boolean, error?: string): HostReport => ({
    hostId,
    attempt: input.attempt,
    seq,
    total,
    pending: pending.length,
    inFlight: [...inFlight],
    counts: { ...counts },
    finished,
    gate,
    gateSeq,
    windowOpen: windowOpen(),
    awaitingAck: awaitingAck(),
    runs,
    ...(final ? { final } : {}),
    ...(error ? { error } : {}),
  });

  async function send(final = false, error?: string): Promise<HostReport> {
    sending = true;
    dirty = false;
    seq += 1;
    if (unreportedFailure) {
      ackNeeded = seq;
      unreportedFailure = false;
    }
    const r = report(final, error);
    finished = [];
    try {
      await rollout.signal(hostReportSignal, r);
    } catch (err) {
      // The rollout is gone (terminated, or this host outlived it): start nothing more.
      if (!orphaned) log.warn('rollout unreachable; stopping', { hostId, error: reasonOf(err) });
      orphaned = true;
      gate = 'abort';
    }
    sending = false;
    changed = true;
    return r;
  }

  function record(f: VmFinished): void {
    counts[f.outcome] += 1;
    finished.push(f);
    if (isFailure(f.outcome)) unreportedFailure = true;
    dirty = true;
    changed = true;
    sinks.fleet.vmFinished({ ...f, hostId, rolloutId: input.rolloutId });
    log.info('vm finished', { hostId, vmId: f.vmId, outcome: f.outcome, reason: f.reason, strategy: f.strategy });
  }

  async function runVm(vmId: string): Promise<void> {
    let r: UpgradeVmResult | undefined;
    let f: VmFinished;
    try {
      const child = await startChild(upgradeVm, {
        workflowId: upgradeVmWorkflowId(hostId, vmId),
        args: [{ hostId, vmId, target: input.target, policy: input.policy }],
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
        typedSearchAttributes: upgradeVmSearchAttributes({
          hostId,
          vmId,
          target: input.target,
          rolloutId: input.rolloutId,
        }),
      });
      r = await child.result();
      f = { vmId, outcome: r.outcome, at: Date.now() };
      if (r.reason) f.reason = clip(r.reason);
      if (r.strategy) f.strategy = r.strategy;
      if (r.migration) {
        f.totalTimeMs = r.migration.totalTimeMs;
        f.downtimeMs = r.migration.downtimeMs;
      }
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        f = {
          vmId,
          outcome: 'failed',
          reason: `another upgrade of ${vmId} is running (${upgradeVmWorkflowId(hostId, vmId)})`,
          at: Date.now(),
        };
      } else if (isCancellation(err)) {
        f = { vmId, outcome: 'cancelled', reason: 'rollout aborted: upgrade cancelled', at: Date.now() };
      } else {
        f = { vmId, outcome: 'failed', reason: clip(reasonOf(err)), at: Date.now() };
      }
    }
    inFlight.delete(vmId);
    record(f);
  }

  // The inventory, once per host run.
  if (!c) {
    let vms;
    try {
      vms = (await host.listVms({})).vms;
    } catch (err) {
      const error = `cannot list the VMs of ${hostId}: ${reasonOf(err)}`;
      log.warn('host failed', { hostId, error });
      return send(true, error);
    }
    const excluded = new Set(input.excludeVms);
    const only = input.only ? new Set(input.only) : undefined;
    for (const vm of vms) {
      if (excluded.has(vm.vmId) || (only && !only.has(vm.vmId))) continue;
      total += 1;
      if (vm.label === input.target && vm.running) {
        record({ vmId: vm.vmId, outcome: 'already-on-target', at: Date.now() });
      } else pending.push(vm.vmId);
    }
    if (only) {
      // A VM asked for by a retry that is no longer in the inventory.
      const listed = new Set(vms.map((v) => v.vmId));
      for (const vmId of input.only ?? []) {
        if (listed.has(vmId)) continue;
        total += 1;
        record({ vmId, outcome: 'failed', reason: `VM ${vmId} is not in the inventory of ${hostId}`, at: Date.now() });
      }
    }
  }

  for (;;) {
    const info = workflowInfo();
    if (!draining && (info.historyLength >= input.historyEvents || info.continueAsNewSuggested)) draining = true;
    while (
      gate === 'run' &&
      !draining &&
      !awaitingAck() &&
      pending.length > 0 &&
      inFlight.size < input.vmsAtOnce &&
      windowOpen()
    ) {
      const vmId = pending.shift()!;
      inFlight.add(vmId);
      dirty = true;
      void vmScope.run(() => runVm(vmId));
    }
    const idle = inFlight.size === 0 && !sending;
    if (idle && (gate === 'abort' || pending.length === 0)) {
      return send(true);
    }
    if (dirty && !sending) void send();
    // A report just sent must reach the rollout before this run ends: Temporal drops a signal whose sender
    // closed before the signal was delivered (the run that continued as new lost its last report, and with
    // it the failures it listed). So the quiet moment is judged after send(), not before.
    const quiet = patched(patches.reportBeforeContinueAsNew) ? inFlight.size === 0 && !sending : idle;
    if (quiet && draining && !dirty) {
      const carry: HostCarry = { pending, total, counts, seq, ackNeeded, acked, gate, gateSeq, runs };
      log.info('continuing as new', { hostId, runs, pending: pending.length });
      await continueAsNew<typeof upgradeHost>({ ...input, carry });
    }
    // Wake on a signal, a VM finishing, a report sent, or the window opening or closing.
    const wake = pending.length > 0 && gate === 'run' ? msUntilWindowChange(input.windows, Date.now()) : undefined;
    changed = false;
    if (wake === undefined) await condition(() => changed);
    else await condition(() => changed, wake);
  }
}
