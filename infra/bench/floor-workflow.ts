// Bench only: the Temporal part of one upgradeVm with none of its work. The same start (with the same search
// attributes), the same patch marker, the same FleetPhase milestones and three activities on another worker's
// task queue, each returning at once. Its wall time is the floor that orchestration through this service
// costs one upgrade; the one-VM bench sets it beside the saga and the raw QMP baseline.
import { patched, proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import { phaseKey } from '../../workflows/search-attributes';

export interface FloorActivities {
  /** Returns its name: the step of the saga it stands for. */
  step(name: string): Promise<string>;
}

/** The grouped saga's round trips: inspectAndProbe, startAndMigrate, verifyAndFinalize. */
export const floorSteps = ['inspectAndProbe', 'startAndMigrate', 'verifyAndFinalize'] as const;

export async function emptyUpgrade(activityTaskQueue: string): Promise<string[]> {
  // The saga's options for its steps (workflows/upgrade-vm.ts): they shape the commands, not the time.
  const { step } = proxyActivities<FloorActivities>({
    taskQueue: activityTaskQueue,
    startToCloseTimeout: 120_000,
    heartbeatTimeout: 15_000,
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 5 },
  });
  patched('empty-upgrade');
  const done: string[] = [];
  done.push(await step(floorSteps[0]));
  upsertSearchAttributes({ [phaseKey.name]: ['migrate'] });
  done.push(await step(floorSteps[1]));
  done.push(await step(floorSteps[2]));
  upsertSearchAttributes({ [phaseKey.name]: ['done'] });
  return done;
}
