// Waves and the failure budget: pure decisions of the rollout workflow.
import { budgetView, isFailure, isSuccess, spend } from '../../workflows/decisions/budget';
import {
  hostsToStart,
  needsApproval,
  resolveWaves,
  WaveError,
  waveFinished,
  type HostSlot,
} from '../../workflows/decisions/waves';

const hosts = (n: number) => Array.from({ length: n }, (_, i) => `h${i + 1}`);

describe('resolveWaves', () => {
  test('a canary, then a percent, then the rest, in plan order', () => {
    const w = resolveWaves(hosts(10), [
      { size: { count: 1 } },
      { name: 'early', size: { percent: 25 } },
      { size: { rest: true } },
    ]);
    expect(w).toEqual([
      { name: 'canary', hosts: ['h1'] },
      { name: 'early', hosts: ['h2', 'h3', 'h4'] }, // 25% of 10, rounded up
      { name: 'wave-3', hosts: ['h5', 'h6', 'h7', 'h8', 'h9', 'h10'] },
    ]);
  });

  test('explicit host lists are taken first; counts take the others in order', () => {
    const w = resolveWaves(hosts(5), [{ size: { hosts: ['h4'] } }, { size: { count: 2 } }, { size: { rest: true } }]);
    expect(w.map((x) => x.hosts)).toEqual([['h4'], ['h1', 'h2'], ['h3', 'h5']]);
  });

  test('an empty `rest` wave is dropped (one host under canary-then-rest)', () => {
    expect(resolveWaves(['h1'], [{ size: { count: 1 } }, { size: { rest: true } }])).toEqual([
      { name: 'canary', hosts: ['h1'] },
    ]);
  });

  test('a percent of a small fleet is at least one host', () => {
    expect(resolveWaves(hosts(3), [{ size: { percent: 1 } }, { size: { rest: true } }])[0]!.hosts).toEqual(['h1']);
  });

  test('every host must be in a wave', () => {
    expect(() => resolveWaves(hosts(4), [{ size: { count: 1 } }, { size: { count: 2 } }])).toThrow(
      'waves cover 3 of 4 hosts; size the last wave `rest` to take the others',
    );
  });

  test('errors name the wave', () => {
    const at = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return [(e as WaveError).index, (e as Error).message];
      }
      return undefined;
    };
    expect(at(() => resolveWaves(hosts(2), [{ size: { count: 2 } }, { size: { count: 1 } }]))).toEqual([
      1,
      'no hosts left for this wave',
    ]);
    expect(at(() => resolveWaves(hosts(2), [{ size: { hosts: ['h9'] } }, { size: { rest: true } }]))).toEqual([
      0,
      'host "h9" is not in hosts',
    ]);
    expect(at(() => resolveWaves(hosts(2), [{ size: { hosts: ['h1'] } }, { size: { hosts: ['h1', 'h2'] } }]))).toEqual([
      1,
      'host "h1" is already in waves[0]',
    ]);
    expect(
      at(() =>
        resolveWaves(hosts(2), [
          { name: 'a', size: { count: 1 } },
          { name: 'a', size: { rest: true } },
        ]),
      ),
    ).toEqual([1, 'duplicate wave name "a"']);
  });
});

describe('which hosts start', () => {
  const slots = (states: Array<[number, HostSlot['state']]>): HostSlot[] =>
    states.map(([wave, state], i) => ({ hostId: `h${i + 1}`, wave, state }));

  test('only the current wave (or earlier, for retries), up to the host concurrency', () => {
    const s = slots([
      [0, 'done'],
      [1, 'pending'],
      [1, 'pending'],
      [1, 'pending'],
      [2, 'pending'],
    ]);
    expect(hostsToStart(s, 1, 2)).toEqual(['h2', 'h3']);
    s[1]!.state = 'running';
    expect(hostsToStart(s, 1, 2)).toEqual(['h3']);
    s[2]!.state = 'running';
    expect(hostsToStart(s, 1, 2)).toEqual([]);
    // A retried host of an earlier wave goes first.
    s[0]!.state = 'pending';
    s[1]!.state = 'done';
    expect(hostsToStart(s, 1, 2)).toEqual(['h1']);
  });

  test('a wave is finished when no host of it or before is pending or running', () => {
    const s = slots([
      [0, 'done'],
      [1, 'failed'],
      [1, 'running'],
      [2, 'pending'],
    ]);
    expect(waveFinished(s, 0)).toBe(true);
    expect(waveFinished(s, 1)).toBe(false);
    s[2]!.state = 'skipped';
    expect(waveFinished(s, 1)).toBe(true);
    expect(waveFinished(s, 2)).toBe(false);
  });

  test('approvals', () => {
    expect([0, 1, 2].map((w) => needsApproval('none', w))).toEqual([false, false, false]);
    expect([0, 1, 2].map((w) => needsApproval('after-canary', w))).toEqual([false, true, false]);
    expect([0, 1, 2].map((w) => needsApproval('between-waves', w))).toEqual([false, true, true]);
  });
});

describe('failure budget', () => {
  test('refused, rolled back and failed count; upgraded and already-on-target do not', () => {
    expect(['refused', 'rolled-back', 'failed'].every((o) => isFailure(o as never))).toBe(true);
    expect(['upgraded', 'already-on-target', 'cancelled'].some((o) => isFailure(o as never))).toBe(false);
    expect(isSuccess('already-on-target')).toBe(true);
  });

  test('pauses when the budget is reached, not before', () => {
    expect(budgetView(3, 0)).toEqual({ budget: 3, failedSinceResume: 0, remaining: 3, exhausted: false });
    expect(spend(3, 1, 1).exhausted).toBe(false);
    expect(spend(3, 2, 1)).toEqual({ budget: 3, failedSinceResume: 3, remaining: 0, exhausted: true });
    expect(spend(1, 0, 1).exhausted).toBe(true);
    expect(spend(3, 2, 5).remaining).toBe(0);
  });
});
