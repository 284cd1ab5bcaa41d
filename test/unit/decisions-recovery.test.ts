// The recovery table: every combination of what is known about both processes, and the rule under it all.
import {
  allRecoveryFacts,
  recoveryAction,
  type DestinationState,
  type RecoveryFacts,
  type SourceState,
} from '../../workflows/decisions/recovery';
import { problemsOf, withDefaults } from '../../workflows/decisions/policy';

const facts = (
  source: SourceState,
  destination: DestinationState,
  mayHaveRun: boolean,
  sourceSilentBefore = false,
): RecoveryFacts => ({
  finalized: false,
  mayHaveRun,
  source,
  destination,
  sourceSilentBefore,
});
const kind = (f: RecoveryFacts) => recoveryAction(f).kind;

describe('recoveryAction', () => {
  test('covers all 192 combinations with an answer', () => {
    const all = allRecoveryFacts();
    expect(all).toHaveLength(192);
    for (const f of all) expect(recoveryAction(f).kind).toEqual(expect.any(String));
  });

  test('once the destination may have run, it is never killed and the source never resumed', () => {
    for (const f of allRecoveryFacts().filter((x) => x.mayHaveRun && !x.finalized)) {
      // resume-source and lost are the two actions that kill a live destination.
      expect([kind(f), f]).not.toEqual(['resume-source', f]);
      if (f.destination !== 'gone') expect([kind(f), f]).not.toEqual(['lost', f]);
    }
  });

  test('a destination that runs the guest is always kept; a finalized upgrade is left alone', () => {
    for (const f of allRecoveryFacts()) {
      if (f.finalized) expect(kind(f)).toBe('already-finalized');
      else if (f.destination === 'running') expect(kind(f)).toBe('keep-destination');
    }
  });

  test('a destination that never ran goes, the source resumes', () => {
    for (const d of ['gone', 'holds-completed', 'incomplete', 'stopped', 'unreachable'] as const) {
      expect(kind(facts('running', d, false))).toBe('resume-source');
      expect(kind(facts('stopped', d, false))).toBe('resume-source');
    }
  });

  test('a source silent twice is left to an operator; only a destination that never ran and holds no whole state goes', () => {
    for (const d of ['gone', 'incomplete', 'stopped', 'unreachable'] as const) {
      expect(kind(facts('unreachable', d, false, false))).toBe('retry');
      expect(recoveryAction(facts('unreachable', d, false, true))).toEqual({
        kind: 'operator',
        why: expect.stringMatching(/did not answer its monitor twice.*never ran and was removed/),
        dropDestination: true,
      });
    }
    // The destination holds the whole state: both are kept, nothing is dropped.
    expect(recoveryAction(facts('unreachable', 'holds-completed', false, true))).toEqual({
      kind: 'operator',
      why: expect.not.stringMatching(/removed/),
      dropDestination: false,
    });
    // Once the destination may have run, the silence before changes nothing.
    for (const f of allRecoveryFacts().filter((x) => x.mayHaveRun && x.sourceSilentBefore)) {
      expect(recoveryAction(f)).toEqual(recoveryAction({ ...f, sourceSilentBefore: false }));
    }
  });

  test.each([
    // source, destination, mayHaveRun, action
    ['unreachable', 'incomplete', false, 'retry'],
    ['gone', 'holds-completed', false, 'resume-destination'],
    ['gone', 'incomplete', false, 'lost'],
    ['gone', 'gone', false, 'lost'],
    ['gone', 'unreachable', false, 'operator'],
    ['stopped', 'holds-completed', true, 'resume-destination'],
    ['gone', 'holds-completed', true, 'resume-destination'],
    ['running', 'holds-completed', true, 'operator'],
    ['stopped', 'gone', true, 'operator'],
    ['stopped', 'unreachable', true, 'operator'],
    ['stopped', 'stopped', true, 'operator'],
    ['stopped', 'incomplete', true, 'operator'],
    ['unreachable', 'unreachable', true, 'operator'],
    ['gone', 'gone', true, 'lost'],
  ] as const)('source %s, destination %s, may have run %s → %s', (s, d, ran, want) => {
    const action = recoveryAction(facts(s, d, ran));
    expect(action.kind).toBe(want);
    if (action.kind === 'operator' || action.kind === 'lost' || action.kind === 'retry') {
      expect(action.why.length).toBeGreaterThan(10);
    }
  });
});

describe('problemsOf (policy)', () => {
  test('the defaults are fine; NaN, negative and unknown values are named', () => {
    expect(problemsOf(withDefaults({}))).toEqual([]);
    expect(problemsOf(withDefaults({ progressTimeoutSec: NaN, downtimeLimitMs: -1 }))).toEqual([
      'downtimeLimitMs must be a number from 1 to 600000 (got -1)',
      'progressTimeoutSec must be a number from 1 to 86400 (got NaN)',
    ]);
    expect(problemsOf(withDefaults({ strategies: ['teleport' as never] }))).toEqual([
      'strategies must name only backend-transfer, cpr-transfer, cpr-exec, plain',
    ]);
  });
});
