// Bench only: the Temporal part of one upgradeVm with none of its work, in two shapes.
// - `emptyUpgrade`, the saga's shape: the same start (with the same search attributes), the same patch marker,
//   the same FleetPhase milestones and three activities on another worker's task queue, each returning at once.
//   Its wall time is the floor that orchestration through this service costs one upgrade; the one-VM bench sets
//   it beside the saga and the raw QMP baseline.
// - `emptyUpgradeOnHost`, a shape the saga does not have: the same workflow run on the host's own queue by the
//   host's worker, its three steps local activities of that worker (a marker each in the history, no round trip
//   through the service). The benches measure it beside the first to show what that shape would change.
import { patched, proxyActivities, proxyLocalActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { RetryPolicy } from '@temporalio/common';
import { phaseKey } from '../../workflows/search-attributes';

export interface FloorActivities {
  /** Returns its name: the step of the saga it stands for. */
  step(name: string): Promise<string>;
}

/** The grouped saga's round trips: inspectAndProbe, startAndMigrate, verifyAndFinalize. */
export const floorSteps = ['inspectAndProbe', 'startAndMigrate', 'verifyAndFinalize'] as const;

// The saga's retry policy for its steps (workflows/upgrade-vm.ts): it shapes the commands, not the time.
const retry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 5 };

export function emptyUpgrade(activityTaskQueue: string): Promise<string[]> {
  const { step } = proxyActivities<FloorActivities>({
    taskQueue: activityTaskQueue,
    startToCloseTimeout: 120_000,
    heartbeatTimeout: 15_000,
    retry,
  });
  return emptySaga(step);
}

export function emptyUpgradeOnHost(): Promise<string[]> {
  const { step } = proxyLocalActivities<FloorActivities>({ startToCloseTimeout: 120_000, retry });
  return emptySaga(step);
}

async function emptySaga(step: FloorActivities['step']): Promise<string[]> {
  patched('empty-upgrade');
  const done: string[] = [];
  done.push(await step(floorSteps[0]));
  upsertSearchAttributes({ [phaseKey.name]: ['migrate'] });
  done.push(await step(floorSteps[1]));
  done.push(await step(floorSteps[2]));
  upsertSearchAttributes({ [phaseKey.name]: ['done'] });
  return done;
}
