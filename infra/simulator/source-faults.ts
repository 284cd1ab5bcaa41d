// Faults a source VM can suffer during its upgrade, armed over QMP (`x-sim-inject-fault {phase, action}`), and
// a small seeded generator to pick them, so a run can be replayed. Shared by the rollout's scale test
// (test/e2e/rollout-scale.test.ts) and the fleet benchmark's faulty runs (infra/bench/fleet.ts).
import type { FaultAction, FaultPhase } from './faults';

/** By phase of its upgrade: its first command (inspect), migration setup, the active copy, the device state
 *  after the guest stopped. */
export const SOURCE_FAULTS = [
  'qmp:error',
  'qmp:crash',
  'qmp:hang',
  'setup:error',
  'setup:crash',
  'active:error',
  'active:crash',
  'active:hang',
  'active:slow',
  'device:error',
  'device:crash',
  'device:hang',
] as const satisfies readonly `${FaultPhase}:${FaultAction}`[];

export type SourceFault = (typeof SOURCE_FAULTS)[number];

/** The arguments of `x-sim-inject-fault` for a fault. */
export function sourceFaultArgs(fault: SourceFault): { phase: FaultPhase; action: FaultAction } {
  const [phase, action] = fault.split(':') as [FaultPhase, FaultAction];
  return { phase, action };
}

/** mulberry32: a small seeded generator of numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
