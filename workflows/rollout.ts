// Workflow `rollout`: a QEMU version across a fleet. Preflight (each host's worker polls its queue, per
// Temporal, and allows the target label), then waves of hosts in order — a canary first — each host by a
// child `upgradeHost`, at most `concurrency.hosts` at once, only inside maintenance windows, pausing itself
// when the failure budget runs out, waiting for approvals between waves when the plan asks. Operators
// steer it with updates (pause, resume, abort, approve, retry) and read it with the `progress` query.
// Past `limits.historyEvents` it continues as new, carrying its state; running hosts are adopted (they
// are started with ParentClosePolicy ABANDON and report by signal to the rollout's workflow id).
// Deterministic: no I/O here.
import {
  ActivityFailure,
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
  TimeoutFailure,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { HostActivities } from '../activities/upgrade/api';
import type { FleetActivities } from '../activities/fleet/task-queues';

/** As activities/fleet/task-queues.ts: a poll seen this recently counts as live (long polls last ~1 min). */
const LIVE_POLLER_MS = 90_000;
/** How long pause and abort wait for the running hosts to confirm the new gate. */
const GATE_CONFIRM_MS = 30_000;
/** Failures kept in the rollout's state for `retry`; older ones are only counted. */
const KEPT_FAILURES = 1_000;
/** Failures the progress query lists (the latest). */
const SHOWN_FAILURES = 100;
import { budgetView, isFailure, type VmOutcome } from './decisions/budget';
import type { RolloutPlan } from './decisions/rollout-plan';
import { hostsToStart, needsApproval, waveFinished, type HostRunState } from './decisions/waves';
import { msUntilWindowChange, windowState } from './decisions/windows';
import { hostKey, phaseKey, rolloutKey, targetKey } from './search-attributes';
import {
  hostControlSignal,
  hostReportSignal,
  upgradeHost,
  zeroCounts,
  type FleetSinks,
  type Gate,
  type HostReport,
  type OutcomeCounts,
} from './upgrade-host';

export type RolloutStatus =
  'preflight' | 'running' | 'paused' | 'awaiting-approval' | 'aborting' | 'completed' | 'aborted' | 'preflight-failed';

const terminal: RolloutStatus[] = ['completed', 'aborted', 'preflight-failed'];

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

export interface RolloutInput {
  plan: RolloutPlan;
  /** A retry run of a finished rollout: only these hosts, and on each only these VMs (null: all). */
  only?: Record<string, string[] | null>;
  carry?: RolloutCarry;
}

export interface RolloutProgress {
  rolloutId: string;
  target: string;
  status: RolloutStatus;
  pausedBy?: 'operator' | 'budget';
  pauseReason?: string;
  abortReason?: string;
  wave: { index: number; name: string; of: number; awaitingApproval: boolean };
  /** VMs by state; `pending` counts only hosts whose inventory is known. */
  vms: Record<VmOutcome | 'pending' | 'in-flight', number>;
  hosts: Array<{
    hostId: string;
    wave: string;
    state: HostRunState;
    attempt: number;
    workflowId?: string;
    reason?: string;
    total: number;
    pending: number;
    inFlight: string[];
    counts: OutcomeCounts;
    windowOpen?: boolean;
    retryQueue: string[];
  }>;
  hostsByState: Record<HostRunState, number>;
  /** The latest SHOWN_FAILURES failures. */
  failures: FailureEntry[];
  /** Every failure of the rollout, including those no longer listed. */
  failuresTotal: number;
  budget: { budget: number; failedSinceResume: number; remaining: number };
  window: { open: boolean; closesAt?: number; nextOpensAt?: number; always: boolean };
  preflight: PreflightResult[];
  retried: number;
  startedAt: number;
  /** Runs of the rollout workflow (continue-as-new). */
  runs: number;
  historyLength: number;
}

export interface RolloutResult extends RolloutProgress {
  outcome: 'completed' | 'aborted' | 'preflight-failed';
}

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

export const rolloutProgressQuery = defineQuery<RolloutProgress>('progress');
export const pauseUpdate = defineUpdate<UpdateAck, [{ reason?: string }]>('pause');
export const resumeUpdate = defineUpdate<UpdateAck, []>('resume');
export const abortUpdate = defineUpdate<UpdateAck, [{ reason?: string; rollBackInFlight?: boolean }]>('abort');
export const approveUpdate = defineUpdate<UpdateAck, [{ wave?: number }]>('approve');
export const retryUpdate = defineUpdate<UpdateAck, [{ vms?: string[] }]>('retry');

export function hostWorkflowId(rolloutWorkflowId: string, hostId: string, attempt: number): string {
  return `${rolloutWorkflowId}/host/${hostId}${attempt > 1 ? `/${attempt}` : ''}`;
}

function reasonOf(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && 'cause' in e && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

function addCounts(a: OutcomeCounts, b: OutcomeCounts, minus?: OutcomeCounts): OutcomeCounts {
  const out = zeroCounts();
  for (const k of Object.keys(out) as VmOutcome[]) out[k] = Math.max(0, a[k] + b[k] - (minus?.[k] ?? 0));
  return out;
}

export async function rollout(input: RolloutInput): Promise<RolloutResult> {
  const { plan } = input;
  const info = workflowInfo();
  const rolloutWorkflowId = info.workflowId;
  const sinks = proxySinks<FleetSinks>();
  const fleet = proxyActivities<FleetActivities>({
    startToCloseTimeout: '30s',
    retry: { maximumAttempts: 3 },
  });

  const s: RolloutCarry = input.carry ?? {
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
    startedAt: Date.now(),
    runs: 0,
  };
  s.runs += 1;
  if (!input.carry) {
    plan.waves.forEach((w, wave) => {
      for (const hostId of w.hosts) {
        if (input.only && !(hostId in input.only)) continue;
        s.hosts.push({
          hostId,
          wave,
          state: 'pending',
          attempt: 0,
          lastSeq: 0,
          gateSeqAck: 0,
          ...(input.only ? { only: input.only[hostId] ?? null } : {}),
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
  }
  const byId = new Map(s.hosts.map((h) => [h.hostId, h]));
  let changed = false;
  let startsInFlight = 0;
  let signalsInFlight = 0;

  const gateOf = (): Gate =>
    s.status === 'paused' ? 'hold' : s.status === 'aborting' || s.status === 'aborted' ? 'abort' : 'run';

  const setStatus = (status: RolloutStatus) => {
    if (s.status === status) return;
    log.info('rollout status', { rolloutId: plan.name, from: s.status, to: status });
    const gateBefore = gateOf();
    s.status = status;
    if (gateOf() !== gateBefore) s.gateSeq += 1;
    upsertSearchAttributes([{ key: phaseKey, value: status }]);
    changed = true;
  };

  const progress = (): RolloutProgress => {
    const vms: RolloutProgress['vms'] = { ...zeroCounts(), pending: 0, 'in-flight': 0 };
    const hostsByState: Record<HostRunState, number> = { pending: 0, running: 0, done: 0, failed: 0, skipped: 0 };
    const hosts = s.hosts.map((h) => {
      const counts = addCounts(h.base, h.current, h.adjust);
      for (const k of Object.keys(counts) as VmOutcome[]) vms[k] += counts[k];
      vms.pending += h.pending + h.retryQueue.length + (h.state === 'pending' && h.only ? h.only.length : 0);
      vms['in-flight'] += h.inFlight.length;
      hostsByState[h.state] += 1;
      return {
        hostId: h.hostId,
        wave: plan.waves[h.wave]?.name ?? String(h.wave),
        state: h.state,
        attempt: h.attempt,
        ...(h.workflowId ? { workflowId: h.workflowId } : {}),
        ...(h.reason ? { reason: h.reason } : {}),
        total: h.total,
        pending: h.pending,
        inFlight: h.inFlight,
        counts,
        ...(h.windowOpen !== undefined ? { windowOpen: h.windowOpen } : {}),
        retryQueue: h.retryQueue,
      };
    });
    const w = windowState(plan.windows, Date.now());
    const b = budgetView(plan.failureBudget, s.failedSinceResume);
    return {
      rolloutId: plan.name,
      target: plan.target,
      status: s.status,
      ...(s.pausedBy ? { pausedBy: s.pausedBy } : {}),
      ...(s.pauseReason ? { pauseReason: s.pauseReason } : {}),
      ...(s.abortReason ? { abortReason: s.abortReason } : {}),
      wave: {
        index: s.currentWave,
        name: plan.waves[s.currentWave]?.name ?? '',
        of: plan.waves.length,
        awaitingApproval: s.status === 'awaiting-approval',
      },
      vms,
      hosts,
      hostsByState,
      failures: s.failures.slice(-SHOWN_FAILURES),
      failuresTotal: s.failures.length + (s.failuresDropped ?? 0),
      budget: { budget: b.budget, failedSinceResume: b.failedSinceResume, remaining: b.remaining },
      window: { ...w, always: plan.windows.length === 0 },
      preflight: s.preflight,
      retried: s.retried,
      startedAt: s.startedAt,
      runs: s.runs,
      historyLength: workflowInfo().historyLength,
    };
  };

  const publish = () => {
    const p = progress();
    sinks.fleet.rolloutVms(plan.name, p.vms);
  };

  function control(h: HostEntry, ack?: number): void {
    if (!h.workflowId || h.state !== 'running') return;
    const gate = gateOf();
    h.gateSeqSent = s.gateSeq;
    signalsInFlight += 1;
    getExternalWorkflowHandle(h.workflowId)
      .signal(hostControlSignal, {
        gate,
        gateSeq: s.gateSeq,
        ...(ack !== undefined ? { ack } : {}),
        ...(gate === 'abort' && s.rollBackInFlight ? { rollBackInFlight: true } : {}),
      })
      .catch((err) => log.warn('host control signal failed', { hostId: h.hostId, error: reasonOf(err) }))
      .finally(() => {
        signalsInFlight -= 1;
        changed = true;
      });
  }

  function keepFailuresBounded(): void {
    const excess = s.failures.length - KEPT_FAILURES;
    if (excess > 0) {
      s.failures.splice(0, excess);
      s.failuresDropped = (s.failuresDropped ?? 0) + excess;
    }
  }

  function countFailures(n: number): void {
    if (n <= 0 || s.status === 'aborting') return;
    s.failedSinceResume += n;
    if (budgetView(plan.failureBudget, s.failedSinceResume).exhausted && !terminal.includes(s.status)) {
      if (s.status !== 'paused') {
        s.pausedBy = 'budget';
        s.pauseReason = `failure budget of ${plan.failureBudget} reached: ${s.failedSinceResume} VM(s) failed since ${s.resumes > 0 ? 'the last resume' : 'the start'}`;
        setStatus('paused');
      }
    }
  }

  function hostFinished(h: HostEntry, r: HostReport | undefined, error?: string): void {
    if (r) h.base = addCounts(h.base, r.counts, h.adjust);
    h.current = zeroCounts();
    h.adjust = zeroCounts();
    h.pending = r?.pending ?? 0; // VMs an aborted host never started
    h.inFlight = [];
    h.gateSeqSent = undefined;
    if (error) {
      h.state = 'failed';
      h.reason = error;
      s.failures.push({
        hostId: h.hostId,
        vmId: '*',
        outcome: 'failed',
        reason: error,
        at: Date.now(),
        attempt: h.attempt,
      });
      keepFailuresBounded();
      countFailures(1);
    } else h.state = 'done';
    if (h.retryQueue.length > 0) {
      h.state = 'pending';
      h.only = h.retryQueue;
      h.retryQueue = [];
      delete h.reason;
    }
    changed = true;
  }

  function onReport(r: HostReport): void {
    const h = byId.get(r.hostId);
    if (!h || r.attempt !== h.attempt || r.seq <= h.lastSeq || h.state !== 'running') return;
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
    for (const f of failed) {
      s.failures.push({
        hostId: h.hostId,
        vmId: f.vmId,
        outcome: f.outcome,
        ...(f.reason ? { reason: f.reason } : {}),
        at: f.at,
        attempt: h.attempt,
      });
    }
    keepFailuresBounded();
    countFailures(failed.length);
    if (r.final) hostFinished(h, r, r.error);
    else if (r.awaitingAck) control(h, r.seq);
    changed = true;
  }

  setHandler(hostReportSignal, onReport);
  setHandler(rolloutProgressQuery, progress);

  const notTerminal = (what: string) => {
    if (terminal.includes(s.status)) throw new Error(`cannot ${what}: the rollout is ${s.status}`);
  };
  /** Waits until every running host confirmed the current gate (or the deadline); what is in flight then. */
  async function confirmed(): Promise<Pick<UpdateAck, 'inFlight' | 'unconfirmed'>> {
    const seq = s.gateSeq;
    const pendingHosts = () => s.hosts.filter((h) => h.state === 'running' && h.gateSeqAck < seq);
    changed = true; // let the main loop send the gate
    await condition(() => s.gateSeq !== seq || pendingHosts().length === 0, GATE_CONFIRM_MS);
    const unconfirmed = pendingHosts().map((h) => h.hostId);
    const inFlight = s.hosts.flatMap((h) => h.inFlight.map((vm) => `${h.hostId}/${vm}`));
    return { inFlight, ...(unconfirmed.length ? { unconfirmed } : {}) };
  }

  setHandler(
    pauseUpdate,
    async (arg) => {
      if (s.status === 'paused') return { status: s.status, message: 'already paused' };
      s.pausedBy = 'operator';
      s.pauseReason = arg?.reason ? `paused by operator: ${arg.reason}` : 'paused by operator';
      setStatus('paused');
      const c = await confirmed();
      return {
        status: s.status,
        message: `paused: no new VM starts; ${c.inFlight?.length ?? 0} VM(s) in flight finish${c.unconfirmed ? ` (not yet confirmed by ${c.unconfirmed.join(', ')})` : ''}`,
        ...c,
      };
    },
    {
      validator: (_arg) => {
        notTerminal('pause');
        if (s.status === 'aborting') throw new Error('cannot pause: the rollout is aborting');
      },
    },
  );
  setHandler(
    resumeUpdate,
    () => {
      const was = s.pauseReason;
      delete s.pausedBy;
      delete s.pauseReason;
      s.failedSinceResume = 0;
      s.resumes += 1;
      setStatus('running');
      return { status: s.status, message: `resumed (was: ${was ?? 'paused'}); failure budget reset` };
    },
    {
      validator: () => {
        notTerminal('resume');
        if (s.status !== 'paused') throw new Error(`cannot resume: the rollout is ${s.status}, not paused`);
      },
    },
  );
  setHandler(
    abortUpdate,
    async (arg) => {
      s.abortReason = arg?.reason ? `aborted by operator: ${arg.reason}` : 'aborted by operator';
      s.rollBackInFlight = arg?.rollBackInFlight === true;
      setStatus('aborting');
      const c = await confirmed();
      const n = c.inFlight?.length ?? 0;
      return {
        status: s.status,
        message:
          (s.rollBackInFlight
            ? `aborting: nothing new starts; ${n} VM(s) in flight are cancelled and roll back`
            : `aborting: nothing new starts; ${n} VM(s) in flight finish`) +
          (c.unconfirmed ? ` (not yet confirmed by ${c.unconfirmed.join(', ')})` : ''),
        ...c,
      };
    },
    {
      validator: (_arg) => {
        notTerminal('abort');
        if (s.status === 'aborting') throw new Error('the rollout is already aborting');
      },
    },
  );
  setHandler(
    approveUpdate,
    () => {
      const next = s.currentWave + 1;
      s.approved.push(next);
      setStatus('running');
      return { status: s.status, message: `wave ${plan.waves[next]?.name ?? next} approved` };
    },
    {
      validator: (arg) => {
        notTerminal('approve');
        if (s.status !== 'awaiting-approval') {
          throw new Error(
            `nothing awaits approval: the rollout is ${s.status} (wave ${s.currentWave + 1}/${plan.waves.length})`,
          );
        }
        if (arg?.wave !== undefined && arg.wave !== s.currentWave + 1) {
          throw new Error(`wave ${arg.wave} does not await approval; wave ${s.currentWave + 1} does`);
        }
      },
    },
  );
  setHandler(
    retryUpdate,
    (arg) => {
      const want = arg?.vms ? new Set(arg.vms) : undefined;
      const picked = s.failures.filter((f) => !want || want.has(`${f.hostId}/${f.vmId}`) || want.has(f.hostId));
      s.failures = s.failures.filter((f) => !picked.includes(f));
      for (const f of picked) {
        const h = byId.get(f.hostId)!;
        if (f.vmId === '*') {
          if (h.state === 'failed') {
            h.state = 'pending';
            h.only = null;
            delete h.reason;
          }
          continue;
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
      s.retried += picked.length;
      changed = true;
      return {
        status: s.status,
        message: `${picked.length} failed VM(s) queued again${s.status === 'paused' ? '; resume to run them' : ''}`,
      };
    },
    {
      validator: (arg) => {
        notTerminal('retry');
        if (s.status === 'aborting') throw new Error('cannot retry: the rollout is aborting');
        if (s.failures.length === 0) throw new Error('no failed VM to retry');
        for (const v of arg?.vms ?? []) {
          if (!s.failures.some((f) => `${f.hostId}/${f.vmId}` === v || f.hostId === v)) {
            throw new Error(`${v} is not a failed VM of this rollout`);
          }
        }
      },
    },
  );

  upsertSearchAttributes([
    { key: rolloutKey, value: plan.name },
    { key: targetKey, value: plan.target },
    { key: phaseKey, value: s.status },
  ]);

  // Preflight: from Temporal's pollers, then a short-deadline question to each host's worker.
  if (s.status === 'preflight') {
    s.preflight = await preflight(
      s.hosts.map((h) => h.hostId),
      plan.target,
      plan.preflight.timeoutSec,
      fleet,
    );
    const bad = s.preflight.filter((p) => !p.ok);
    for (const p of bad) log.warn('preflight failed', { hostId: p.hostId, reason: p.reason });
    if (bad.length > 0 && plan.preflight.onFailure === 'fail') {
      setStatus('preflight-failed');
      return { ...progress(), outcome: 'preflight-failed' };
    }
    for (const p of bad) {
      const h = byId.get(p.hostId)!;
      h.state = 'skipped';
      h.reason = `preflight: ${p.reason}`;
    }
    if (s.status === 'preflight') setStatus('running');
  }

  function startHost(h: HostEntry): void {
    h.attempt += 1;
    h.state = 'running';
    h.lastSeq = 0;
    h.current = zeroCounts();
    h.adjust = zeroCounts();
    h.pending = 0;
    h.inFlight = [];
    h.workflowId = hostWorkflowId(rolloutWorkflowId, h.hostId, h.attempt);
    const gate = gateOf();
    h.gateSeqSent = s.gateSeq;
    h.gateSeqAck = s.gateSeq;
    const only = h.only ?? undefined;
    delete h.only;
    const attempt = h.attempt;
    startsInFlight += 1;
    startChild(upgradeHost, {
      workflowId: h.workflowId,
      args: [
        {
          rolloutWorkflowId,
          rolloutId: plan.name,
          hostId: h.hostId,
          attempt,
          target: plan.target,
          policy: plan.policy,
          vmsAtOnce: plan.concurrency.vmsPerHost,
          windows: plan.windows,
          excludeVms: plan.excludeVms
            .filter((v) => v.startsWith(`${h.hostId}/`))
            .map((v) => v.slice(h.hostId.length + 1)),
          ...(only ? { only } : {}),
          gate,
          gateSeq: s.gateSeq,
          historyEvents: plan.limits.historyEvents,
        },
      ],
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
            if (h.state === 'running' && h.attempt === attempt) hostFinished(h, r, r.error);
          },
          (err) => {
            if (h.state === 'running' && h.attempt === attempt)
              hostFinished(h, undefined, `upgradeHost failed: ${reasonOf(err)}`);
          },
        );
      })
      .catch((err) => {
        if (h.state === 'running' && h.attempt === attempt)
          hostFinished(h, undefined, `cannot start upgradeHost: ${reasonOf(err)}`);
      })
      .finally(() => {
        startsInFlight -= 1;
        changed = true;
      });
  }

  for (;;) {
    // Waves: advance past finished ones, stop at an approval gate, finish after the last.
    if (s.status === 'running') {
      while (waveFinished(s.hosts, s.currentWave)) {
        if (s.currentWave >= plan.waves.length - 1) break;
        const next = s.currentWave + 1;
        const hasHosts = s.hosts.some((h) => h.wave === next);
        if (hasHosts && needsApproval(plan.approvals, next) && !s.approved.includes(next)) {
          setStatus('awaiting-approval');
          break;
        }
        s.currentWave = next;
        log.info('wave started', { rolloutId: plan.name, wave: plan.waves[next]?.name });
      }
    }
    const idle = startsInFlight === 0 && s.hosts.every((h) => h.state !== 'running');
    if (s.status === 'running' && idle && waveFinished(s.hosts, plan.waves.length - 1)) setStatus('completed');
    if (s.status === 'aborting' && idle) setStatus('aborted');
    if (s.status === 'completed' || s.status === 'aborted') {
      await condition(() => signalsInFlight === 0 && allHandlersFinished());
      publish();
      return { ...progress(), outcome: s.status };
    }

    // Start hosts while the rollout runs and a window is open.
    if ((s.status === 'running' || s.status === 'awaiting-approval') && windowState(plan.windows, Date.now()).open) {
      for (const id of hostsToStart(s.hosts, s.currentWave, plan.concurrency.hosts)) startHost(byId.get(id)!);
    }
    // Tell running hosts about a changed gate.
    for (const h of s.hosts) {
      if (h.state === 'running' && h.gateSeqSent !== undefined && h.gateSeqSent !== s.gateSeq) control(h);
    }
    publish();

    const wi = workflowInfo();
    if (wi.historyLength >= plan.limits.historyEvents || wi.continueAsNewSuggested) {
      if (startsInFlight === 0 && signalsInFlight === 0 && allHandlersFinished()) {
        log.info('continuing as new', { rolloutId: plan.name, runs: s.runs, historyLength: wi.historyLength });
        await continueAsNew<typeof rollout>({ plan, carry: s });
      }
    }
    const wake = msUntilWindowChange(plan.windows, Date.now());
    changed = false;
    if (wake === undefined) await condition(() => changed);
    else await condition(() => changed, wake);
  }
}

/**
 * Workflow `fleetHosts`: what `fleet-upgrade hosts` shows — per host, the workers Temporal sees polling its
 * queue and the version labels the worker allows (asked with a short deadline).
 */
export async function fleetHosts(input: { hostIds: string[]; timeoutSec: number }): Promise<PreflightResult[]> {
  const fleet = proxyActivities<FleetActivities>({ startToCloseTimeout: '30s', retry: { maximumAttempts: 3 } });
  return preflight(input.hostIds, undefined, input.timeoutSec, fleet);
}

/** Each host: a live poller on its queue (per Temporal), then its worker's answer within `timeoutSec`. */
async function preflight(
  hostIds: string[],
  target: string | undefined,
  timeoutSec: number,
  fleet: FleetActivities,
): Promise<PreflightResult[]> {
  const queues = hostIds.map((h) => `qemu-host.${h}`);
  const pollers = await fleet.taskQueuePollers({ queues });
  return Promise.all(
    hostIds.map(async (hostId): Promise<PreflightResult> => {
      const queue = `qemu-host.${hostId}`;
      const live = (pollers[queue] ?? []).filter((p) => p.ageMs === null || p.ageMs < LIVE_POLLER_MS);
      const identities = [...new Set(live.map((p) => p.identity))];
      if (live.length === 0) {
        return { hostId, ok: false, reason: `no worker is polling task queue ${queue}`, pollers: [] };
      }
      const host = proxyActivities<HostActivities>({
        taskQueue: queue,
        scheduleToCloseTimeout: timeoutSec * 1000,
        retry: { maximumAttempts: 1 },
      });
      try {
        const d = await host.describeHost({});
        if (d.hostId !== hostId) {
          return {
            hostId,
            ok: false,
            reason: `the worker on ${queue} says it is host ${d.hostId}`,
            pollers: identities,
          };
        }
        if (target !== undefined && !d.labels.includes(target)) {
          return {
            hostId,
            ok: false,
            reason: `target label "${target}" is not allowed on ${hostId} (allowed: ${d.labels.join(', ')})`,
            pollers: identities,
            labels: d.labels,
          };
        }
        return { hostId, ok: true, pollers: identities, labels: d.labels };
      } catch (err) {
        const timedOut = err instanceof ActivityFailure && err.cause instanceof TimeoutFailure;
        return {
          hostId,
          ok: false,
          reason: timedOut
            ? `the worker polling ${queue} (${identities.join(', ')}) did not answer within ${timeoutSec}s`
            : `the worker polling ${queue} failed to describe the host: ${reasonOf(err)}`,
          pollers: identities,
        };
      }
    }),
  );
}
