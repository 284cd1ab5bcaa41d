// Workflow `upgradeVm`: the per-VM saga of docs/DESIGN.md. Each step is an activity on the VM's host queue;
// the decisions between them are pure functions. Deterministic: no I/O here.
import {
  ActivityCancellationType,
  ApplicationFailure,
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
import { failureOf, failureTypes, isRefusal, reasonOf, retryableFailureTypes } from './failures';
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
 * died or hung), or whether the one that holds it runs (its monitor did not answer twice); every candidate
 * process was kept and the VM's record says so (`fleet-upgrade vm resolve`).
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
  /** Inspect and probe run together: both only read. */
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
  /** A cancellation during inspect or probe ends the workflow cancelled (nothing was touched), not failed. */
  cancelledAtInspect: 'cancelled-at-inspect',
  /**
   * Three activities instead of six: inspect with probe, start-destination with migrate, verify with finalize
   * (activities/upgrade/grouped-steps.ts). A workflow of this shape has every patch above without its marker:
   * each marker costs a history event and a search-attribute upsert.
   */
  fewerRoundTrips: 'fewer-round-trips',
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

/** The workflow: the saga's steps in order. Each step below returns a result when the upgrade ends there. */
export async function upgradeVm(input: UpgradeVmInput): Promise<UpgradeVmResult> {
  const saga = new VmSaga(input);
  // 1–2. Inspect the source and probe the target binary (both only read, so they run together).
  const facts = await saga.inspectAndProbe();
  if ('outcome' in facts) return facts;
  // 3. Decide how the VM moves.
  const decided = saga.decide(facts.source, facts.target);
  if (decided) return decided;
  // 4–6. Start the destination, migrate, switch over; undone by the rollback before the switchover.
  const stopped = await saga.startAndMigrate(facts.source, facts.target);
  if (stopped) return stopped;
  // 7–8. Verify, then finalize; a destination that ran but does not verify is migrated back. The destination
  // may have run by now: a cancellation no longer stops the upgrade, it finishes.
  if (saga.since(patches.finishAfterSwitchover)) {
    return await CancellationScope.nonCancellable(() => saga.verifyAndFinalize(facts.source, facts.target));
  }
  return await saga.verifyAndFinalize(facts.source, facts.target);
}

/** One VM's saga: its state (result, progress, phase timing) and its steps, each an activity or two. */
class VmSaga {
  private readonly vmId: string;
  private readonly policy: MigrationPolicy;
  private readonly host: ReturnType<typeof hostActivities>;
  private readonly progress: UpgradeVmProgress = { phase: 'inspect', transferredBackends: [] };
  private readonly result: UpgradeVmResult;
  /** The shape of patches.fewerRoundTrips: grouped steps, and every earlier patch without a marker. */
  private readonly grouped: boolean;
  private readonly atMilestones: boolean;
  private phaseStarted = Date.now();
  private plan!: MigrationPlan;
  private migrator!: ReturnType<typeof hostActivities>;
  private step!: { vmId: string; source: ProcessRef; destination: ProcessRef };

  constructor(private readonly input: UpgradeVmInput) {
    const { hostId, vmId } = input;
    this.vmId = vmId;
    this.policy = withDefaults(input.policy);
    // Every step heartbeats: a host worker lost mid-step is noticed in 15 s and the step retried elsewhere.
    this.host = hostActivities(hostId, 120_000, 15_000);
    this.result = { outcome: 'failed', hostId, vmId, transferredBackends: [], phases: [] };
    setHandler(upgradeVmProgressQuery, () => this.progress);
    setHandler(migrationProgressSignal, (p) => {
      this.progress.migration = p;
    });
    this.grouped = patched(patches.fewerRoundTrips);
    this.atMilestones = this.since(patches.phaseAtMilestones);
  }

  /** Whether the workflow has a patch: every one does that has the grouped shape (markers cost events). */
  since(patch: string): boolean {
    return this.grouped || patched(patch);
  }

  /** The current phase took `ms` of the time since it began (an activity measured it); the next begins there. */
  private measured(ms: number, next: Phase): void {
    this.result.phases.push({ phase: this.progress.phase, ms });
    this.phaseStarted += ms;
    this.progress.phase = next;
  }

  private enter(phase: Phase): void {
    const now = Date.now();
    if (this.result.phases.length || phase !== 'inspect')
      this.result.phases.push({ phase: this.progress.phase, ms: now - this.phaseStarted });
    this.phaseStarted = now;
    this.progress.phase = phase;
    if (!this.atMilestones || milestonePhases.has(phase)) upsertSearchAttributes({ [phaseKey.name]: [phase] });
  }

  private finish(outcome: UpgradeOutcome, reason?: string): UpgradeVmResult {
    this.enter('done');
    this.progress.outcome = outcome;
    this.progress.reason = reason;
    return { ...this.result, outcome, ...(reason ? { reason } : {}) };
  }

  private note(p: MigrationPlan): void {
    const { result, progress } = this;
    result.strategy = progress.strategy = p.strategy;
    result.transferredBackends = progress.transferredBackends = p.transferBackends;
    if (p.backends) result.backends = progress.backends = p.backends;
    if (p.ram) result.ram = progress.ram = p.ram;
  }

  /** Steps 1–2. A starter that set FleetPhase=inspect already (upgradeHost, `vm upgrade`) saves the upsert. */
  async inspectAndProbe(): Promise<{ source: SourceInspection; target: TargetFacts } | UpgradeVmResult> {
    const { host, vmId, input, result } = this;
    if (!this.atMilestones || workflowInfo().typedSearchAttributes.get(phaseKey) !== 'inspect') {
      upsertSearchAttributes({ [phaseKey.name]: ['inspect'] });
    }
    result.to = { label: input.target };
    const policyProblems = problemsOf(this.policy);
    if (policyProblems.length && this.since(patches.policyValidated)) {
      return this.finish('refused', `invalid policy: ${policyProblems.join('; ')}`);
    }
    let source: SourceInspection;
    let target: TargetFacts;
    try {
      if (this.grouped) {
        ({ source, target } = await host.inspectAndProbe({ vmId, label: input.target }));
      } else if (patched(patches.inspectAndProbeTogether)) {
        [source, target] = await Promise.all([host.inspectSource({ vmId }), host.probeTarget({ label: input.target })]);
      } else {
        source = await host.inspectSource({ vmId });
        if (source.process.label === input.target) {
          result.from = { label: source.process.label, version: source.qemuVersion };
          return this.finish('already-on-target');
        }
        this.enter('probe');
        target = await host.probeTarget({ label: input.target });
      }
    } catch (err) {
      if (isCancellation(err) && this.since(patches.cancelledAtInspect)) throw err;
      if (isRefusal(err)) return this.finish('refused', reasonOf(err));
      // Nothing was touched; the source runs as before, unless the failure says it is gone.
      if (this.since(patches.failuresEndInAResult)) return this.finish('failed', reasonOf(err));
      throw err;
    }
    result.from = { label: source.process.label, version: source.qemuVersion };
    if (source.process.label === input.target) return this.finish('already-on-target');
    result.to.version = target.qemuVersion;
    return { source, target };
  }

  /** Step 3: the plan, from what both builds can do and the policy; a refusal ends the saga untouched. */
  decide(source: SourceInspection, target: TargetFacts): UpgradeVmResult | undefined {
    this.enter('decide');
    const decision = decide(source, target, this.policy);
    if (decision.kind === 'refused') return this.finish('refused', decision.reason);
    this.plan = decision.plan;
    this.note(this.plan);
    this.migrator = hostActivities(
      this.input.hostId,
      (completionTimeoutSec(this.policy, source.ramMiB) + 60) * 1000,
      15_000,
    );
    const destination: ProcessRef = { generation: source.process.generation + 1, label: this.input.target };
    this.step = { vmId: this.vmId, source: source.process, destination };
    return undefined;
  }

  /**
   * Steps 4–6: start the destination, narrow the plan to what the destination itself can take, migrate and
   * switch over inside one activity. A failure before the destination may have run is rolled back.
   */
  async startAndMigrate(source: SourceInspection, target: TargetFacts): Promise<UpgradeVmResult | undefined> {
    try {
      if (this.grouped) return await this.startAndMigrateGrouped(source, target);
      const { host, step } = this;
      this.enter('start-destination');
      let started = await host.startDestination({ ...step, plan: this.plan });
      const agreed =
        started.transferable === null
          ? this.plan.transferBackends
          : agreedTransferList(this.plan, started.transferable);
      if (agreed.join('\n') !== this.plan.transferBackends.join('\n')) {
        const refused = await this.narrow(source, target, agreed);
        if (refused) return refused;
        started = await host.startDestination({ ...step, plan: this.plan });
      }
      this.enter('migrate');
      this.migrated(await this.migrator.migrate(this.migration(source)));
    } catch (err) {
      if (!failureOf(err).destinationRan) return await this.rollBack(err);
    }
    return undefined;
  }

  /** Steps 4–6 as one activity (patches.fewerRoundTrips); a narrowed plan starts it once more. */
  private async startAndMigrateGrouped(
    source: SourceInspection,
    target: TargetFacts,
  ): Promise<undefined | UpgradeVmResult> {
    this.enter('migrate');
    let done = await this.migrator.startAndMigrate(this.migration(source));
    if (done.kind === 'narrowed') {
      const refused = await this.narrow(source, target, done.transferable);
      if (refused) return refused;
      done = await this.migrator.startAndMigrate(this.migration(source));
      if (done.kind === 'narrowed') {
        throw ApplicationFailure.nonRetryable(
          `the destination of ${this.vmId} took fewer backends at each launch: ${done.transferable.join(', ') || 'none'}`,
          failureTypes.migrationFailed,
        );
      }
    }
    this.result.phases.push({ phase: 'start-destination', ms: done.startMs });
    this.phaseStarted += done.startMs;
    this.migrated(done.migration);
    return undefined;
  }

  /** The destination can take fewer backends than planned: it goes (it never ran), and the plan is made again. */
  private async narrow(
    source: SourceInspection,
    target: TargetFacts,
    agreed: string[],
  ): Promise<UpgradeVmResult | undefined> {
    await this.host.rollback(this.step);
    const again = decide({ ...source, transferable: agreed }, target, this.policy);
    if (again.kind === 'refused') {
      // Nothing moved: the result does not speak of the first plan.
      const { result, progress } = this;
      result.transferredBackends = progress.transferredBackends = [];
      for (const o of [result, progress]) {
        delete o.strategy;
        delete o.backends;
        delete o.ram;
      }
      return this.finish('refused', again.reason);
    }
    this.plan = again.plan;
    this.note(this.plan);
    return undefined;
  }

  private migration(source: SourceInspection) {
    return {
      ...this.step,
      plan: this.plan,
      policy: this.policy,
      ramMiB: source.ramMiB,
      progressWorkflowId: workflowInfo().workflowId,
    };
  }

  private migrated(m: MigrationOutcome): void {
    const { result, progress } = this;
    result.migration = m;
    progress.migration = {
      status: 'completed',
      transferredBytes: m.transferredBytes,
      remainingBytes: 0,
      totalBytes: progress.migration?.totalBytes ?? m.transferredBytes,
    };
  }

  /** Steps 7–8. */
  async verifyAndFinalize(source: SourceInspection, target: TargetFacts): Promise<UpgradeVmResult> {
    if (this.grouped) return await this.verifyAndFinalizeGrouped(source, target);
    const { host, vmId, step } = this;
    try {
      this.enter('verify');
      await host.verify({ vmId, destination: step.destination, expectVersion: target.qemuVersion });
    } catch (err) {
      if (patched(patches.verifyFailureByCause)) return await this.notVerified(source, err);
      return await this.migrateBack(source, err);
    }
    this.enter('finalize');
    try {
      await host.finalize(step);
    } catch (err) {
      if (!patched(patches.failuresEndInAResult)) throw err;
      return await this.notFinalized(err);
    }
    return this.finish('upgraded');
  }

  /** Steps 7–8 as one activity (patches.fewerRoundTrips); its failure says which of the two failed. */
  private async verifyAndFinalizeGrouped(source: SourceInspection, target: TargetFacts): Promise<UpgradeVmResult> {
    const { vmId, step } = this;
    this.enter('verify');
    try {
      const done = await this.host.verifyAndFinalize({ ...step, vmId, expectVersion: target.qemuVersion });
      this.measured(done.verifyMs, 'finalize');
    } catch (err) {
      if (failureOf(err).types.has(retryableFailureTypes.finalizeFailed)) return await this.notFinalized(err);
      return await this.notVerified(source, err);
    }
    return this.finish('upgraded');
  }

  /** The destination did not verify: if it is gone, the rollback decides (it never resumes a stale source). */
  private async notVerified(source: SourceInspection, err: unknown): Promise<UpgradeVmResult> {
    if (isProcessLost(err)) return await this.rollBack(err);
    return await this.migrateBack(source, err, true);
  }

  /** The destination ran and is gone before it became the VM's process: the rollback decides. */
  private async notFinalized(err: unknown): Promise<UpgradeVmResult> {
    if (isProcessLost(err)) return await this.rollBack(err);
    return this.finish('failed', reasonOf(err));
  }

  /** The compensation of steps 4–8, as the recovery table decides on the host (workflows/decisions/recovery.ts). */
  private async rollBack(err: unknown): Promise<UpgradeVmResult> {
    const cancelled = isCancellation(err);
    this.enter('rollback');
    let rollback: RollbackOutcome;
    try {
      // A source that already did not answer is asked once more, not five times.
      const sourceSilent = failureOf(err).types.has(failureTypes.monitorUnresponsive);
      const input = sourceSilent ? { ...this.step, sourceSilent } : this.step;
      rollback = this.result.rollback = await CancellationScope.nonCancellable(() => this.host.rollback(input));
    } catch (rollbackErr) {
      if (needsOperator(rollbackErr)) {
        return this.finish('needs-operator', `${reasonOf(err)}; ${reasonOf(rollbackErr)}`);
      }
      return this.finish('failed', `${reasonOf(err)}; rollback failed: ${reasonOf(rollbackErr)}`);
    }
    const runningIn = rollback.runningIn;
    if (runningIn !== null && runningIn.generation === this.step.destination.generation) {
      // The destination had run, or held the newest state: the upgrade finished instead, even when cancelled.
      return this.finish('upgraded', `${reasonOf(err)}; ${rollback.actions.join('; ')}`);
    }
    if (cancelled) throw err;
    if (runningIn === null) return this.finish('failed', `${reasonOf(err)}; ${rollback.actions.join('; ')}`);
    return this.finish('rolled-back', reasonOf(err));
  }

  /**
   * The destination ran the guest but failed verification: move the VM back to the old build. The source's
   * state is stale by then, so with `commitFirst` the destination first becomes the VM's process (the record
   * names it, the old source quits): a migration back starts from the process the record names.
   */
  private async migrateBack(source: SourceInspection, err: unknown, commitFirst = false): Promise<UpgradeVmResult> {
    const { host, vmId, step, plan, policy } = this;
    this.enter('migrate-back');
    const back: ProcessRef = { generation: step.destination.generation + 1, label: source.process.label };
    const reverse = { vmId, source: step.destination, destination: back };
    let undone: RollbackOutcome | undefined;
    try {
      await CancellationScope.nonCancellable(async () => {
        if (commitFirst) await host.finalize(step);
        try {
          await host.startDestination({ ...reverse, plan });
          await this.migrator.migrate({ ...reverse, plan, policy, ramMiB: source.ramMiB });
        } catch (backErr) {
          // Undo the way back as any failed step is undone: its destination goes if it never ran, and the
          // process the VM came from is resumed, or kept for an operator.
          if (this.since(patches.migrateBackCompensates)) {
            undone = await host.rollback(reverse).catch((undoErr: unknown) => {
              throw needsOperator(undoErr) ? undoErr : backErr;
            });
          }
          throw backErr;
        }
        await host.finalize(reverse);
      });
    } catch (backErr) {
      if (needsOperator(backErr)) return this.finish('needs-operator', `${reasonOf(err)}; ${reasonOf(backErr)}`);
      const after = undone ? `; ${undone.actions.join('; ')}` : '';
      return this.finish('failed', `${reasonOf(err)}; migrating back failed: ${reasonOf(backErr)}${after}`);
    }
    return this.finish('rolled-back', `${reasonOf(err)}; migrated back to ${source.process.label}`);
  }
}
