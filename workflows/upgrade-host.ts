// Workflow `upgradeHost`: the VMs of one host, each by a child `upgradeVm`, at most `vmsAtOnce` at a time,
// only while the rollout's gate is open and a maintenance window is open. A child of `rollout`.
//
// The rollout steers it with the `hostControl` signal (gate run | hold | abort, and acknowledgements); it
// reports to the rollout with `hostReport` signals (counts, VMs in flight, VMs finished since the last
// report). After a failed VM it starts nothing new until the rollout has acknowledged that report, so a
// failure budget that runs out stops every host before its next VM. Past `historyEvents` it stops
// starting VMs, lets those in flight finish and continues as new. The bookkeeping is the pure
// decisions/host-state.ts; this file does what it decides. Deterministic: no I/O here.
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
import {
  beginReport,
  carryOf,
  clip,
  hostProgressOf,
  initialHostState,
  isDone,
  isIdle,
  mayContinueAsNew,
  mayStartVm,
  onControl,
  reportSent,
  startDraining,
  startNextVm,
  takeInventory,
  vmFinished,
  waitsForWindow,
  type HostControl,
  type HostProgress,
  type HostReport,
  type HostState,
  type ListedVm,
  type UpgradeHostInput,
  type VmFinished,
} from './decisions/host-state';
import { msUntilWindowChange, windowState } from './decisions/windows';
import { reasonOf } from './failures';
import { hostTaskQueue, messageNames, workflowIds } from './names';
import { upgradeVmSearchAttributes } from './search-attributes';
import { upgradeVm, type UpgradeVmResult } from './upgrade-vm';

export {
  zeroCounts,
  type Gate,
  type HostCarry,
  type HostControl,
  type HostProgress,
  type HostReport,
  type OutcomeCounts,
  type UpgradeHostInput,
  type VmFinished,
} from './decisions/host-state';

/** Metrics and logs leave the workflow through this sink (workers/telemetry.ts). */
export interface FleetSinks extends Sinks {
  fleet: {
    vmFinished(f: VmFinished & { hostId: string; rolloutId: string }): void;
    rolloutVms(rolloutId: string, byState: Record<string, number>): void;
  };
}

export const hostControlSignal = defineSignal<[HostControl]>(messageNames.hostControlSignal);
export const hostReportSignal = defineSignal<[HostReport]>(messageNames.hostReportSignal);
export const hostProgressQuery = defineQuery<HostProgress>(messageNames.progressQuery);

export function upgradeVmWorkflowId(hostId: string, vmId: string): string {
  return workflowIds.upgradeVm(hostId, vmId);
}

/** Changes of the workflow's shape, each guarded by `patched` so histories recorded before replay. */
export const patches = {
  /** Continue as new only once the last report was delivered (see the loop). */
  reportBeforeContinueAsNew: 'report-before-continue-as-new',
} as const;

/** One run of upgradeHost: its input, its state (replaced by each transition) and what acts for it. */
class HostRun {
  st: HostState;
  readonly vmScope: CancellationScope;
  readonly sinks = proxySinks<FleetSinks>();
  readonly host: HostActivities;
  readonly rollout: ReturnType<typeof getExternalWorkflowHandle>;

  constructor(readonly input: UpgradeHostInput) {
    this.st = initialHostState(input.carry, input.gate, input.gateSeq);
    this.vmScope = new CancellationScope();
    this.host = proxyActivities<HostActivities>({
      taskQueue: hostTaskQueue(input.hostId),
      startToCloseTimeout: '60s',
      scheduleToCloseTimeout: '5m',
      retry: { initialInterval: '1s', maximumInterval: '20s', maximumAttempts: 10 },
    });
    this.rollout = getExternalWorkflowHandle(input.rolloutWorkflowId);
  }

  windowOpen(): boolean {
    return windowState(this.input.windows, Date.now()).open;
  }

  onControl(ctl: HostControl): void {
    const { state, cancelInFlight } = onControl(this.st, ctl);
    this.st = state;
    if (cancelInFlight) this.vmScope.cancel();
  }

  progress(): HostProgress {
    return hostProgressOf(this.st, {
      hostId: this.input.hostId,
      attempt: this.input.attempt,
      windowOpen: this.windowOpen(),
      nextWindowChangeInMs: msUntilWindowChange(this.input.windows, Date.now()),
    });
  }

  /** Reports to the rollout; a rollout that cannot be reached (terminated, or outlived) stops the host. */
  async send(final = false, error?: string): Promise<HostReport> {
    const { hostId, attempt } = this.input;
    const { state, report } = beginReport(this.st, { hostId, attempt, windowOpen: this.windowOpen() }, final, error);
    this.st = state;
    let delivered = true;
    try {
      await this.rollout.signal(hostReportSignal, report);
    } catch (err) {
      if (!this.st.orphaned) log.warn('rollout unreachable; stopping', { hostId, error: reasonOf(err) });
      delivered = false;
    }
    this.st = reportSent(this.st, delivered);
    return report;
  }

  /** The inventory could not be read: the host's only, final report says why. */
  hostFailed(err: unknown): Promise<HostReport> {
    const error = `cannot list the VMs of ${this.input.hostId}: ${reasonOf(err)}`;
    log.warn('host failed', { hostId: this.input.hostId, error });
    return this.send(true, error);
  }

  /** The VMs to work on, from the inventory. */
  takeInventory(vms: ListedVm[]): void {
    const { state, recorded } = takeInventory(this.st, vms, this.input, Date.now());
    this.st = state;
    for (const f of recorded) this.announce(f);
  }

  /** What a finished VM leaves besides the state: a metric and a log line. */
  announce(f: VmFinished): void {
    const { hostId, rolloutId } = this.input;
    this.sinks.fleet.vmFinished({ ...f, hostId, rolloutId });
    log.info('vm finished', { hostId, vmId: f.vmId, outcome: f.outcome, reason: f.reason, strategy: f.strategy });
  }

  /** Starts VMs while the gate, the window, the ack and the concurrency allow. */
  startVms(): void {
    while (mayStartVm(this.st, this.input.vmsAtOnce, this.windowOpen())) {
      const { state, vmId } = startNextVm(this.st);
      this.st = state;
      void this.vmScope.run(() => this.runVm(vmId));
    }
  }

  /** One VM by a child upgradeVm; whatever happens, it ends as a finished VM. */
  async runVm(vmId: string): Promise<void> {
    const { hostId, target, policy, rolloutId } = this.input;
    let f: VmFinished;
    try {
      const child = await startChild(upgradeVm, {
        workflowId: upgradeVmWorkflowId(hostId, vmId),
        args: [{ hostId, vmId, target, policy }],
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
        typedSearchAttributes: upgradeVmSearchAttributes({ hostId, vmId, target, rolloutId }),
      });
      f = finishedOf(vmId, await child.result());
    } catch (err) {
      f = notFinishedOf(hostId, vmId, err);
    }
    this.st = vmFinished(this.st, f);
    this.announce(f);
  }

  /** Clears the wake-up flag; how long to wait at most (until the window opens or closes). */
  sleep(): number | undefined {
    const wake = waitsForWindow(this.st) ? msUntilWindowChange(this.input.windows, Date.now()) : undefined;
    this.st = { ...this.st, changed: false };
    return wake;
  }
}

function finishedOf(vmId: string, r: UpgradeVmResult): VmFinished {
  const f: VmFinished = { vmId, outcome: r.outcome, at: Date.now() };
  if (r.reason) f.reason = clip(r.reason);
  if (r.strategy) f.strategy = r.strategy;
  if (r.migration) {
    f.totalTimeMs = r.migration.totalTimeMs;
    f.downtimeMs = r.migration.downtimeMs;
  }
  return f;
}

/** A VM whose workflow did not end with a result. */
function notFinishedOf(hostId: string, vmId: string, err: unknown): VmFinished {
  if (err instanceof WorkflowExecutionAlreadyStartedError) {
    const reason = `another upgrade of ${vmId} is running (${upgradeVmWorkflowId(hostId, vmId)})`;
    return { vmId, outcome: 'failed', reason, at: Date.now() };
  }
  if (isCancellation(err))
    return { vmId, outcome: 'cancelled', reason: 'rollout aborted: upgrade cancelled', at: Date.now() };
  return { vmId, outcome: 'failed', reason: clip(reasonOf(err)), at: Date.now() };
}

export async function upgradeHost(input: UpgradeHostInput): Promise<HostReport> {
  const run = new HostRun(input);
  setHandler(hostControlSignal, (ctl) => run.onControl(ctl));
  setHandler(hostProgressQuery, () => run.progress());

  // The inventory, once per host run.
  if (!input.carry) {
    let vms;
    try {
      vms = (await run.host.listVms({})).vms;
    } catch (err) {
      return run.hostFailed(err);
    }
    run.takeInventory(vms);
  }

  for (;;) {
    const info = workflowInfo();
    run.st = startDraining(run.st, info.historyLength >= input.historyEvents || info.continueAsNewSuggested);
    run.startVms();
    const idle = isIdle(run.st);
    if (isDone(run.st)) return run.send(true);
    if (run.st.dirty && !run.st.sending) void run.send();
    // A report just sent must reach the rollout before this run ends: Temporal drops a signal whose sender
    // closed before the signal was delivered (the run that continued as new lost its last report, and with
    // it the failures it listed). So the quiet moment is judged after send(), not before.
    const quiet = patched(patches.reportBeforeContinueAsNew) ? isIdle(run.st) : idle;
    if (mayContinueAsNew(run.st, quiet)) {
      log.info('continuing as new', { hostId: input.hostId, runs: run.st.runs, pending: run.st.pending.length });
      await continueAsNew<typeof upgradeHost>({ ...input, carry: carryOf(run.st) });
    }
    // Wake on a signal, a VM finishing, a report sent, or the window opening or closing.
    const wake = run.sleep();
    if (wake === undefined) await condition(() => run.st.changed);
    else await condition(() => run.st.changed, wake);
  }
}
