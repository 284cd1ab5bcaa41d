// QmpClient against a fake peer on a real UNIX socket that answers out of order by id (or in order without
// one), interleaves random events, and splits everything it writes at random byte boundaries: every execute
// resolves (or rejects) with its own reply and every event reaches every subscriber, in order.
import path from 'node:path';
import fc from 'fast-check';
import { QmpClient } from '../../activities/qmp/client';
import { QmpError } from '../../activities/qmp/errors';
import type { QmpEvent } from '../../activities/qmp/messages';
import { event, FakeQmpPeer, greeting, type ReceivedCommand } from '../helpers/fake-qmp-peer';
import { useTmpDir } from '../helpers/tmp';

jest.setTimeout(120_000);

const tmp = useTmpDir('qfqi');

interface CommandPlan {
  /** The peer answers with an error reply instead of a return. */
  fails: boolean;
  /** The peer leaves the id out where that is unambiguous (the command is the oldest unanswered). */
  omitIdIfOldest: boolean;
  payload: string;
}

interface EventPlan {
  name: string;
  data: Record<string, unknown> | undefined;
  /** How many replies precede it (taken modulo the number of commands + 1). */
  after: number;
}

const text = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.constantFrom('', '\u00e9\u20ac', '\ud83d\ude00', '"\\\n\r'),
);

const scenario = fc.integer({ min: 1, max: 10 }).chain((n) =>
  fc.record({
    commands: fc.array(fc.record<CommandPlan>({ fails: fc.boolean(), omitIdIfOldest: fc.boolean(), payload: text }), {
      minLength: n,
      maxLength: n,
    }),
    replyOrder: fc.shuffledSubarray(
      Array.from({ length: n }, (_, i) => i),
      { minLength: n, maxLength: n },
    ),
    events: fc.array(
      fc.record<EventPlan>({
        name: fc.constantFrom('STOP', 'RESUME', 'MIGRATION', 'MIGRATION_PASS', 'X_\u00c9V\u00c9NEMENT'),
        data: fc.option(
          fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(text, fc.integer(), fc.boolean()), { maxKeys: 3 }),
          {
            nil: undefined,
          },
        ),
        after: fc.nat(),
      }),
      { maxLength: 12 },
    ),
    crlf: fc.boolean(),
    oob: fc.boolean(),
    greetingCuts: fc.uniqueArray(fc.integer({ min: 1, max: 200 }), { maxLength: 6 }),
    cuts: fc.uniqueArray(fc.integer({ min: 1, max: 4000 }), { maxLength: 40 }),
  }),
);
type Scenario = typeof scenario extends fc.Arbitrary<infer T> ? T : never;

/** What the peer writes after it received every command: replies in the planned order, events between. */
function peerOutput(s: Scenario, received: ReceivedCommand[]): string[] {
  const lines: string[] = [];
  const unanswered = received.map((_, i) => i);
  const n = received.length;
  const eventsAt = (k: number) =>
    s.events
      .map((e, seq) => ({ e, seq }))
      .filter(({ e }) => e.after % (n + 1) === k)
      .map(({ e, seq }) => JSON.stringify(event(e.name, e.data === undefined ? undefined : { ...e.data, seq })));
  lines.push(...eventsAt(0));
  s.replyOrder.forEach((i, k) => {
    const cmd = received[i]!;
    const plan = s.commands[i]!;
    const oldest = unanswered[0] === i;
    unanswered.splice(unanswered.indexOf(i), 1);
    const id = plan.omitIdIfOldest && oldest ? {} : { id: cmd.id };
    const body = plan.fails
      ? { error: { class: 'GenericError', desc: `refused ${i}: ${plan.payload}` } }
      : { return: { echo: cmd.arguments } };
    lines.push(JSON.stringify({ ...body, ...id }));
    lines.push(...eventsAt(k + 1));
  });
  lines.push(JSON.stringify(event('FU_END')));
  return lines;
}

/** The events a subscriber must see, in order (the data the client delivers). */
function expectedEvents(s: Scenario, n: number): Array<{ event: string; data: Record<string, unknown> }> {
  const order = s.events
    .map((e, seq) => ({ e, seq }))
    .sort((a, b) => (a.e.after % (n + 1)) - (b.e.after % (n + 1)) || a.seq - b.seq);
  return [
    ...order.map(({ e, seq }) => ({ event: e.name, data: e.data === undefined ? {} : { ...e.data, seq } })),
    { event: 'FU_END', data: {} },
  ];
}

let run = 0;

async function runScenario(s: Scenario): Promise<void> {
  const n = s.commands.length;
  const socketPath = path.join(tmp(), `p${run++}.sock`);
  let capabilitiesCommand: ReceivedCommand | undefined;
  const peer = await FakeQmpPeer.start(socketPath, async (conn) => {
    const end = s.crlf ? '\r\n' : '\n';
    await conn.writeInPieces(Buffer.from(`${JSON.stringify(greeting(s.oob ? ['oob'] : []))}${end}`), s.greetingCuts);
    capabilitiesCommand = await conn.nextCommand();
    conn.send({ return: {}, id: capabilitiesCommand.id }, end);
    const received: ReceivedCommand[] = [];
    for (let i = 0; i < n; i++) received.push(await conn.nextCommand());
    const data = Buffer.from(
      peerOutput(s, received)
        .map((l) => `${l}${end}`)
        .join(''),
      'utf8',
    );
    await conn.writeInPieces(data, s.cuts);
  });
  const client = await QmpClient.connect(socketPath, { timeoutMs: 3_000 });
  try {
    const seenA: QmpEvent[] = [];
    const seenB: QmpEvent[] = [];
    client.onEvent((e) => seenA.push(e));
    client.onEvent((e) => seenB.push(e));
    const ended = client.waitForEvent((e) => e.event === 'FU_END', { timeoutMs: 3_000 });
    const results = await Promise.allSettled(
      s.commands.map((c, i) => client.execute('echo', { i, payload: c.payload })),
    );
    await ended;

    expect(peer.scriptErrors).toEqual([]);
    // Negotiation: oob enabled exactly when offered.
    expect(capabilitiesCommand?.execute).toBe('qmp_capabilities');
    if (s.oob) expect(capabilitiesCommand?.arguments).toEqual({ enable: ['oob'] });
    else expect(capabilitiesCommand?.arguments?.enable ?? []).toEqual([]);
    expect(client.oobEnabled).toBe(s.oob);

    results.forEach((r, i) => {
      const plan = s.commands[i]!;
      if (plan.fails) {
        expect(r.status).toBe('rejected');
        const err = (r as PromiseRejectedResult).reason as QmpError;
        expect(err).toBeInstanceOf(QmpError);
        expect(err.command).toBe('echo');
        expect(err.errorClass).toBe('GenericError');
        expect(err.desc).toBe(`refused ${i}: ${plan.payload}`);
      } else {
        expect(r).toEqual({ status: 'fulfilled', value: { echo: { i, payload: plan.payload } } });
      }
    });
    const want = expectedEvents(s, n);
    expect(seenA.map((e) => ({ event: e.event, data: e.data }))).toEqual(want);
    expect(seenB.map((e) => ({ event: e.event, data: e.data }))).toEqual(want);
    expect(client.closed).toBe(false);
  } finally {
    await client.close();
    await peer.close();
  }
}

describe('QmpClient reply matching under interleaved events (fake peer, real UNIX socket)', () => {
  it('resolves every execute with its own reply and delivers every event in order (property)', async () => {
    await fc.assert(fc.asyncProperty(scenario, runScenario), { numRuns: 150 });
  });

  it('handles a reply order that is the exact reverse, with every write split into single bytes', async () => {
    const n = 6;
    await runScenario({
      commands: Array.from({ length: n }, (_, i) => ({
        fails: i % 3 === 0,
        omitIdIfOldest: true,
        payload: `p\u00e9${i}`,
      })),
      replyOrder: Array.from({ length: n }, (_, i) => n - 1 - i),
      events: [
        { name: 'STOP', data: undefined, after: 0 },
        { name: 'MIGRATION', data: { status: 'active' }, after: 3 },
        { name: 'RESUME', data: undefined, after: n },
      ],
      crlf: true,
      oob: true,
      greetingCuts: Array.from({ length: 200 }, (_, i) => i + 1),
      cuts: Array.from({ length: 4000 }, (_, i) => i + 1),
    });
  });
});
