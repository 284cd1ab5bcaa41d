// The rollout's bookkeeping (decisions/rollout-state.ts) and its progress view (decisions/progress-view.ts).
import fc from 'fast-check';
import { zeroCounts, type HostReport } from '../../workflows/decisions/host-state';
import { rolloutProgress, SHOWN_FAILURES } from '../../workflows/decisions/progress-view';
import type { RolloutPlan } from '../../workflows/decisions/rollout-plan';
import {
  abort,
  abortedIfIdle,
  abortingMessage,
  advanceWaves,
  applyReport,
  approve,
  completeIfDone,
  confirmation,
  controlFor,
  gateOf,
  hostFinished,
  hostRunInput,
  hostsToControl,
  hostWorkflowId,
  isIdle,
  KEPT_FAILURES,
  newRollout,
  pause,
  pausedMessage,
  preflightDone,
  resume,
  retriedMessage,
  retry,
  setStatus,
  startAttempt,
  validateAbort,
  validateApprove,
  validatePause,
  validateResume,
  validateRetry,
  type RolloutCarry,
} from '../../workflows/decisions/rollout-state';

const plan = (over: Partial<RolloutPlan> = {}): RolloutPlan =>
  ({
    name: 'r1',
    target: 'new',
    waves: [
      { name: 'canary', hosts: ['h1'] },
      { name: 'rest', hosts: ['h2', 'h3'] },
    ],
    concurrency: { hosts: 2, vmsPerHost: 1 },
    failureBudget: 2,
    approvals: 'none',
    windows: [],
    preflight: { onFailure: 'skip', timeoutSec: 5 },
    policy: {},
    excludeVms: ['h1/skip-me', 'h10/other'],
    limits: { historyEvents: 10_000 },
    ...over,
  }) as RolloutPlan;

const running = (p = plan()): RolloutCarry => {
  const s = newRollout(p, undefined, 1000);
  setStatus(s, 'running');
  return s;
};

const report = (over: Partial<HostReport> = {}): HostReport => ({
  hostId: 'h1',
  attempt: 1,
  seq: 1,
  total: 2,
  pending: 1,
  inFlight: ['b'],
  counts: zeroCounts(),
  finished: [],
  gate: 'run',
  gateSeq: 1,
  windowOpen: true,
  awaitingAck: false,
  runs: 1,
  ...over,
});

const host = (s: RolloutCarry, id: string) => s.hosts.find((h) => h.hostId === id)!;

describe('a new rollout', () => {
  test('every host of every wave, pending, in plan order', () => {
    const s = newRollout(plan(), undefined, 1000);
    expect(s.status).toBe('preflight');
    expect(s.startedAt).toBe(1000);
    expect(s.hosts.map((h) => [h.hostId, h.wave, h.state])).toEqual([
      ['h1', 0, 'pending'],
      ['h2', 1, 'pending'],
      ['h3', 1, 'pending'],
    ]);
    expect(s.hosts[0]).not.toHaveProperty('only');
  });

  test('a retry run: only the hosts listed, each on its VMs (null: all)', () => {
    const s = newRollout(plan(), { h2: ['a'], h3: null }, 0);
    expect(s.hosts.map((h) => [h.hostId, h.only])).toEqual([
      ['h2', ['a']],
      ['h3', null],
    ]);
  });
});

describe('status and gate', () => {
  test('the gate: hold while paused, abort once aborting; each change of gate counts', () => {
    const s = newRollout(plan(), undefined, 0);
    expect(gateOf(s)).toBe('run');
    setStatus(s, 'running');
    expect(s.gateSeq).toBe(0); // preflight → running: the gate stays run
    setStatus(s, 'paused');
    expect([gateOf(s), s.gateSeq]).toEqual(['hold', 1]);
    setStatus(s, 'paused');
    expect(s.gateSeq).toBe(1);
    setStatus(s, 'aborting');
    expect([gateOf(s), s.gateSeq]).toEqual(['abort', 2]);
    setStatus(s, 'aborted');
    expect(s.gateSeq).toBe(2);
  });
});

describe('preflight', () => {
  const results = [
    { hostId: 'h1', ok: true, pollers: ['w1'] },
    { hostId: 'h2', ok: false, reason: 'no worker', pollers: [] },
  ];

  test('skip: failed hosts are skipped and the rollout runs', () => {
    const s = newRollout(plan(), undefined, 0);
    expect(preflightDone(s, results, 'skip')).toBe(false);
    expect(s.status).toBe('running');
    expect(host(s, 'h2')).toMatchObject({ state: 'skipped', reason: 'preflight: no worker' });
    expect(s.preflight).toBe(results);
  });

  test('fail: the rollout ends', () => {
    const s = newRollout(plan(), undefined, 0);
    expect(preflightDone(s, results, 'fail')).toBe(true);
    expect(s.status).toBe('preflight-failed');
    expect(host(s, 'h2').state).toBe('pending');
  });

  test('paused during the preflight: stays paused', () => {
    const s = newRollout(plan(), undefined, 0);
    pause(s, undefined);
    preflightDone(s, results.slice(0, 1), 'skip');
    expect(s.status).toBe('paused');
  });
});

describe('host attempts', () => {
  test('an attempt starts with the gate and the VMs of a retry; its input names only its own excluded VMs', () => {
    const s = running();
    const h = host(s, 'h1');
    h.only = ['a'];
    const start = startAttempt(s, h, 'rollout/r1');
    expect(start).toEqual({ workflowId: 'rollout/r1/host/h1', attempt: 1, gate: 'run', gateSeq: 0, only: ['a'] });
    expect(h).toMatchObject({ state: 'running', attempt: 1, gateSeqSent: 0, gateSeqAck: 0 });
    expect(h).not.toHaveProperty('only');
    expect(hostRunInput(plan(), 'rollout/r1', 'h1', start)).toEqual({
      rolloutWorkflowId: 'rollout/r1',
      rolloutId: 'r1',
      hostId: 'h1',
      attempt: 1,
      target: 'new',
      policy: {},
      vmsAtOnce: 1,
      windows: [],
      excludeVms: ['skip-me'],
      only: ['a'],
      gate: 'run',
      gateSeq: 0,
      historyEvents: 10_000,
    });
    expect(hostWorkflowId('rollout/r1', 'h1', 2)).toBe('rollout/r1/host/h1/2');
  });

  test('reports: only new ones of the running attempt; failures are kept and spend the budget', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    const failed = { vmId: 'a', outcome: 'failed' as const, reason: 'x', at: 5 };
    const out = applyReport(s, h, report({ finished: [failed], awaitingAck: true }), 2, 0);
    expect(out).toEqual({ taken: true, host: h, ack: 1 });
    expect(s.failures).toEqual([{ hostId: 'h1', vmId: 'a', outcome: 'failed', reason: 'x', at: 5, attempt: 1 }]);
    expect(s.failedSinceResume).toBe(1);
    expect(applyReport(s, h, report({ finished: [failed] }), 2, 0)).toEqual({ taken: false }); // same seq
    expect(applyReport(s, h, report({ seq: 2, attempt: 2 }), 2, 0)).toEqual({ taken: false });
    expect(applyReport(s, undefined, report({ seq: 2 }), 2, 0)).toEqual({ taken: false });
    expect(s.failures).toHaveLength(1);
  });

  test('the budget runs out: the rollout pauses itself, and says why', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    const f = (vmId: string) => ({ vmId, outcome: 'refused' as const, at: 0 });
    applyReport(s, h, report({ finished: [f('a'), f('b')] }), 2, 0);
    expect(s).toMatchObject({
      status: 'paused',
      pausedBy: 'budget',
      pauseReason: 'failure budget of 2 reached: 2 VM(s) failed since the start',
      gateSeq: 1,
    });
    expect(controlFor(s, h, 1)).toEqual({ gate: 'hold', gateSeq: 1, ack: 1 });
  });

  test('a final report ends the attempt; failed VMs retried meanwhile make the host pending again', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    applyReport(s, h, report({ finished: [{ vmId: 'a', outcome: 'failed', at: 0 }] }), 5, 0);
    expect(retry(s, ['h1/a'])).toBe(1);
    expect(h.retryQueue).toEqual(['a']);
    const counts = { ...zeroCounts(), failed: 1, upgraded: 1 };
    applyReport(s, h, report({ seq: 2, counts, pending: 0, inFlight: [], final: true }), 5, 0);
    expect(h).toMatchObject({ state: 'pending', only: ['a'], retryQueue: [], pending: 0 });
    expect(h.base).toEqual({ ...zeroCounts(), upgraded: 1 }); // the retried failure left the counts
  });

  test('a host that fails as a whole is one failure, listed as `*`', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    hostFinished(s, h, undefined, 'cannot list', 5, 42);
    expect(h).toMatchObject({ state: 'failed', reason: 'cannot list' });
    expect(s.failures).toEqual([
      { hostId: 'h1', vmId: '*', outcome: 'failed', reason: 'cannot list', at: 42, attempt: 1 },
    ]);
    retry(s, ['h1']);
    expect(h).toMatchObject({ state: 'pending', only: null });
    expect(h).not.toHaveProperty('reason');
  });

  test('failures: the latest KEPT_FAILURES are kept, the rest counted; the view lists the latest SHOWN_FAILURES', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    const finished = Array.from({ length: KEPT_FAILURES + 5 }, (_, i) => ({
      vmId: `vm${i}`,
      outcome: 'failed' as const,
      at: i,
    }));
    applyReport(s, h, report({ finished }), 1e9, 0);
    expect(s.failures).toHaveLength(KEPT_FAILURES);
    expect(s.failuresDropped).toBe(5);
    expect(s.failures[0]!.vmId).toBe('vm5');
    const view = rolloutProgress(s, plan(), 0, 10);
    expect(view.failuresTotal).toBe(KEPT_FAILURES + 5);
    expect(view.failures).toHaveLength(SHOWN_FAILURES);
    expect(view.failures.at(-1)!.vmId).toBe(`vm${KEPT_FAILURES + 4}`);
  });

  test('gates: a running host not sent the current gate gets it', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    expect(hostsToControl(s)).toEqual([]);
    abort(s, 'stop', true);
    expect(hostsToControl(s)).toEqual([h]);
    expect(controlFor(s, h)).toEqual({ gate: 'abort', gateSeq: 1, rollBackInFlight: true });
    expect(hostsToControl(s)).toEqual([]);
    expect(controlFor(s, host(s, 'h2'))).toBeUndefined();
  });
});

describe('waves and the end', () => {
  test('advance past finished waves; stop at one that awaits approval; approve it', () => {
    const s = running(plan({ approvals: 'after-canary' }));
    host(s, 'h1').state = 'done';
    expect(advanceWaves(s, plan({ approvals: 'after-canary' }))).toEqual([]);
    expect(s.status).toBe('awaiting-approval');
    expect(() => validateApprove(s, 3, 2)).toThrow('wave 3 does not await approval; wave 1 does');
    validateApprove(s, 1, 2);
    expect(approve(s)).toBe(1);
    expect(s.status).toBe('running');
    expect(advanceWaves(s, plan({ approvals: 'after-canary' }))).toEqual([1]);
    expect(s.currentWave).toBe(1);
  });

  test('completed once every wave finished and nothing runs; aborted once nothing runs', () => {
    const s = running();
    for (const h of s.hosts) h.state = 'done';
    advanceWaves(s, plan());
    completeIfDone(s, 2, isIdle(s, 1));
    expect(s.status).toBe('running'); // a host start is on its way
    completeIfDone(s, 2, isIdle(s, 0));
    expect(s.status).toBe('completed');
    const t = running();
    abort(t, undefined, false);
    abortedIfIdle(t, isIdle(t, 0));
    expect(t.status).toBe('aborted');
  });
});

describe("operators' updates", () => {
  test('pause, resume (budget reset), abort, and what they say', () => {
    const s = running();
    expect(pause(s, 'look')).toBe(true);
    expect(s.pauseReason).toBe('paused by operator: look');
    expect(pause(s, 'again')).toBe(false);
    expect(pausedMessage({ inFlight: ['h1/a'], unconfirmed: ['h2'] })).toBe(
      'paused: no new VM starts; 1 VM(s) in flight finish (not yet confirmed by h2)',
    );
    s.failedSinceResume = 2;
    expect(resume(s)).toBe('resumed (was: paused by operator: look); failure budget reset');
    expect(s).toMatchObject({ status: 'running', failedSinceResume: 0, resumes: 1 });
    expect(s).not.toHaveProperty('pauseReason');
    abort(s, undefined, true);
    expect(s.abortReason).toBe('aborted by operator');
    expect(abortingMessage(s, { inFlight: [] })).toBe(
      'aborting: nothing new starts; 0 VM(s) in flight are cancelled and roll back',
    );
  });

  test('validators refuse what does not apply', () => {
    const s = running();
    expect(() => validateResume(s)).toThrow('cannot resume: the rollout is running, not paused');
    expect(() => validateRetry(s, undefined)).toThrow('no failed VM to retry');
    expect(() => validateApprove(s, undefined, 2)).toThrow(
      'nothing awaits approval: the rollout is running (wave 1/2)',
    );
    abort(s, undefined, false);
    expect(() => validatePause(s)).toThrow('cannot pause: the rollout is aborting');
    expect(() => validateAbort(s)).toThrow('the rollout is already aborting');
    setStatus(s, 'aborted');
    expect(() => validatePause(s)).toThrow('cannot pause: the rollout is aborted');
  });

  test('retry: by host/vm or by host; unknown ones refused', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    const f = (vmId: string) => ({ vmId, outcome: 'failed' as const, at: 0 });
    applyReport(s, h, report({ finished: [f('a'), f('b')], final: true, pending: 0, inFlight: [] }), 9, 0);
    expect(() => validateRetry(s, ['h1/zz'])).toThrow('h1/zz is not a failed VM of this rollout');
    validateRetry(s, ['h1/a']);
    expect(retry(s, ['h1/a'])).toBe(1);
    expect(h).toMatchObject({ state: 'pending', only: ['a'] });
    expect(retry(s, ['h1'])).toBe(1);
    expect(h.only).toEqual(['a', 'b']);
    expect(s.retried).toBe(2);
    expect(retriedMessage(s, 2)).toBe('2 failed VM(s) queued again');
  });

  test('confirmation: VMs in flight, and hosts that have not confirmed the gate', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    applyReport(s, h, report({ gateSeq: 0 }), 9, 0);
    pause(s, undefined);
    expect(confirmation(s, s.gateSeq)).toEqual({ inFlight: ['h1/b'], unconfirmed: ['h1'] });
    applyReport(s, h, report({ seq: 2, gateSeq: 1 }), 9, 0);
    expect(confirmation(s, s.gateSeq)).toEqual({ inFlight: ['h1/b'] });
  });
});

describe('progress view', () => {
  test('counts by state across hosts; hosts by state; the wave and the budget', () => {
    const s = running();
    const h = host(s, 'h1');
    startAttempt(s, h, 'w');
    const counts = { ...zeroCounts(), upgraded: 2 };
    applyReport(s, h, report({ counts, pending: 3, inFlight: ['x'] }), 2, 0);
    host(s, 'h2').only = ['a', 'b'];
    const v = rolloutProgress(s, plan(), 0, 77);
    expect(v.vms).toEqual({ ...zeroCounts(), upgraded: 2, pending: 5, 'in-flight': 1 });
    expect(v.hostsByState).toEqual({ pending: 2, running: 1, done: 0, failed: 0, skipped: 0 });
    expect(v.wave).toEqual({ index: 0, name: 'canary', of: 2, awaitingApproval: false });
    expect(v.budget).toEqual({ budget: 2, failedSinceResume: 0, remaining: 2 });
    expect(v.window).toEqual({ open: true, always: true });
    expect(v.hosts[0]).toMatchObject({ hostId: 'h1', wave: 'canary', workflowId: 'w/host/h1', windowOpen: true });
    expect(v.historyLength).toBe(77);
  });

  test('property: the view counts every VM a report accounts for, whatever the reports', () => {
    const outcome = fc.constantFrom('upgraded', 'failed', 'refused', 'already-on-target' as const);
    fc.assert(
      fc.property(fc.array(fc.tuple(outcome, fc.nat(3)), { maxLength: 20 }), (steps) => {
        const s = running();
        const h = host(s, 'h1');
        startAttempt(s, h, 'w');
        const counts = zeroCounts();
        steps.forEach(([o, pending], i) => {
          counts[o] += 1;
          applyReport(s, h, report({ seq: i + 1, counts: { ...counts }, pending, inFlight: [] }), 1e9, 0);
          const v = rolloutProgress(s, plan(), 0, 0);
          const done = Object.entries(v.vms).reduce(
            (a, [k, n]) => (k === 'pending' || k === 'in-flight' ? a : a + n),
            0,
          );
          expect(done).toBe(i + 1);
          expect(v.vms.pending).toBe(pending);
        });
      }),
    );
  });
});
