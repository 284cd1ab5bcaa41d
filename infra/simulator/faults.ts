// Fault injection: `--sim-fault PHASE:ACTION` on the command line, `x-sim-inject-fault` over QMP.
//
// Phases: the migration phases `setup`, `active`, `device` (source side), `incoming` (destination side,
// when the stream arrives), and the command phases `cont` (the next `cont`) and `qmp` (the next command).
// Actions, applied when the phase is reached:
//   crash  the process dies at once, SIGKILL-like: no SHUTDOWN, no reply, sockets reset.
//   hang   the process stops answering QMP (no replies, no events, no greeting) and its migration stalls.
//   error  command phases: the command gets a GenericError reply. Migration phases: the migration fails
//          in that phase (status `failed`, `error-desc`), as a QEMU-side error would.
//   slow   migration phases: progress stalls, no bytes move, until the fault is cleared.
//          Command phases: each reply is delayed (--sim-slow-ms, default SLOW_REPLY_MS), until cleared.
// crash, hang and error fire once; slow stays until `x-sim-clear-faults`.

export const FAULT_PHASES = ['setup', 'active', 'device', 'incoming', 'cont', 'qmp'] as const;
export const FAULT_ACTIONS = ['crash', 'hang', 'error', 'slow'] as const;
export type FaultPhase = (typeof FAULT_PHASES)[number];
export type FaultAction = (typeof FAULT_ACTIONS)[number];

export interface FaultSpec {
  phase: FaultPhase;
  action: FaultAction;
}

export const SLOW_REPLY_MS = 1000;

export function isFaultPhase(x: unknown): x is FaultPhase {
  return typeof x === 'string' && (FAULT_PHASES as readonly string[]).includes(x);
}

export function isFaultAction(x: unknown): x is FaultAction {
  return typeof x === 'string' && (FAULT_ACTIONS as readonly string[]).includes(x);
}

/** `active:slow` → spec, or an error text. */
export function parseFaultSpec(text: string): FaultSpec | string {
  const [phase, action, ...extra] = text.split(':');
  if (extra.length > 0 || !isFaultPhase(phase) || !isFaultAction(action)) {
    return `expected PHASE:ACTION with PHASE one of ${FAULT_PHASES.join('|')} and ACTION one of ${FAULT_ACTIONS.join('|')}`;
  }
  return { phase, action };
}

export class FaultRegistry {
  private armed: FaultSpec[];

  constructor(initial: FaultSpec[] = []) {
    this.armed = initial.slice();
  }

  inject(f: FaultSpec): void {
    this.armed.push(f);
  }

  /** Remove all faults, or those of one phase. */
  clear(phase?: FaultPhase): void {
    this.armed = phase ? this.armed.filter((f) => f.phase !== phase) : [];
  }

  /** The phase is reached: the action to apply, if any. One-shot actions are consumed. */
  take(phase: FaultPhase): FaultAction | undefined {
    const i = this.armed.findIndex((f) => f.phase === phase);
    if (i < 0) return undefined;
    const f = this.armed[i];
    if (f.action !== 'slow') this.armed.splice(i, 1);
    return f.action;
  }

  isSlow(phase: FaultPhase): boolean {
    return this.armed.some((f) => f.phase === phase && f.action === 'slow');
  }

  list(): FaultSpec[] {
    return this.armed.slice();
  }
}
