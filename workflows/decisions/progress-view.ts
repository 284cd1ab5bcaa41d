// What the rollout's `progress` query shows, built from its state. Pure: the workflow passes the time and
// the history length.
import { budgetView, type VmOutcome } from './budget';
import type { OutcomeCounts } from './host-state';
import { zeroCounts } from './host-state';
import type { RolloutPlan } from './rollout-plan';
import {
  addCounts,
  type FailureEntry,
  type PreflightResult,
  type RolloutCarry,
  type RolloutStatus,
} from './rollout-state';
import type { HostRunState } from './waves';
import { windowState } from './windows';

/** Failures the progress query lists (the latest). */
export const SHOWN_FAILURES = 100;

export interface HostProgressView {
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
  hosts: HostProgressView[];
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

export type ProgressPlan = Pick<RolloutPlan, 'name' | 'target' | 'waves' | 'windows' | 'failureBudget'>;

/** The rollout as the progress query shows it at `now`. */
export function rolloutProgress(
  s: RolloutCarry,
  plan: ProgressPlan,
  now: number,
  historyLength: number,
): RolloutProgress {
  const vms: RolloutProgress['vms'] = { ...zeroCounts(), pending: 0, 'in-flight': 0 };
  const hostsByState: Record<HostRunState, number> = { pending: 0, running: 0, done: 0, failed: 0, skipped: 0 };
  const hosts = s.hosts.map((h): HostProgressView => {
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
  const w = windowState(plan.windows, now);
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
    historyLength,
  };
}
