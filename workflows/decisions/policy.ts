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
