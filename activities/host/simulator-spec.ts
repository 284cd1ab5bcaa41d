// A host config's `simulator` binary: an in-process QEMU simulator (infra/simulator) standing in for a
// qemu-system-* executable. Only the simulator launcher (sim-launcher.ts) runs it; this module holds what the
// config needs to read one, so the config does not depend on the launcher.
import { z } from 'zod';
import { dialectNames } from '../capabilities/dialects';
import { absPath } from './validate';

export const SimulatorSchema = z.strictObject({
  dialect: z.enum(dialectNames),
  /** Reported by the greeting and query-version, e.g. 10.0.50. */
  version: z.string().regex(/^\d{1,3}\.\d{1,3}\.\d{1,3}$/, 'must be a QEMU version such as 10.0.50'),
  /** The simulator's ledger (backend owners, lifecycle events); none: ownership kept in memory only. */
  stateDir: absPath.optional(),
  /** RAM transfer speed of a migration (the simulator's default: 2000). */
  ramRateMbps: z.int().min(1).max(10_000_000).optional(),
  /**
   * Backend kinds this build reports as transferable and takes in a migration: fewer than its dialect's
   * (a destination that narrows the plan). None given: all of the dialect's. A kind the dialect does not
   * carry is refused by the simulator when it starts (the probe or the launch fails with its words).
   */
  transferableKinds: z
    .array(z.enum(['tap', 'vhost-user']))
    .refine((k) => new Set(k).size === k.length, 'must not repeat a kind')
    .optional(),
});

export type SimulatorSpec = z.output<typeof SimulatorSchema>;

/** Reserved for simulators' display paths: a `path` binary may not start with it. */
export const SIMULATOR_PATH_PREFIX = '/in-process-qemu-simulator/';

/**
 * The absolute path a simulator binary is shown as — in VM records (`binary.path`), logs and probe errors:
 * `/in-process-qemu-simulator/<dialect>/<version>[/transferable-<kinds>][/ram-rate-<N>][/state<stateDir>]`
 * (kinds joined by `+`, `none` for none). It names no file, and nothing reads it back: which launcher runs
 * a binary is decided by its config entry (launcherFor). It tells builds apart, as a probe is cached by it.
 */
export function simulatorPath(spec: SimulatorSpec): string {
  return (
    `${SIMULATOR_PATH_PREFIX}${spec.dialect}/${spec.version}` +
    (spec.transferableKinds !== undefined ? `/transferable-${spec.transferableKinds.join('+') || 'none'}` : '') +
    (spec.ramRateMbps !== undefined ? `/ram-rate-${spec.ramRateMbps}` : '') +
    (spec.stateDir !== undefined ? `/state${spec.stateDir}` : '')
  );
}
