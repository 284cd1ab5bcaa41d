// upgradeHost's bookkeeping: pure transitions of one state (decisions/host-state.ts).
import fc from 'fast-check';
import {
  awaitingAck,
  beginReport,
  carryOf,
  clip,
  hostProgressOf,
  initialHostState,
  isDone,
  isIdle,
  mayContinueAsNew,
  mayStartVm,
  onControl,
  recordFinished,
  reportSent,
  startDraining,
  startNextVm,
  takeInventory,
  vmFinished,
  waitsForWindow,
  zeroCounts,
  type HostState,
} from '../../workflows/decisions/host-state';

const ctx = { hostId: 'h1', attempt: 1, windowOpen: true };
const withPending = (pending: string[]): HostState => ({ ...initialHostState(undefined, 'run', 0), pending });

describe('initial state', () => {
  test('fresh: the rollout gate, dirty (the first report confirms the gate), first run', () => {
    const st = initialHostState(undefined, 'hold', 3);
    expect(st).toMatchObject({ gate: 'hold', gateSeq: 3, runs: 1, dirty: true, total: 0, pending: [], seq: 0 });
    expect(st.counts).toEqual(zeroCounts());
  });

  test('carried: the carry wins over the input gate; runs + 1; a copy, not the carry itself', () => {
    const carry = { ...carryOf(withPending(['a'])), gate: 'abort' as const, gateSeq: 7, runs: 2, acked: 4 };
    const st = initialHostState(carry, 'run', 1);
    expect(st).toMatchObject({ gate: 'abort', gateSeq: 7, runs: 3, acked: 4, pending: ['a'] });
    st.pending.push('b');
    expect(carry.pending).toEqual(['a']);
  });

  test('the carry round-trips', () => {
    const st = { ...withPending(['x', 'y']), seq: 5, ackNeeded: 4, acked: 4, total: 9 };
    expect(carryOf(initialHostState(carryOf(st), 'run', 0))).toEqual({ ...carryOf(st), runs: st.runs + 1 });
  });
});

describe('inventory', () => {
  const vms = [
    { vmId: 'a', label: 'new', running: true },
    { vmId: 'b', label: 'old', running: true },
    { vmId: 'c', label: 'new', running: false },
    { vmId: 'd', label: 'old', running: true },
  ];

  test('in scope: pending, or already on target when running the target', () => {
    const { state, recorded } = takeInventory(
      initialHostState(undefined, 'run', 0),
      vms,
      {
        hostId: 'h1',
        target: 'new',
        excludeVms: ['d'],
      },
      100,
    );
    expect(state.pending).toEqual(['b', 'c']);
    expect(state.total).toBe(3);
    expect(recorded).toEqual([{ vmId: 'a', outcome: 'already-on-target', at: 100 }]);
    expect(state.counts['already-on-target']).toBe(1);
    expect(state.finished).toEqual(recorded);
  });

  test('a retry: only the listed VMs; a listed VM gone from the inventory fails', () => {
    const { state, recorded } = takeInventory(
      initialHostState(undefined, 'run', 0),
      vms,
      {
        hostId: 'h1',
        target: 'new',
        excludeVms: [],
        only: ['b', 'z'],
      },
      5,
    );
    expect(state.pending).toEqual(['b']);
    expect(state.total).toBe(2);
    expect(recorded).toEqual([{ vmId: 'z', outcome: 'failed', reason: 'VM z is not in the inventory of h1', at: 5 }]);
    expect(state.unreportedFailure).toBe(true);
    expect(awaitingAck(state)).toBe(true);
  });
});

describe('starting VMs', () => {
  test('only with gate run, no drain, no ack awaited, something pending, room, and an open window', () => {
    const st = withPending(['a', 'b']);
    expect(mayStartVm(st, 1, true)).toBe(true);
    expect(mayStartVm(st, 1, false)).toBe(false);
    expect(mayStartVm({ ...st, gate: 'hold' }, 1, true)).toBe(false);
    expect(mayStartVm({ ...st, draining: true }, 1, true)).toBe(false);
    expect(mayStartVm({ ...st, unreportedFailure: true }, 1, true)).toBe(false);
    expect(mayStartVm({ ...st, ackNeeded: 2, acked: 1 }, 1, true)).toBe(false);
    const { state, vmId } = startNextVm(st);
    expect(vmId).toBe('a');
    expect(state).toMatchObject({ pending: ['b'], inFlight: ['a'], dirty: true });
    expect(mayStartVm(state, 1, true)).toBe(false);
    expect(mayStartVm(state, 2, true)).toBe(true);
  });

  test('a failed VM holds new starts until a report carried it and the rollout acknowledged that report', () => {
    let st = startNextVm(withPending(['a', 'b'])).state;
    st = vmFinished(st, { vmId: 'a', outcome: 'failed', at: 1 });
    expect(st.inFlight).toEqual([]);
    expect(mayStartVm(st, 2, true)).toBe(false);
    const sent = beginReport(st, ctx);
    expect(sent.report).toMatchObject({ seq: 1, awaitingAck: true, finished: [{ vmId: 'a', outcome: 'failed' }] });
    st = reportSent(sent.state, true);
    expect(st).toMatchObject({ ackNeeded: 1, unreportedFailure: false, finished: [], sending: false });
    expect(mayStartVm(st, 2, true)).toBe(false);
    st = onControl(st, { gate: 'run', gateSeq: 0, ack: 1 }).state;
    expect(mayStartVm(st, 2, true)).toBe(true);
  });
});

describe('control from the rollout', () => {
  test('a newer gate applies (and is confirmed); an older one does not', () => {
    const st = initialHostState(undefined, 'run', 2);
    const held = onControl({ ...st, dirty: false }, { gate: 'hold', gateSeq: 3 }).state;
    expect(held).toMatchObject({ gate: 'hold', gateSeq: 3, dirty: true, changed: true });
    const stale = onControl({ ...held, dirty: false }, { gate: 'run', gateSeq: 3 }).state;
    expect(stale).toMatchObject({ gate: 'hold', dirty: false, changed: true });
  });

  test('abort is final: a later run gate advances the seq but not the gate', () => {
    const aborted = onControl(initialHostState(undefined, 'run', 0), { gate: 'abort', gateSeq: 1 }).state;
    expect(onControl(aborted, { gate: 'run', gateSeq: 2 }).state).toMatchObject({ gate: 'abort', gateSeq: 2 });
  });

  test('abort with rollBackInFlight cancels only when VMs are in flight', () => {
    const ctl = { gate: 'abort' as const, gateSeq: 1, rollBackInFlight: true };
    expect(onControl(withPending(['a']), ctl).cancelInFlight).toBe(false);
    expect(onControl(startNextVm(withPending(['a'])).state, ctl).cancelInFlight).toBe(true);
    expect(onControl(startNextVm(withPending(['a'])).state, { ...ctl, rollBackInFlight: false }).cancelInFlight).toBe(
      false,
    );
  });

  test('acks only go up', () => {
    const st = { ...initialHostState(undefined, 'run', 0), acked: 5 };
    expect(onControl(st, { gate: 'run', gateSeq: 0, ack: 3 }).state.acked).toBe(5);
    expect(onControl(st, { gate: 'run', gateSeq: 0, ack: 6 }).state.acked).toBe(6);
  });
});

describe('reports', () => {
  test('a report lists what finished since the last one; the next starts empty', () => {
    let st = recordFinished(withPending(['b']), { vmId: 'a', outcome: 'upgraded', at: 1 });
    const first = beginReport(st, ctx, false);
    expect(first.report).toEqual({
      hostId: 'h1',
      attempt: 1,
      seq: 1,
      total: 0,
      pending: 1,
      inFlight: [],
      counts: { ...zeroCounts(), upgraded: 1 },
      finished: [{ vmId: 'a', outcome: 'upgraded', at: 1 }],
      gate: 'run',
      gateSeq: 0,
      windowOpen: true,
      awaitingAck: false,
      runs: 1,
    });
    st = reportSent(first.state, true);
    const second = beginReport(st, { ...ctx, windowOpen: false }, true, 'boom');
    expect(second.report).toMatchObject({ seq: 2, finished: [], windowOpen: false, final: true, error: 'boom' });
  });

  test('an undelivered report orphans the host: gate abort, nothing more starts', () => {
    const { state } = beginReport(withPending(['a']), ctx);
    expect(state.sending).toBe(true);
    expect(isIdle(state)).toBe(false);
    const after = reportSent(state, false);
    expect(after).toMatchObject({ orphaned: true, gate: 'abort', sending: false, changed: true });
    expect(isDone(after)).toBe(true);
  });
});

describe('the end of a run', () => {
  test('done when idle and nothing pending (or aborted); not while a report is on its way', () => {
    expect(isDone(withPending([]))).toBe(true);
    expect(isDone(withPending(['a']))).toBe(false);
    expect(isDone({ ...withPending(['a']), gate: 'abort' })).toBe(true);
    expect(isDone({ ...withPending([]), sending: true })).toBe(false);
    expect(isDone(startNextVm(withPending(['a'])).state)).toBe(false);
  });

  test('continue as new once draining, quiet and nothing unreported', () => {
    const st = startDraining(withPending(['a']), true);
    expect(st.draining).toBe(true);
    expect(startDraining(withPending(['a']), false).draining).toBe(false);
    expect(mayContinueAsNew(st, true)).toBe(false); // dirty: the gate is not confirmed yet
    expect(mayContinueAsNew({ ...st, dirty: false }, true)).toBe(true);
    expect(mayContinueAsNew({ ...st, dirty: false }, false)).toBe(false);
  });

  test('only pending VMs under gate run wait for a window', () => {
    expect(waitsForWindow(withPending(['a']))).toBe(true);
    expect(waitsForWindow(withPending([]))).toBe(false);
    expect(waitsForWindow({ ...withPending(['a']), gate: 'hold' })).toBe(false);
  });
});

test('progress: copies, so the query cannot change the state', () => {
  const st = startNextVm(withPending(['a', 'b'])).state;
  const p = hostProgressOf(st, { ...ctx, nextWindowChangeInMs: undefined });
  expect(p).toMatchObject({ hostId: 'h1', pending: ['b'], inFlight: ['a'], draining: false, awaitingAck: false });
  p.pending.push('x');
  p.counts.failed = 9;
  expect(st.pending).toEqual(['b']);
  expect(st.counts.failed).toBe(0);
});

test('clip keeps reasons at most 500 characters', () => {
  expect(clip('x'.repeat(500))).toHaveLength(500);
  expect(clip('x'.repeat(501))).toBe(`${'x'.repeat(497)}...`);
  expect(clip(undefined)).toBeUndefined();
});

test('property: counts, pending and in flight always add up to the total', () => {
  // Steps: start a VM, finish the oldest in flight with an outcome, send a report and get it acknowledged.
  const step = fc.oneof(
    fc.constant({ kind: 'start' as const }),
    fc.record({
      kind: fc.constant('finish' as const),
      outcome: fc.constantFrom('upgraded', 'failed', 'refused', 'cancelled', 'rolled-back' as const),
    }),
    fc.constant({ kind: 'report' as const }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 1, max: 3 }), fc.array(step), (n, atOnce, steps) => {
      const vms = Array.from({ length: n }, (_, i) => ({ vmId: `vm${i}`, label: 'old', running: true }));
      let st = takeInventory(
        initialHostState(undefined, 'run', 0),
        vms,
        { hostId: 'h', target: 'new', excludeVms: [] },
        0,
      ).state;
      for (const s of steps) {
        if (s.kind === 'start' && mayStartVm(st, atOnce, true)) st = startNextVm(st).state;
        if (s.kind === 'finish' && st.inFlight.length > 0) {
          st = vmFinished(st, { vmId: st.inFlight[0]!, outcome: s.outcome, at: 0 });
        }
        if (s.kind === 'report') {
          const { state, report } = beginReport(st, ctx);
          st = onControl(reportSent(state, true), { gate: 'run', gateSeq: 0, ack: report.seq }).state;
        }
        const done = Object.values(st.counts).reduce((a, b) => a + b, 0);
        expect(done + st.pending.length + st.inFlight.length).toBe(st.total);
        expect(st.inFlight.length).toBeLessThanOrEqual(atOnce);
      }
    }),
  );
});
