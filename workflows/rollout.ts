// Workflow `rollout`: a QEMU version across a fleet. Preflight (each host's worker polls its queue, per
// Temporal, and allows the target label), then waves of hosts in order — a canary first — each host by a
// child `upgradeHost`, at most `concurrency.hosts` at once, only inside maintenance windows, pausing itself
// when the failure budget runs out, waiting for approvals between waves when the plan asks. Operators
// steer it with updates (pause, resume, abort, approve, retry) and read it with the `progress` query.
// Past `limits.historyEvents` it continues as new, carrying its state; running hosts are adopted (they
// are started with ParentClosePolicy ABANDON and report by signal to the rollout's workflow id).
// The bookkeeping is the pure decisions/rollout-state.ts (and progress-view.ts); this file does what it
// decides. Deterministic: no I/O here.
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  defineQuery,
  defineUpdate,
  getExternalWorkflowHandle,
  log,
  ParentClosePolicy,
  proxyActivities,
  proxySinks,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { FleetActivities } from '../activities/fleet/task-queues';
import { rolloutProgress, type RolloutProgress, type RolloutResult } from './decisions/progress-view';
import type { RolloutPlan } from './decisions/rollout-plan';
import {
  abort,
  abortedIfIdle,
  abortingMessage,
  advanceWaves,
  applyReport,
  approve,
  completeIfDone,
  confirmation,
  controlFor,
  hostFinished,
  hostRunInput,
  hostsToControl,
  isIdle,
  isRunningAttempt,
  mayStartHosts,
  newRollout,
  pause,
  pausedMessage,
  preflightDone,
  resume,
  retriedMessage,
  retry,
  startAttempt,
  unconfirmedHosts,
  validateAbort,
  validateApprove,
  validatePause,
  validateResume,
  validateRetry,
  type Confirmation,
  type HostEntry,
  type PreflightResult,
  type RolloutCarry,
  type UpdateAck,
} from './decisions/rollout-state';
import { hostsToStart } from './decisions/waves';
import { msUntilWindowChange, windowState } from './decisions/windows';
import { reasonOf } from './failures';
import { preflight } from './fleet-hosts';
import { messageNames } from './names';
import { hostKey, phaseKey, rolloutKey, targetKey } from './search-attributes';
import { hostControlSignal, hostReportSignal, upgradeHost, type FleetSinks, type HostReport } from './upgrade-host';

export type { RolloutProgress, RolloutResult } from './decisions/progress-view';
export {
  hostWorkflowId,
  type FailureEntry,
  type HostEntry,
  type PreflightResult,
  type RolloutCarry,
  type RolloutStatus,
  type UpdateAck,
} from './decisions/rollout-state';

/** How long pause and abort wait for the running hosts to confirm the new gate. */
const GATE_CONFIRM_MS = 30_000;

export interface RolloutInput {
  plan: RolloutPlan;
  /** A retry run of a finished rollout: only these hosts, and on each only these VMs (null: all). */
  only?: Record<string, string[] | null>;
  carry?: RolloutCarry;
}

export const rolloutProgressQuery = defineQuery<RolloutProgress>(messageNames.progressQuery);
export const pauseUpdate = defineUpdate<UpdateAck, [{ reason?: string }]>(messageNames.pauseUpdate);
export const resumeUpdate = defineUpdate<UpdateAck, []>(messageNames.resumeUpdate);
export const abortUpdate = defineUpdate<UpdateAck, [{ reason?: string; rollBackInFlight?: boolean }]>(
  messageNames.abortUpdate,
);
export const approveUpdate = defineUpdate<UpdateAck, [{ wave?: number }]>(messageNames.approveUpdate);
export const retryUpdate = defineUpdate<UpdateAck, [{ vms?: string[] }]>(messageNames.retryUpdate);

/** One run of the rollout workflow: its state, and what acts for it (host starts, signals, announcements). */
class RolloutRun {
  readonly plan: RolloutPlan;
  readonly s: RolloutCarry;
  readonly byId: Map<string, HostEntry>;
  readonly rolloutWorkflowId = workflowInfo().workflowId;
  readonly sinks = proxySinks<FleetSinks>();
  readonly fleet = proxyActivities<FleetActivities>({ startToCloseTimeout: '30s', retry: { maximumAttempts: 3 } });
  /** The main loop's wake-up. */
  changed = false;
  startsInFlight = 0;
  signalsInFlight = 0;

  constructor(input: RolloutInput) {
    this.plan = input.plan;
    this.s = input.carry ?? newRollout(input.plan, input.only, Date.now());
    this.s.runs += 1;
    this.byId = new Map(this.s.hosts.map((h) => [h.hostId, h]));
  }

  /** Runs a transition of the state; a new status is announced (log, search attribute) and wakes the loop. */
  change<T>(transition: (s: RolloutCarry) => T): T {
    const from = this.s.status;
    const out = transition(this.s);
    if (this.s.status !== from) {
      log.info('rollout status', { rolloutId: this.plan.name, from, to: this.s.status });
      upsertSearchAttributes([{ key: phaseKey, value: this.s.status }]);
      this.changed = true;
    }
    return out;
  }

  progress(): RolloutProgress {
    return rolloutProgress(this.s, this.plan, Date.now(), workflowInfo().historyLength);
  }

  publish(): void {
    this.sinks.fleet.rolloutVms(this.plan.name, this.progress().vms);
  }

  result(outcome: RolloutResult['outcome']): RolloutResult {
    return { ...this.progress(), outcome };
  }

  /** Sends the current gate (and an acknowledgement) to a running host. */
  control(h: HostEntry, ack?: number): void {
    const ctl = controlFor(this.s, h, ack);
    if (!ctl) return;
    this.signalsInFlight += 1;
    getExternalWorkflowHandle(h.workflowId!)
      .signal(hostControlSignal, ctl)
      .catch((err) => log.warn('host control signal failed', { hostId: h.hostId, error: reasonOf(err) }))
      .finally(() => {
        this.signalsInFlight -= 1;
        this.changed = true;
      });
  }

  hostFinished(h: HostEntry, r: HostReport | undefined, error?: string): void {
    this.change((s) => hostFinished(s, h, r, error, this.plan.failureBudget, Date.now()));
    this.changed = true;
  }

  onReport(r: HostReport): void {
    const out = this.change((s) => applyReport(s, this.byId.get(r.hostId), r, this.plan.failureBudget, Date.now()));
    if (!out.taken) return;
    if (out.ack !== undefined) this.control(out.host, out.ack);
    this.changed = true;
  }

  /** Waits until every running host confirmed the current gate (or the deadline); what is in flight then. */
  async confirmed(): Promise<Confirmation> {
    const seq = this.s.gateSeq;
    this.changed = true; // let the main loop send the gate
    await condition(() => this.s.gateSeq !== seq || unconfirmedHosts(this.s, seq).length === 0, GATE_CONFIRM_MS);
    return confirmation(this.s, seq);
  }

  /** The preflight's results taken; true when they end the rollout. */
  preflightDone(results: PreflightResult[]): boolean {
    for (const p of results.filter((x) => !x.ok)) log.warn('preflight failed', { hostId: p.hostId, reason: p.reason });
    return this.change((s) => preflightDone(s, results, this.plan.preflight.onFailure));
  }

  /** Waves: past finished ones, stopping at an approval gate; then completed, or aborted, when nothing runs. */
  advance(): void {
    for (const wave of this.change((s) => advanceWaves(s, this.plan))) {
      log.info('wave started', { rolloutId: this.plan.name, wave: this.plan.waves[wave]?.name });
    }
    const idle = isIdle(this.s, this.startsInFlight);
    this.change((s) => completeIfDone(s, this.plan.waves.length, idle));
    this.change((s) => abortedIfIdle(s, idle));
  }

  /** Starts hosts of the current wave while the rollout runs and a window is open. */
  startHosts(): void {
    if (!mayStartHosts(this.s) || !windowState(this.plan.windows, Date.now()).open) return;
    for (const id of hostsToStart(this.s.hosts, this.s.currentWave, this.plan.concurrency.hosts)) {
      this.startHost(this.byId.get(id)!);
    }
  }

  /** The host's next attempt, by a child upgradeHost; its result backs up its final report. */
  startHost(h: HostEntry): void {
    const start = startAttempt(this.s, h, this.rolloutWorkflowId);
    const { attempt } = start;
    const { plan } = this;
    this.startsInFlight += 1;
    startChild(upgradeHost, {
      workflowId: start.workflowId,
      args: [hostRunInput(plan, this.rolloutWorkflowId, h.hostId, start)],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
      typedSearchAttributes: [
        { key: rolloutKey, value: plan.name },
        { key: hostKey, value: h.hostId },
        { key: targetKey, value: plan.target },
      ],
    })
      .then((child) => {
        // A child of this run: its result backs up its final report.
        child.result().then(
          (r) => {
            if (isRunningAttempt(h, attempt)) this.hostFinished(h, r, r.error);
          },
          (err) => {
            if (isRunningAttempt(h, attempt)) this.hostFinished(h, undefined, `upgradeHost failed: ${reasonOf(err)}`);
          },
        );
      })
      .catch((err) => {
        if (isRunningAttempt(h, attempt)) this.hostFinished(h, undefined, `cannot start upgradeHost: ${reasonOf(err)}`);
      })
      .finally(() => {
        this.startsInFlight -= 1;
        this.changed = true;
      });
  }

  /** Tells running hosts about a changed gate. */
  sendGates(): void {
    for (const h of hostsToControl(this.s)) this.control(h);
  }

  /** Long history, and nothing on its way (host starts, signals, update handlers): time to continue as new. */
  mayContinueAsNew(): boolean {
    const wi = workflowInfo();
    const long = wi.historyLength >= this.plan.limits.historyEvents || wi.continueAsNewSuggested;
    return long && this.startsInFlight === 0 && this.signalsInFlight === 0 && allHandlersFinished();
  }

  /** Clears the wake-up flag; how long to wait at most (until a window opens or closes). */
  sleep(): number | undefined {
    const wake = msUntilWindowChange(this.plan.windows, Date.now());
    this.changed = false;
    return wake;
  }
}

/** The operators' updates: each validated against the state, then applied to it. */
function setUpdateHandlers(run: RolloutRun): void {
  const { s } = run;
  setHandler(
    pauseUpdate,
    async (arg) => {
      if (!run.change((st) => pause(st, arg?.reason))) return { status: s.status, message: 'already paused' };
      const c = await run.confirmed();
      return { status: s.status, message: pausedMessage(c), ...c };
    },
    { validator: (_arg) => validatePause(s) },
  );
  setHandler(
    resumeUpdate,
    () => {
      const message = run.change(resume);
      return { status: s.status, message };
    },
    { validator: () => validateResume(s) },
  );
  setHandler(
    abortUpdate,
    async (arg) => {
      run.change((st) => abort(st, arg?.reason, arg?.rollBackInFlight === true));
      const c = await run.confirmed();
      return { status: s.status, message: abortingMessage(s, c), ...c };
    },
    { validator: (_arg) => validateAbort(s) },
  );
  setHandler(
    approveUpdate,
    () => {
      const next = run.change(approve);
      return { status: s.status, message: `wave ${run.plan.waves[next]?.name ?? next} approved` };
    },
    { validator: (arg) => validateApprove(s, arg?.wave, run.plan.waves.length) },
  );
  setHandler(
    retryUpdate,
    (arg) => {
      const n = retry(s, arg?.vms);
      run.changed = true;
      return { status: s.status, message: retriedMessage(s, n) };
    },
    { validator: (arg) => validateRetry(s, arg?.vms) },
  );
}

export async function rollout(input: RolloutInput): Promise<RolloutResult> {
  const { plan } = input;
  const run = new RolloutRun(input);
  const { s } = run;
  setHandler(hostReportSignal, (r) => run.onReport(r));
  setHandler(rolloutProgressQuery, () => run.progress());
  setUpdateHandlers(run);
  upsertSearchAttributes([
    { key: rolloutKey, value: plan.name },
    { key: targetKey, value: plan.target },
    { key: phaseKey, value: s.status },
  ]);

  // Preflight: from Temporal's pollers, then a short-deadline question to each host's worker.
  if (s.status === 'preflight') {
    const hostIds = s.hosts.map((h) => h.hostId);
    const results = await preflight(hostIds, plan.target, plan.preflight.timeoutSec, run.fleet);
    if (run.preflightDone(results)) return run.result('preflight-failed');
  }

  for (;;) {
    run.advance();
    if (s.status === 'completed' || s.status === 'aborted') {
      await condition(() => run.signalsInFlight === 0 && allHandlersFinished());
      run.publish();
      return run.result(s.status);
    }
    run.startHosts();
    run.sendGates();
    run.publish();
    if (run.mayContinueAsNew()) {
      log.info('continuing as new', {
        rolloutId: plan.name,
        runs: s.runs,
        historyLength: workflowInfo().historyLength,
      });
      await continueAsNew<typeof rollout>({ plan, carry: s });
    }
    const wake = run.sleep();
    if (wake === undefined) await condition(() => run.changed);
    else await condition(() => run.changed, wake);
  }
}
