// The activities a host worker offers the per-VM saga, as the workflow sees them.
// Trust boundary: nothing here names a path, a binary or a pid. A QEMU process is named by the VM id, its
// generation (the record's counter, +1 for each destination) and an allow-listed version label; the host
// worker derives sockets, logs and pids from its own runtime folder.
import type { DialectName } from '../capabilities/dialects';
import type { MigrationPlan, SourceFacts, TargetFacts } from '../../workflows/decisions/plan';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import type { HostDescription, HostInventory, HostVmInventory } from './inventory';

export interface ProcessRef {
  generation: number;
  label: string;
}

export interface SourceInspection extends SourceFacts {
  vmId: string;
  process: ProcessRef;
  status: string;
}

export interface DestinationStarted {
  process: ProcessRef;
  /** What the destination itself reports transferable; null where its dialect cannot tell. */
  transferable: string[] | null;
}

export interface MigrationProgress {
  status: string;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
}

export interface MigrationOutcome {
  strategy: MigrationPlan['strategy'];
  transferredBackends: string[];
  totalTimeMs: number;
  /** Downtime as the source QEMU reports it. */
  downtimeMs: number | null;
  /** The guest's whole pause from QMP event timestamps: source STOP → destination RESUME. */
  guestPauseMs: number | null;
  /** The orchestrator's switchover gap: MIGRATION completed → destination RESUME. */
  switchoverGapMs: number | null;
  transferredBytes: number;
  /** True when this attempt found the migration already done by an earlier attempt. */
  reconciled: boolean;
}

export interface Verification {
  status: string;
  qemuVersion: string;
  devices: string[];
}

/** The two reads of steps 1–2 in one activity. */
export interface InspectedAndProbed {
  source: SourceInspection;
  target: TargetFacts;
}

/**
 * Steps 4–6 in one activity. `narrowed`: the destination itself can take fewer backends than the plan
 * transfers, so it was not migrated into (the workflow rolls it back and decides again with `transferable`).
 */
export type StartedAndMigrated =
  | { kind: 'migrated'; destination: DestinationStarted; migration: MigrationOutcome; startMs: number }
  | { kind: 'narrowed'; transferable: string[] };

/** Steps 7–8 in one activity. */
export interface VerifiedAndFinalized {
  verification: Verification;
  verifyMs: number;
}

export interface RollbackOutcome {
  /** The process the VM runs in after the rollback. */
  runningIn: ProcessRef | null;
  actions: string[];
}

export interface HostActivities {
  inspectSource(input: { vmId: string }): Promise<SourceInspection>;
  probeTarget(input: { label: string }): Promise<TargetFacts>;
  startDestination(input: {
    vmId: string;
    source: ProcessRef;
    destination: ProcessRef;
    plan: MigrationPlan;
  }): Promise<DestinationStarted>;
  migrate(input: {
    vmId: string;
    source: ProcessRef;
    destination: ProcessRef;
    plan: MigrationPlan;
    policy: MigrationPolicy;
    ramMiB: number;
    /** The workflow to send progress to (rate-limited signals), when asked. */
    progressWorkflowId?: string;
  }): Promise<MigrationOutcome>;
  verify(input: { vmId: string; destination: ProcessRef; expectVersion: string }): Promise<Verification>;
  finalize(input: { vmId: string; source: ProcessRef; destination: ProcessRef }): Promise<void>;
  rollback(input: {
    vmId: string;
    source: ProcessRef;
    destination: ProcessRef;
    /** The step that failed timed out on the source's monitor (MonitorUnresponsive): one more silence is final. */
    sourceSilent?: boolean;
  }): Promise<RollbackOutcome>;
  // The saga's steps grouped where no decision of the workflow falls between them: one round trip each.
  inspectAndProbe(input: { vmId: string; label: string }): Promise<InspectedAndProbed>;
  /** startDestination, then (unless the destination narrows the plan) migrate, holding a migration slot. */
  startAndMigrate(input: Parameters<HostActivities['migrate']>[0]): Promise<StartedAndMigrated>;
  /** verify, then finalize; a finalize failure of no handled type is raised as FinalizeFailed (retryable). */
  verifyAndFinalize(input: {
    vmId: string;
    source: ProcessRef;
    destination: ProcessRef;
    expectVersion: string;
  }): Promise<VerifiedAndFinalized>;
  // Fleet (activities/upgrade/inventory.ts): the host's VMs and allowed labels, for upgradeHost and preflight.
  listVms(input: Record<string, never>): Promise<HostInventory>;
  describeHost(input: Record<string, never>): Promise<HostDescription>;
  /** `fleet-upgrade inventory`: every VM with the version and run state its live QEMU reports. */
  inventoryVms(input: Record<string, never>): Promise<HostVmInventory>;
}

export type { DialectName };
