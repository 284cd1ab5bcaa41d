// The bookkeeping of a rollout: hosts and their attempts, counts, failures, the status and the gate the
// hosts follow, and the operators' pause, resume, abort, approve and retry. Pure: no I/O, no clock (the
// workflow passes the time). The state is one object, carried across continue-as-new; transitions change
// it in place, and the workflow announces a change of `status` (search attribute, log) after each one.
import { budgetView, isFailure, type VmOutcome } from './budget';
import type { Gate, HostControl, HostReport, OutcomeCounts, UpgradeHostInput } from './host-state';
import { zeroCounts } from './host-state';
import type { RolloutPlan } from './rollout-plan';
import { needsApproval, waveFinished, type HostRunState } from './waves';

/** Failures kept in the rollout's state for `retry`; older ones are only counted. */
export const KEPT_FAILURES = 1_000;

export type RolloutStatus =
  'preflight' | 'running' | 'paused' | 'awaiting-approval' | 'aborting' | 'completed' | 'aborted' | 'preflight-failed';

const terminal: RolloutStatus[] = ['completed', 'aborted', 'preflight-failed'];

export function isTerminal(status: RolloutStatus): boolean {
  return terminal.includes(status);
}

export interface PreflightResult {
  hostId: string;
  ok: boolean;
  reason?: string;
  /** Worker identities polling the host's queue, per Temporal. */
  pollers: string[];
  labels?: string[];
}

export interface HostEntry {
  hostId: string;
  wave: number;
  state: HostRunState;
  /** Runs of upgradeHost for this host so far (retries add one). */
  attempt: number;
  workflowId?: string;
  reason?: string;
  /** Last report seq processed for the current attempt. */
  lastSeq: number;
  /** Gate change last sent to (or started with) the running host, and the last it confirmed. */
  gateSeqSent?: number;
  gateSeqAck: number;
  /** The next attempt works only on these VMs (a retry); null or absent: all. */
  only?: string[] | null;
  /** Failed VMs asked to retry while the host was running: its next attempt takes them. */
  retryQueue: string[];
  /** Counts of finished attempts (minus retried failures), plus the current attempt's snapshot. */
  base: OutcomeCounts;
  current: OutcomeCounts;
  /** Retried failures still inside `current` (the running attempt reported them). */
  adjust: OutcomeCounts;
  total: number;
  pending: number;
  inFlight: string[];
  windowOpen?: boolean;
  awaitingAck?: boolean;
  runs: number;
}

export interface FailureEntry {
  hostId: string;
  /** `*` when the host as a whole could not be worked on. */
  vmId: string;
  outcome: VmOutcome;
  reason?: string;
  at: number;
  attempt: number;
}

/** The rollout's state, carried as is across continue-as-new. */
export interface RolloutCarry {
  status: RolloutStatus;
  pausedBy?: 'operator' | 'budget';
  pauseReason?: string;
  abortReason?: string;
  rollBackInFlight: boolean;
  /** +1 at every change of the gate the hosts follow (run, hold, abort). */
  gateSeq: number;
  currentWave: number;
  approved: number[];
  hosts: HostEntry[];
  /** The latest failures (at most KEPT_FAILURES, for `retry`); older ones are only counted. */
  failures: FailureEntry[];
  /** Failures dropped from `failures` to keep the state (and each continue-as-new) bounded. */
  failuresDropped?: number;
  failedSinceResume: number;
  resumes: number;
  retried: number;
  preflight: PreflightResult[];
  startedAt: number;
  runs: number;
}

/** The acknowledgement of an update. */
export interface UpdateAck {
  status: RolloutStatus;
  message: string;
  /**
   * pause and abort: the VMs still in flight (host/vm) once every running host confirmed the new gate —
   * from then on no other VM starts.
   */
  inFlight?: string[];
  /** Hosts that had not confirmed the gate within the deadline. */
  unconfirmed?: string[];
}

export type Confirmation = Pick<UpdateAck, 'inFlight' | 'unconfirmed'>;

export function hostWorkflowId(rolloutWorkflowId: string, hostId: string, attempt: number): string {
  return `${rolloutWorkflowId}/host/${hostId}${attempt > 1 ? `/${attempt}` : ''}`;
}

/** a + b − minus, per outcome, never below zero. */
export function addCounts(a: OutcomeCounts, b: OutcomeCounts, minus?: OutcomeCounts): OutcomeCounts {
  const out = zeroCounts();
  for (const k of Object.keys(out) as VmOutcome[]) out[k] = Math.max(0, a[k] + b[k] - (minus?.[k] ?? 0));
  return out;
}

/**
 * A new rollout's state: every host of the plan's waves pending (with `only`, a retry run of a finished
 * rollout: only those hosts, each on only those VMs).
 */
export function newRollout(
  plan: Pick<RolloutPlan, 'waves'>,
  only: Record<string, string[] | null> | undefined,
  now: number,
): RolloutCarry {
  const s: RolloutCarry = {
    status: 'preflight',
    rollBackInFlight: false,
    gateSeq: 0,
    currentWave: 0,
    approved: [],
    hosts: [],
    failures: [],
    failedSinceResume: 0,
    resumes: 0,
    retried: 0,
    preflight: [],
    startedAt: now,
    runs: 0,
  };
  plan.waves.forEach((w, wave) => {
    for (const hostId of w.hosts) {
      if (only && !(hostId in only)) continue;
      s.hosts.push({
        hostId,
        wave,
        state: 'pending',
        attempt: 0,
        lastSeq: 0,
        gateSeqAck: 0,
        ...(only ? { only: only[hostId] ?? null } : {}),
        retryQueue: [],
        base: zeroCounts(),
        current: zeroCounts(),
        adjust: zeroCounts(),
        total: 0,
        pending: 0,
        inFlight: [],
        runs: 0,
      });
    }
  });
  return s;
}

/** The gate the hosts follow: hold while paused, abort once aborting. */
export function gateOf(s: RolloutCarry): Gate {
  return s.status === 'paused' ? 'hold' : s.status === 'aborting' || s.status === 'aborted' ? 'abort' : 'run';
}

/** A new status; a new gate with it counts as a gate change (`gateSeq`). */
export function setStatus(s: RolloutCarry, status: RolloutStatus): void {
  if (s.status === status) return;
  const gateBefore = gateOf(s);
  s.status = status;
  if (gateOf(s) !== gateBefore) s.gateSeq += 1;
}

/**
 * The preflight's results: with `fail`, any failure ends the rollout (true); otherwise failed hosts are
 * skipped.
 */
export function preflightDone(s: RolloutCarry, results: PreflightResult[], onFailure: 'fail' | 'skip'): boolean {
  s.preflight = results;
  const bad = results.filter((p) => !p.ok);
  if (bad.length > 0 && onFailure === 'fail') {
    setStatus(s, 'preflight-failed');
    return true;
  }
  for (const p of bad) {
    const h = s.hosts.find((x) => x.hostId === p.hostId)!;
    h.state = 'skipped';
    h.reason = `preflight: ${p.reason}`;
  }
  if (s.status === 'preflight') setStatus(s, 'running');
  return false;
}

function addFailures(s: RolloutCarry, failures: FailureEntry[]): void {
  s.failures.push(...failures);
  const excess = s.failures.length - KEPT_FAILURES;
  if (excess > 0) {
    s.failures.splice(0, excess);
    s.failuresDropped = (s.failuresDropped ?? 0) + excess;
  }
}

/** New failures spend the budget; when it runs out the rollout pauses itself (not while aborting). */
function countFailures(s: RolloutCarry, n: number, failureBudget: number): void {
  if (n <= 0 || s.status === 'aborting') return;
  s.failedSinceResume += n;
  if (budgetView(failureBudget, s.failedSinceResume).exhausted && !isTerminal(s.status) && s.status !== 'paused') {
    s.pausedBy = 'budget';
    s.pauseReason = `failure budget of ${failureBudget} reached: ${s.failedSinceResume} VM(s) failed since ${s.resumes > 0 ? 'the last resume' : 'the start'}`;
    setStatus(s, 'paused');
  }
}

/** What starting the next attempt of a host hands to its upgradeHost. */
export interface HostStart {
  workflowId: string;
  attempt: number;
  gate: Gate;
  gateSeq: number;
  only?: string[];
}

/** The host's next attempt begins: counts of the attempt start over; it starts with the current gate. */
export function startAttempt(s: RolloutCarry, h: HostEntry, rolloutWorkflowId: string): HostStart {
  h.attempt += 1;
  h.state = 'running';
  h.lastSeq = 0;
  h.current = zeroCounts();
  h.adjust = zeroCounts();
  h.pending = 0;
  h.inFlight = [];
  h.workflowId = hostWorkflowId(rolloutWorkflowId, h.hostId, h.attempt);
  const gate = gateOf(s);
  h.gateSeqSent = s.gateSeq;
  h.gateSeqAck = s.gateSeq;
  const only = h.only ?? undefined;
  delete h.only;
  return { workflowId: h.workflowId, attempt: h.attempt, gate, gateSeq: s.gateSeq, ...(only ? { only } : {}) };
}

/** The input of a host's upgradeHost for the attempt just begun. */
export function hostRunInput(
  plan: Pick<RolloutPlan, 'name' | 'target' | 'policy' | 'concurrency' | 'windows' | 'excludeVms' | 'limits'>,
  rolloutWorkflowId: string,
  hostId: string,
  start: HostStart,
): UpgradeHostInput {
  return {
    rolloutWorkflowId,
    rolloutId: plan.name,
    hostId,
    attempt: start.attempt,
    target: plan.target,
    policy: plan.policy,
    vmsAtOnce: plan.concurrency.vmsPerHost,
    windows: plan.windows,
    excludeVms: plan.excludeVms.filter((v) => v.startsWith(`${hostId}/`)).map((v) => v.slice(hostId.length + 1)),
    ...(start.only ? { only: start.only } : {}),
    gate: start.gate,
    gateSeq: start.gateSeq,
    historyEvents: plan.limits.historyEvents,
  };
}

/** Whether a host's run is still the given attempt (late results of older attempts are ignored). */
export function isRunningAttempt(h: HostEntry, attempt: number): boolean {
  return h.state === 'running' && h.attempt === attempt;
}

/** The control signal for a running host, marked as sent; undefined when the host does not run. */
export function controlFor(s: RolloutCarry, h: HostEntry, ack?: number): HostControl | undefined {
  if (!h.workflowId || h.state !== 'running') return undefined;
  const gate = gateOf(s);
  h.gateSeqSent = s.gateSeq;
  return {
    gate,
    gateSeq: s.gateSeq,
    ...(ack !== undefined ? { ack } : {}),
    ...(gate === 'abort' && s.rollBackInFlight ? { rollBackInFlight: true } : {}),
  };
}

/** Running hosts that have not been sent the current gate. */
export function hostsToControl(s: RolloutCarry): HostEntry[] {
  return s.hosts.filter((h) => h.state === 'running' && h.gateSeqSent !== undefined && h.gateSeqSent !== s.gateSeq);
}

/**
 * A host's attempt ended: with its final report (`r`), or an error (it failed as a whole: one failure).
 * Failed VMs asked to retry meanwhile make it pending again.
 */
export function hostFinished(
  s: RolloutCarry,
  h: HostEntry,
  r: HostReport | undefined,
  error: string | undefined,
  failureBudget: number,
  now: number,
): void {
  if (r) h.base = addCounts(h.base, r.counts, h.adjust);
  h.current = zeroCounts();
  h.adjust = zeroCounts();
  h.pending = r?.pending ?? 0; // VMs an aborted host never started
  h.inFlight = [];
  h.gateSeqSent = undefined;
  if (error) {
    h.state = 'failed';
    h.reason = error;
    addFailures(s, [{ hostId: h.hostId, vmId: '*', outcome: 'failed', reason: error, at: now, attempt: h.attempt }]);
    countFailures(s, 1, failureBudget);
  } else h.state = 'done';
  if (h.retryQueue.length > 0) {
    h.state = 'pending';
    h.only = h.retryQueue;
    h.retryQueue = [];
    delete h.reason;
  }
}

/**
 * A host's report: taken when it is new and from the running attempt. `ack`: the report awaits the
 * rollout's acknowledgement (send it). A final report ends the attempt.
 */
export function applyReport(
  s: RolloutCarry,
  h: HostEntry | undefined,
  r: HostReport,
  failureBudget: number,
  now: number,
): { taken: false } | { taken: true; host: HostEntry; ack?: number } {
  if (!h || r.attempt !== h.attempt || r.seq <= h.lastSeq || h.state !== 'running') return { taken: false };
  h.lastSeq = r.seq;
  h.current = r.counts;
  h.total = Math.max(h.total, r.total);
  h.pending = r.pending;
  h.inFlight = r.inFlight;
  h.windowOpen = r.windowOpen;
  h.gateSeqAck = Math.max(h.gateSeqAck, r.gateSeq);
  h.awaitingAck = r.awaitingAck;
  h.runs = r.runs;
  const failed = r.finished.filter((f) => isFailure(f.outcome));
  addFailures(
    s,
    failed.map((f) => ({
      hostId: h.hostId,
      vmId: f.vmId,
      outcome: f.outcome,
      ...(f.reason ? { reason: f.reason } : {}),
      at: f.at,
      attempt: h.attempt,
    })),
  );
  countFailures(s, failed.length, failureBudget);
  if (r.final) {
    hostFinished(s, h, r, r.error, failureBudget, now);
    return { taken: true, host: h };
  }
  return { taken: true, host: h, ...(r.awaitingAck ? { ack: r.seq } : {}) };
}

/**
 * While running: past finished waves to the next, stopping at one that awaits approval. Returns the waves
 * started.
 */
export function advanceWaves(s: RolloutCarry, plan: Pick<RolloutPlan, 'waves' | 'approvals'>): number[] {
  const started: number[] = [];
  if (s.status !== 'running') return started;
  while (waveFinished(s.hosts, s.currentWave)) {
    if (s.currentWave >= plan.waves.length - 1) break;
    const next = s.currentWave + 1;
    const hasHosts = s.hosts.some((h) => h.wave === next);
    if (hasHosts && needsApproval(plan.approvals, next) && !s.approved.includes(next)) {
      setStatus(s, 'awaiting-approval');
      break;
    }
    s.currentWave = next;
    started.push(next);
  }
  return started;
}

/** Nothing runs, and no host start is on its way. */
export function isIdle(s: RolloutCarry, startsInFlight: number): boolean {
  return startsInFlight === 0 && s.hosts.every((h) => h.state !== 'running');
}

/** Running and every wave finished: completed. */
export function completeIfDone(s: RolloutCarry, wavesCount: number, idle: boolean): void {
  if (s.status === 'running' && idle && waveFinished(s.hosts, wavesCount - 1)) setStatus(s, 'completed');
}

/** Aborting and nothing runs any more: aborted. */
export function abortedIfIdle(s: RolloutCarry, idle: boolean): void {
  if (s.status === 'aborting' && idle) setStatus(s, 'aborted');
}

/** Hosts may start while the rollout runs (or awaits approval for the next wave). */
export function mayStartHosts(s: RolloutCarry): boolean {
  return s.status === 'running' || s.status === 'awaiting-approval';
}

/** Running hosts that have not confirmed gate change `seq`. */
export function unconfirmedHosts(s: RolloutCarry, seq: number): HostEntry[] {
  return s.hosts.filter((h) => h.state === 'running' && h.gateSeqAck < seq);
}

/** Every VM in flight, as host/vm. */
export function vmsInFlight(s: RolloutCarry): string[] {
  return s.hosts.flatMap((h) => h.inFlight.map((vm) => `${h.hostId}/${vm}`));
}

export function confirmation(s: RolloutCarry, seq: number): Confirmation {
  const unconfirmed = unconfirmedHosts(s, seq).map((h) => h.hostId);
  const inFlight = vmsInFlight(s);
  return { inFlight, ...(unconfirmed.length ? { unconfirmed } : {}) };
}

// The operators' updates: a validator (throws when the update does not apply) and the change it makes.

function notTerminal(s: RolloutCarry, what: string): void {
  if (isTerminal(s.status)) throw new Error(`cannot ${what}: the rollout is ${s.status}`);
}

export function validatePause(s: RolloutCarry): void {
  notTerminal(s, 'pause');
  if (s.status === 'aborting') throw new Error('cannot pause: the rollout is aborting');
}

/** Pauses by the operator; false when already paused (nothing changes). */
export function pause(s: RolloutCarry, reason: string | undefined): boolean {
  if (s.status === 'paused') return false;
  s.pausedBy = 'operator';
  s.pauseReason = reason ? `paused by operator: ${reason}` : 'paused by operator';
  setStatus(s, 'paused');
  return true;
}

export function pausedMessage(c: Confirmation): string {
  return `paused: no new VM starts; ${c.inFlight?.length ?? 0} VM(s) in flight finish${unconfirmedNote(c)}`;
}

function unconfirmedNote(c: Confirmation): string {
  return c.unconfirmed ? ` (not yet confirmed by ${c.unconfirmed.join(', ')})` : '';
}

export function validateResume(s: RolloutCarry): void {
  notTerminal(s, 'resume');
  if (s.status !== 'paused') throw new Error(`cannot resume: the rollout is ${s.status}, not paused`);
}

/** Runs again with a fresh failure budget; the message names why it was paused. */
export function resume(s: RolloutCarry): string {
  const was = s.pauseReason;
  delete s.pausedBy;
  delete s.pauseReason;
  s.failedSinceResume = 0;
  s.resumes += 1;
  setStatus(s, 'running');
  return `resumed (was: ${was ?? 'paused'}); failure budget reset`;
}

export function validateAbort(s: RolloutCarry): void {
  notTerminal(s, 'abort');
  if (s.status === 'aborting') throw new Error('the rollout is already aborting');
}

export function abort(s: RolloutCarry, reason: string | undefined, rollBackInFlight: boolean): void {
  s.abortReason = reason ? `aborted by operator: ${reason}` : 'aborted by operator';
  s.rollBackInFlight = rollBackInFlight;
  setStatus(s, 'aborting');
}

export function abortingMessage(s: RolloutCarry, c: Confirmation): string {
  const n = c.inFlight?.length ?? 0;
  return (
    (s.rollBackInFlight
      ? `aborting: nothing new starts; ${n} VM(s) in flight are cancelled and roll back`
      : `aborting: nothing new starts; ${n} VM(s) in flight finish`) + unconfirmedNote(c)
  );
}

export function validateApprove(s: RolloutCarry, wave: number | undefined, wavesCount: number): void {
  notTerminal(s, 'approve');
  if (s.status !== 'awaiting-approval') {
    throw new Error(`nothing awaits approval: the rollout is ${s.status} (wave ${s.currentWave + 1}/${wavesCount})`);
  }
  if (wave !== undefined && wave !== s.currentWave + 1) {
    throw new Error(`wave ${wave} does not await approval; wave ${s.currentWave + 1} does`);
  }
}

/** Approves the next wave; returns its index. */
export function approve(s: RolloutCarry): number {
  const next = s.currentWave + 1;
  s.approved.push(next);
  setStatus(s, 'running');
  return next;
}

/** A failure `retry` picks: all without a list; else by host/vm, or every failure of a host by its id. */
function isPicked(f: FailureEntry, want: Set<string> | undefined): boolean {
  return !want || want.has(`${f.hostId}/${f.vmId}`) || want.has(f.hostId);
}

export function validateRetry(s: RolloutCarry, vms: string[] | undefined): void {
  notTerminal(s, 'retry');
  if (s.status === 'aborting') throw new Error('cannot retry: the rollout is aborting');
  if (s.failures.length === 0) throw new Error('no failed VM to retry');
  for (const v of vms ?? []) {
    if (!s.failures.some((f) => `${f.hostId}/${f.vmId}` === v || f.hostId === v)) {
      throw new Error(`${v} is not a failed VM of this rollout`);
    }
  }
}

/**
 * Queues failed VMs again (all, or those listed): a running host takes them in its next attempt, another
 * host becomes pending for them. Their failures leave the counts. Returns how many were queued.
 */
export function retry(s: RolloutCarry, vms: string[] | undefined): number {
  const want = vms ? new Set(vms) : undefined;
  const picked = s.failures.filter((f) => isPicked(f, want));
  s.failures = s.failures.filter((f) => !picked.includes(f));
  const byId = new Map(s.hosts.map((h) => [h.hostId, h]));
  for (const f of picked) requeue(byId.get(f.hostId)!, f);
  s.retried += picked.length;
  return picked.length;
}

function requeue(h: HostEntry, f: FailureEntry): void {
  if (f.vmId === '*') {
    if (h.state === 'failed') {
      h.state = 'pending';
      h.only = null;
      delete h.reason;
    }
    return;
  }
  if (h.state === 'running' && f.attempt === h.attempt) h.adjust[f.outcome] += 1;
  else if (h.base[f.outcome] > 0) h.base[f.outcome] -= 1;
  if (h.state === 'running') h.retryQueue.push(f.vmId);
  else if (h.state === 'pending') {
    if (h.only) h.only = [...h.only, f.vmId]; // no list: the host's next run takes all its VMs anyway
  } else {
    h.only = [f.vmId];
    h.state = 'pending';
    delete h.reason;
  }
}

export function retriedMessage(s: RolloutCarry, n: number): string {
  return `${n} failed VM(s) queued again${s.status === 'paused' ? '; resume to run them' : ''}`;
}
