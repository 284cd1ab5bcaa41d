// Step 3 of the saga: decide how one VM moves. Pure: the same facts always give the same plan.
// Daniel's rule from the seed: ask both sides what they can transfer, take the intersection, subtract what
// is deliberately changed, and pass exactly that list to the migration.
import type { DialectName } from '../../activities/capabilities/dialects';
import type { Strategy } from '../../activities/capabilities/features';
import type { MigrationPolicy } from './policy';

/** What inspecting the source found. */
export interface SourceFacts {
  qemuVersion: string;
  /** Concrete machine type, e.g. `pc-i440fx-7.2`. */
  machine: string;
  ramMiB: number;
  /** Strategies the source VM can use (its build and its RAM), in preference order. */
  strategies: Strategy[];
  dialect: DialectName;
  /** Backends the source can hand over now. */
  transferable: string[];
}

/** What probing the target binary found. */
export interface TargetFacts {
  label: string;
  qemuVersion: string;
  dialect: DialectName;
  migrationModes: string[];
  machineTypes: string[];
  /** The tap option permitting local migration, in the `local` dialect. */
  tapPermitOption?: string;
  /** The `x-ignore-shared` migration capability exists. */
  ignoreShared?: boolean;
}

export type ImplementedStrategy = Exclude<Strategy, 'cpr-exec'>;

export interface MigrationPlan {
  strategy: ImplementedStrategy;
  /** The dialect both sides speak, `none` unless the strategy is backend-transfer. */
  dialect: DialectName;
  /** Backends to hand over; the destination re-creates every other one. */
  transferBackends: string[];
  /** The machine type the destination must be started with. */
  machine: string;
}

export type Decision = { kind: 'plan'; plan: MigrationPlan } | { kind: 'refused'; reason: string };

export function intersectMinus(a: readonly string[], b: readonly string[], minus: readonly string[]): string[] {
  const inB = new Set(b);
  const out = new Set(minus);
  return [...new Set(a)].filter((x) => inB.has(x) && !out.has(x)).sort();
}

/** Why a strategy cannot be used between these two builds, or undefined when it can. */
function unavailable(s: Strategy, source: SourceFacts, target: TargetFacts, candidates: string[]): string | undefined {
  switch (s) {
    case 'backend-transfer':
      if (source.dialect === 'none' || target.dialect === 'none') {
        return `backend transfer needs both builds to support it (source ${source.dialect}, target ${target.dialect})`;
      }
      if (source.dialect !== target.dialect) {
        return `the builds speak different backend-transfer dialects (source ${source.dialect}, target ${target.dialect})`;
      }
      if (candidates.length === 0) return 'no backend is transferable on both sides after exclusions';
      return undefined;
    case 'cpr-transfer':
      if (!source.strategies.includes('cpr-transfer')) {
        return 'cpr-transfer needs a source build with cpr-transfer and shared memfd/file RAM with aux-ram-share';
      }
      if (!target.migrationModes.includes('cpr-transfer')) return 'the target build has no cpr-transfer mode';
      return undefined;
    case 'cpr-exec':
      return 'cpr-exec is not implemented by this orchestrator';
    case 'plain':
      return undefined;
  }
}

export function decide(source: SourceFacts, target: TargetFacts, policy: MigrationPolicy): Decision {
  if (!target.machineTypes.includes(source.machine)) {
    return { kind: 'refused', reason: `target QEMU ${target.qemuVersion} has no machine type ${source.machine}` };
  }
  // Before the destination exists only the source can tell; the destination's own answer narrows it later.
  const candidates = intersectMinus(source.transferable, source.transferable, policy.excludeBackends);
  const allowed: Strategy[] = policy.requireBackendTransfer ? ['backend-transfer'] : policy.strategies;
  const reasons: string[] = [];
  for (const strategy of allowed) {
    const why = unavailable(strategy, source, target, candidates);
    if (why) {
      reasons.push(`${strategy}: ${why}`);
      continue;
    }
    if (policy.transport !== 'unix') {
      const detail =
        strategy === 'plain'
          ? 'a local migration runs over a UNIX socket'
          : `${strategy} passes file descriptors (SCM_RIGHTS), so the channel must be a UNIX socket`;
      return { kind: 'refused', reason: `transport ${policy.transport} refused: ${detail}` };
    }
    return {
      kind: 'plan',
      plan: {
        strategy: strategy as ImplementedStrategy,
        dialect: strategy === 'backend-transfer' ? source.dialect : 'none',
        transferBackends: strategy === 'backend-transfer' ? candidates : [],
        machine: source.machine,
      },
    };
  }
  const detail = reasons.length ? reasons.join('; ') : 'the policy lists no strategy';
  return {
    kind: 'refused',
    reason: policy.requireBackendTransfer ? `requireBackendTransfer cannot be met: ${detail}` : detail,
  };
}

/** After the destination answered: the list both sides agree on. Empty when the destination can take none. */
export function agreedTransferList(plan: MigrationPlan, destinationTransferable: readonly string[]): string[] {
  return intersectMinus(plan.transferBackends, destinationTransferable, []);
}
