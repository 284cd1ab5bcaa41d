// The failure budget of a rollout. Pure.
//
// A VM counts as failed when its upgrade did not leave it on the target: refused (policy could not be met,
// nothing touched), rolled back, or failed. The rollout pauses itself as soon as `failureBudget` VMs have
// failed since it started or since the operator last resumed it; VMs in flight finish, nothing new starts.
// A host that cannot be worked on at all (its inventory unreadable) counts as one failure.
import type { UpgradeOutcome } from '../upgrade-vm';

export type VmOutcome = UpgradeOutcome | 'cancelled';

export function isFailure(outcome: VmOutcome): boolean {
  return outcome === 'refused' || outcome === 'rolled-back' || outcome === 'failed' || outcome === 'needs-operator';
}

export function isSuccess(outcome: VmOutcome): boolean {
  return outcome === 'upgraded' || outcome === 'already-on-target';
}

export interface BudgetView {
  budget: number;
  failedSinceResume: number;
  remaining: number;
  exhausted: boolean;
}

export function budgetView(budget: number, failedSinceResume: number): BudgetView {
  const remaining = Math.max(0, budget - failedSinceResume);
  return { budget, failedSinceResume, remaining, exhausted: remaining === 0 };
}

/** After `newFailures` more failures, whether the rollout must pause itself now. */
export function spend(budget: number, failedSinceResume: number, newFailures: number): BudgetView {
  return budgetView(budget, failedSinceResume + newFailures);
}
