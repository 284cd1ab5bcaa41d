// The migration policy of one VM upgrade, with its documented defaults. Pure data.
import type { Strategy } from '../../activities/capabilities/features';

export interface MigrationPolicy {
  /** Strategies in preference order; the first both QEMU builds support is used. */
  strategies: Strategy[];
  /** Backends (device ids or QOM paths) deliberately re-created on the destination, never transferred. */
  excludeBackends: string[];
  /** Refuse (and touch nothing) unless backends can be transferred. */
  requireBackendTransfer: boolean;
  /** The migration channel's transport. Backend transfer and CPR pass file descriptors: UNIX only. */
  transport: 'unix' | 'tcp';
  /** QEMU `downtime-limit`, milliseconds. */
  downtimeLimitMs: number;
  /** QEMU `max-bandwidth`, MiB/s; 0 means unlimited (QEMU's own default, 128 MiB/s, is meant for networks). */
  bandwidthLimitMiBps: number;
  /** Cancel and roll back when the migration takes longer than this per GiB of guest RAM (KubeVirt: 150 s). */
  completionTimeoutPerGiBSec: number;
  /** Cancel and roll back when no byte moved for this long. */
  progressTimeoutSec: number;
  /** QEMU `auto-converge`: throttle the guest's CPUs when RAM is dirtied faster than it moves. */
  autoConverge: boolean;
}

export const defaultPolicy: MigrationPolicy = {
  strategies: ['backend-transfer', 'cpr-transfer', 'plain'],
  excludeBackends: [],
  requireBackendTransfer: false,
  transport: 'unix',
  downtimeLimitMs: 300,
  bandwidthLimitMiBps: 0,
  completionTimeoutPerGiBSec: 150,
  progressTimeoutSec: 150,
  autoConverge: false,
};

export function withDefaults(policy: Partial<MigrationPolicy> | undefined): MigrationPolicy {
  return { ...defaultPolicy, ...(policy ?? {}) };
}

/** The whole migration's deadline: per GiB of RAM, never under one minute. */
export function completionTimeoutSec(policy: MigrationPolicy, ramMiB: number): number {
  return Math.max(60, Math.ceil((policy.completionTimeoutPerGiBSec * ramMiB) / 1024));
}

/** Every strategy, checked complete by the compiler. */
const knownStrategies: Record<Strategy, true> = {
  'backend-transfer': true,
  'cpr-transfer': true,
  'cpr-exec': true,
  plain: true,
};

/** What makes a policy unusable, one phrase per field; empty when it is fine. Pure. */
export function problemsOf(policy: MigrationPolicy): string[] {
  const out: string[] = [];
  const number = (field: keyof MigrationPolicy, min: number, max: number) => {
    const v = policy[field];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      out.push(`${field} must be a number from ${min} to ${max} (got ${String(v)})`);
    }
  };
  number('downtimeLimitMs', 1, 600_000);
  number('bandwidthLimitMiBps', 0, 1_048_576);
  number('completionTimeoutPerGiBSec', 1, 86_400);
  number('progressTimeoutSec', 1, 86_400);
  const known = new Set(Object.keys(knownStrategies));
  if (!Array.isArray(policy.strategies) || policy.strategies.some((s) => !known.has(s))) {
    out.push(`strategies must name only ${[...known].join(', ')}`);
  }
  if (!Array.isArray(policy.excludeBackends) || policy.excludeBackends.some((b) => typeof b !== 'string')) {
    out.push('excludeBackends must be a list of backend names');
  }
  if (policy.transport !== 'unix' && policy.transport !== 'tcp') out.push('transport must be unix or tcp');
  if (typeof policy.requireBackendTransfer !== 'boolean') out.push('requireBackendTransfer must be true or false');
  if (typeof policy.autoConverge !== 'boolean') out.push('autoConverge must be true or false');
  return out;
}
