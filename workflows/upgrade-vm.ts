// Workflow `upgradeVm`: the per-VM saga of docs/DESIGN.md. Each step is an activity on the VM's host queue;
// the decisions between them are pure functions. Deterministic: no I/O here.
import {
  ActivityCancellationType,
  CancellationScope,
  defineQuery,
  defineSignal,
  isCancellation,
  patched,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type {
  HostActivities,
  MigrationOutcome,
  MigrationProgress,
  ProcessRef,
  RollbackOutcome,
  SourceInspection,
} from '../activities/upgrade/api';
import { failureOf, failureTypes, isRefusal, reasonOf } from './failures';
import { hostTaskQueue, messageNames } from './names';
import {
  agreedTransferList,
  decide,
  type BackendPlan,
  type MigrationPlan,
  type RamMode,
  type TargetFacts,
} from './decisions/plan';
import { completionTimeoutSec, problemsOf, withDefaults, type MigrationPolicy } from './decisions/policy';
import { phaseKey } from './search-attributes';

export interface UpgradeVmInput {
  hostId: string;
  vmId: string;
  /** Version label of the target QEMU, as allow-listed by the host worker. */
  target: string;
  policy?: Partial<MigrationPolicy>;
}

/**
 * `needs-operator`: which process holds the guest could not be told (the destination may have run it and then
 * died or hung); every candidate process was kept and the VM's record says so (`fleet-upgrade vm resolve`).
 */
export type UpgradeOutcome = 'upgraded' | 'already-on-target' | 'refused' | 'rolled-back' | 'failed' | 'needs-operator';

export type Phase =
  | 'inspect'
  | 'probe'
  | 'decide'
  | 'start-destination'
  | 'migrate'
  | 'verify'
  | 'finalize'
  | 'rollback'
  | 'migrate-back'
  | 'done';

export interface UpgradeVmResult {
  outcome: UpgradeOutcome;
  hostId: string;
  vmId: string;
  from?: { label: string; version: string };
  to?: { label: string; version?: string };
  strategy?: MigrationPlan['strategy'];
  transferredBackends: string[];
  /** How each network backend reaches the destination, and why. */
  backends?: BackendPlan[];
  /** Guest RAM shared by both processes or copied through the stream. */
  ram?: RamMode;
  /** Why it did not upgrade, or what went wrong on the way. */
  reason?: string;
  migration?: MigrationOutcome;
  rollback?: RollbackOutcome;
  phases: { phase: Phase; ms: number }[];
}

export interface UpgradeVmProgress {
  phase: Phase;
  strategy?: MigrationPlan['strategy'];
  transferredBackends: string[];
  backends?: BackendPlan[];
  ram?: RamMode;
  migration?: MigrationProgress;
  outcome?: UpgradeOutcome;
  reason?: string;
}

export const upgradeVmProgressQuery = defineQuery<UpgradeVmProgress>(messageNames.progressQuery);
export const migrationProgressSignal = defineSignal<[MigrationProgress]>(messageNames.migrationProgressSignal);

const handledFailures = Object.values(failureTypes);

/** Changes of the workflow's shape, each guarded by `patched` so histories recorded before replay. */
export const patches = {
  /** Inspect and probe run together (they were sequential). */
  inspectAndProbeTogether: 'inspect-and-probe-together',
  /** A failed inspect, probe or finalize ends in a result that says so, not in a failed workflow. */
  failuresEndInAResult: 'failures-end-in-a-result',
  /**
   * A destination that fails verification: if it is gone, the rollback decides (it never resumes a stale
   * source); if it lives, it becomes the VM's process (finalize) before the VM migrates back from it.
   */
  verifyFailureByCause: 'verify-failure-by-cause',
  /**
   * FleetPhase changes only at the milestones an operator filters by (inspect, migrate, rollback,
   * migrate-back, done), not at every step: each upsert is a history event and a visibility write.
   */
  phaseAtMilestones: 'phase-at-milestones',
  /**
   * Once the destination may have run the guest, a cancellation no longer stops the upgrade: verify and
   * finalize run to their end (a migration back was started instead).
   */
  finishAfterSwitchover: 'finish-after-switchover',
  /** A migration back that fails is undone by the rollback of its own steps (it left them as they were). */
  migrateBackCompensates: 'migrate-back-compensates',
  /** A policy with values no migration can use (NaN, negative timeouts) is refused before anything starts. */
  policyValidated: 'policy-validated',
} as const;

/** The phases FleetPhase shows (patches.phaseAtMilestones); the others are in the progress query only. */
export const milestonePhases: ReadonlySet<Phase> = new Set(['inspect', 'migrate', 'rollback', 'migrate-back', 'done']);

function hostActivities(hostId: string, startToCloseMs: number, heartbeatMs?: number) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(hostId),
    startToCloseTimeout: startToCloseMs,
    ...(heartbeatMs ? { heartbeatTimeout: heartbeatMs } : {}),
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: {
      initialInterval: '1s',
      backoffCoefficient: 2,
      maximumInterval: '10s',
      maximumAttempts: 5,
      nonRetryableErrorTypes: handledFailures,
    },
  });
}

/** Whether a failure says a QEMU process the step needed is gone. */
const isProcessLost = (err: unknown) => failureOf(err).types.has(failureTypes.processLost);

/** Whether the host worker kept every process because an operator must decide. */
const needsOperator = (err: unknown) => failureOf(err).types.has(failureTypes.needsOperator);

export async function upgradeVm(input: UpgradeVmInput): Promise<UpgradeVmResult> {
  const { hostId, vmId } = input;
  const policy = withDefaults(input.policy);
  const policyProblems = problemsOf(policy);
  // Every step heartbeats: a host worker lost mid-step is noticed in 15 s and the step retried elsewhere.
  const host = hostActivities(hostId, 120_000, 15_000);
  const progress: UpgradeVmProgress = { phase: 'inspect', transferredBackends: [] };
  const result: UpgradeVmResult = { outcome: 'failed', hostId, vmId, transferredBackends: [], phases: [] };
  setHandler(upgradeVmProgressQuery, () => progress);
  setHandler(migrationProgressSignal, (p) => {
    progress.migration = p;
  });

  const atMilestones = patched(patches.phaseAtMilestones);
  const showPhase = (phase: Phase) => {
    if (!atMilestones || milestonePhases.has(phase)) upsertSearchAttributes({ [phaseKey.name]: [phase] });
  };
  let phaseStarted = Date.now();
  const enter = (phase: Phase) => {
    const now = Date.now();
    if (result.phases.length || phase !== 'inspect')
      result.phases.push({ phase: progress.phase, ms: now - phaseStarted });
    phaseStarted = now;
    progress.phase = phase;
    showPhase(phase);
  };
  const finish = (outcome: UpgradeOutcome, reason?: string): UpgradeVmResult => {
    enter('done');
    progress.outcome = outcome;
    progress.reason = reason;
    return { ...result, outcome, ...(reason ? { reason } : {}) };
  };

  // 1–2. Inspect the source and probe the target binary. Both only read, so they run together. A starter
  // that set FleetPhase=inspect already (upgradeHost, `vm upgrade`) saves the upsert.
  if (!atMilestones || workflowInfo().typedSearchAttributes.get(phaseKey) !== 'inspect') {
    upsertSearchAttributes({ [phaseKey.name]: ['inspect'] });
  }
  result.to = { label: input.target };
  if (policyProblems.length && patched(patches.policyValidated)) {
    return finish('refused', `invalid policy: ${policyProblems.join('; ')}`);
  }
  let source: SourceInspection;
  let target: TargetFacts;
  try {
    if (patched(patches.inspectAndProbeTogether)) {
      [source, target] = await Promise.all([host.inspectSource({ vmId }), host.probeTarget({ label: input.target })]);
    } else {
      source = await host.inspectSource({ vmId });
      if (source.process.label === input.target) {
        result.from = { label: source.process.label, version: source.qemuVersion };
        return finish('already-on-target');
      }
      enter('probe');
      target = await host.probeTarget({ label: input.target });
    }
  } catch (err) {
    if (isRefusal(err)) return finish('refused', reasonOf(err));
    // Nothing was touched; the source runs as before, unless the failure says it is gone.
    if (patched(patches.failuresEndInAResult)) return finish('failed', reasonOf(err));
    throw err;
  }
  result.from = { label: source.process.label, version: source.qemuVersion };
  if (source.process.label === input.target) return finish('already-on-target');
  result.to.version = target.qemuVersion;

  // 3. Decide.
  enter('decide');
  const decision = decide(source, target, policy);
  if (decision.kind === 'refused') return finish('refused', decision.reason);
  let plan = decision.plan;
  const note = (p: MigrationPlan) => {
    result.strategy = progress.strategy = p.strategy;
    result.transferredBackends = progress.transferredBackends = p.transferBackends;
    if (p.backends) result.backends = progress.backends = p.backends;
    if (p.ram) result.ram = progress.ram = p.ram;
  };
  note(plan);

  const migrator = hostActivities(hostId, (completionTimeoutSec(policy, source.ramMiB) + 60) * 1000, 15_000);
  const destination: ProcessRef = { generation: source.process.generation + 1, label: input.target };
  const step = { vmId, source: source.process, destination };

  try {
    // 4. Start the destination; then narrow the list to what the destination itself can take.
    enter('start-destination');
    let started = await host.startDestination({ ...step, plan });
    const agreed =
      started.transferable === null ? plan.transferBackends : agreedTransferList(plan, started.transferable);
    if (agreed.join('\n') !== plan.transferBackends.join('\n')) {
      await host.rollback(step);
      const again = decide({ ...source, transferable: agreed }, target, policy);
      if (again.kind === 'refused') return finish('refused', again.reason);
      plan = again.plan;
      note(plan);
      started = await host.startDestination({ ...step, plan });
    }

    // 5–6. Migrate, then switch over inside the same activity.
    enter('migrate');
    result.migration = await migrator.migrate({
      ...step,
      plan,
      policy,
      ramMiB: source.ramMiB,
      progressWorkflowId: workflowInfo().workflowId,
    });
    progress.migration = {
      status: 'completed',
      transferredBytes: result.migration.transferredBytes,
      remainingBytes: 0,
      totalBytes: progress.migration?.totalBytes ?? result.migration.transferredBytes,
    };
  } catch (err) {
    if (!failureOf(err).destinationRan) {
      return await rollBack(err);
    }
  }

  // 7. Verify, then finalize; a destination that ran but does not verify is migrated back. The destination
  // may have run by now: a cancellation no longer stops the upgrade, it finishes.
  if (patched(patches.finishAfterSwitchover)) return await CancellationScope.nonCancellable(verifyAndFinalize);
  return await verifyAndFinalize();

  async function verifyAndFinalize(): Promise<UpgradeVmResult> {
    try {
      enter('verify');
      await host.verify({ vmId, destination, expectVersion: target.qemuVersion });
    } catch (err) {
      if (patched(patches.verifyFailureByCause)) {
        if (isProcessLost(err)) return await rollBack(err);
        return await migrateBack(err, true);
      }
      return await migrateBack(err);
    }
    enter('finalize');
    try {
      await host.finalize(step);
    } catch (err) {
      if (!patched(patches.failuresEndInAResult)) throw err;
      // The destination ran and is gone before it became the VM's process: the rollback decides.
      if (isProcessLost(err)) return await rollBack(err);
      return finish('failed', reasonOf(err));
    }
    return finish('upgraded');
  }

  async function rollBack(err: unknown): Promise<UpgradeVmResult> {
    const cancelled = isCancellation(err);
    enter('rollback');
    try {
      result.rollback = await CancellationScope.nonCancellable(() => host.rollback(step));
    } catch (rollbackErr) {
      if (needsOperator(rollbackErr)) return finish('needs-operator', `${reasonOf(err)}; ${reasonOf(rollbackErr)}`);
      return finish('failed', `${reasonOf(err)}; rollback failed: ${reasonOf(rollbackErr)}`);
    }
    const runningIn = result.rollback.runningIn;
    if (runningIn !== null && runningIn.generation === destination.generation) {
      // The destination had run, or held the newest state: the upgrade finished instead, even when cancelled.
      return finish('upgraded', `${reasonOf(err)}; ${result.rollback.actions.join('; ')}`);
    }
    if (cancelled) throw err;
    if (runningIn === null) {
      return finish('failed', `${reasonOf(err)}; ${result.rollback.actions.join('; ')}`);
    }
    return finish('rolled-back', reasonOf(err));
  }

  /**
   * The destination ran the guest but failed verification: move the VM back to the old build. The source's
   * state is stale by then, so with `commitFirst` the destination first becomes the VM's process (the record
   * names it, the old source quits): a migration back starts from the process the record names.
   */
  async function migrateBack(err: unknown, commitFirst = false): Promise<UpgradeVmResult> {
    enter('migrate-back');
    const back: ProcessRef = { generation: destination.generation + 1, label: source.process.label };
    const reverse = { vmId, source: destination, destination: back };
    let undone: RollbackOutcome | undefined;
    try {
      await CancellationScope.nonCancellable(async () => {
        if (commitFirst) await host.finalize(step);
        try {
          await host.startDestination({ ...reverse, plan });
          await migrator.migrate({ ...reverse, plan, policy, ramMiB: source.ramMiB });
        } catch (backErr) {
          // Undo the way back as any failed step is undone: its destination goes if it never ran, and the
          // process the VM came from is resumed, or kept for an operator.
          if (patched(patches.migrateBackCompensates)) {
            undone = await host.rollback(reverse).catch((undoErr: unknown) => {
              throw needsOperator(undoErr) ? undoErr : backErr;
            });
          }
          throw backErr;
        }
        await host.finalize(reverse);
      });
    } catch (backErr) {
      if (needsOperator(backErr)) return finish('needs-operator', `${reasonOf(err)}; ${reasonOf(backErr)}`);
      const after = undone ? `; ${undone.actions.join('; ')}` : '';
      return finish('failed', `${reasonOf(err)}; migrating back failed: ${reasonOf(backErr)}${after}`);
    }
    return finish('rolled-back', `${reasonOf(err)}; migrated back to ${source.process.label}`);
  }
}
