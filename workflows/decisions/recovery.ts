// What to do when an upgrade cannot go on, from what is known about both QEMU processes. Pure and exhaustive:
// the rollback activity asks it with what QEMU reports now, and every answer is unit-tested as a table.
// The rule under all of it: once the destination may have run the guest (the resume marker, written just
// before its `cont`), nothing of ours kills it, and the source's state may be stale, so it is never resumed
// unless an operator says so.

/** The source process, as its monitor answers now. */
export type SourceState =
  /** No such process. */
  | 'gone'
  | 'running'
  /** Alive and not running: paused, postmigrate, or stopped by a failed migration. */
  | 'stopped'
  /** Alive, but its monitor does not answer (hung, or held by another client). */
  | 'unreachable';

/** The destination process, as its monitor answers now. */
export type DestinationState =
  | 'gone'
  | 'running'
  /** Paused, its incoming migration completed: it holds the guest's latest state. */
  | 'holds-completed'
  /** Paused or waiting, its incoming migration not completed: it holds no usable state. */
  | 'incomplete'
  /** Alive, stopped for a reason of its own after it may have run (io-error, guest-panicked, shutdown…). */
  | 'stopped'
  /** Alive, but its monitor does not answer. */
  | 'unreachable';

export interface RecoveryFacts {
  /** The record already names the destination: the upgrade was finalized. */
  finalized: boolean;
  /** The resume marker exists: the destination may have run the guest. */
  mayHaveRun: boolean;
  source: SourceState;
  destination: DestinationState;
  /** The source's monitor already failed to answer once: the step that failed timed out on it (MonitorUnresponsive). */
  sourceSilentBefore: boolean;
}

export type RecoveryAction =
  /** Nothing to do: the destination is the VM's process. */
  | { kind: 'already-finalized' }
  /** The destination runs the guest: keep it and make it the VM's process. */
  | { kind: 'keep-destination' }
  /** The destination holds the newest state and nothing newer exists: resume it and make it the VM's process. */
  | { kind: 'resume-destination' }
  /** The destination never ran: cancel the migration, kill the destination, resume the source. */
  | { kind: 'resume-source' }
  /** No process holds the guest's state any more; they died by themselves. Clean up what is left. */
  | { kind: 'lost'; why: string }
  /**
   * Nothing can be decided yet (the source's monitor does not answer): retry later. A destination that never
   * ran and holds no complete state is dropped first (`dropDestination`), so the VM is not left with two
   * processes; the source, hung or not, still holds the guest.
   */
  | { kind: 'retry'; why: string; dropDestination: boolean }
  /**
   * Keep every process as it is: an operator must decide which one holds the guest, or whether the one that
   * holds it runs. A destination that never ran and holds no complete state is dropped first
   * (`dropDestination`), as for `retry`.
   */
  | { kind: 'operator'; why: string; dropDestination?: boolean };

export function recoveryAction(f: RecoveryFacts): RecoveryAction {
  if (f.finalized) return { kind: 'already-finalized' };
  if (f.destination === 'running') return { kind: 'keep-destination' };
  if (f.mayHaveRun) {
    // Everything the source sent arrived and the source stopped before the switchover: the destination holds
    // the newest state whether or not it ran since, so resuming it loses nothing.
    if (f.destination === 'holds-completed' && f.source !== 'running') return { kind: 'resume-destination' };
    if (f.destination === 'gone' && f.source === 'gone') {
      return { kind: 'lost', why: 'the destination may have run the guest and died, and the source is gone too' };
    }
    if (f.destination === 'gone') {
      return {
        kind: 'operator',
        why: "the destination may have run the guest and died: the source's state may be stale, so it was left paused",
      };
    }
    return {
      kind: 'operator',
      why: `the destination may have run the guest and is ${describe(f.destination)}: both processes were kept`,
    };
  }
  // The destination never ran: it holds nothing the source lacks, unless the source is gone.
  switch (f.source) {
    case 'running':
    case 'stopped':
      return { kind: 'resume-source' };
    case 'unreachable': {
      // Asked twice without an answer: waiting longer holds the upgrade (and a rollout's slot) on a monitor
      // that may never answer, and nothing of ours would change meanwhile. The source is kept as it is.
      const dropDestination = f.destination !== 'holds-completed';
      if (f.sourceSilentBefore) {
        return {
          kind: 'operator',
          why:
            'the source QEMU did not answer its monitor twice, so whether the guest runs cannot be told' +
            (dropDestination ? '; the destination never ran and was removed' : ''),
          dropDestination,
        };
      }
      return {
        kind: 'retry',
        why: 'the source QEMU does not answer its monitor, so the VM may not be running',
        dropDestination,
      };
    }
    case 'gone':
      if (f.destination === 'holds-completed') return { kind: 'resume-destination' };
      if (f.destination === 'unreachable') {
        return {
          kind: 'operator',
          why: "the source is gone and the destination's monitor does not answer: it may hold the guest's only state",
        };
      }
      return {
        kind: 'lost',
        why: 'the source QEMU is gone and the destination never received its whole state: the VM is not running',
      };
  }
}

function describe(d: DestinationState): string {
  switch (d) {
    case 'holds-completed':
      return 'paused with the whole state while the source runs';
    case 'incomplete':
      return 'paused without the whole state';
    case 'stopped':
      return 'stopped';
    case 'unreachable':
      return 'not answering its monitor';
    default:
      return d;
  }
}

/** Every fact combination, for tests and the reliability document. */
export function allRecoveryFacts(): RecoveryFacts[] {
  const sources: SourceState[] = ['gone', 'running', 'stopped', 'unreachable'];
  const destinations: DestinationState[] = [
    'gone',
    'running',
    'holds-completed',
    'incomplete',
    'stopped',
    'unreachable',
  ];
  const out: RecoveryFacts[] = [];
  for (const finalized of [false, true])
    for (const mayHaveRun of [false, true])
      for (const sourceSilentBefore of [false, true])
        for (const source of sources)
          for (const destination of destinations)
            out.push({ finalized, mayHaveRun, sourceSilentBefore, source, destination });
  return out;
}
