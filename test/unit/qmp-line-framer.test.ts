// LineFramer: whatever the chunking of the byte stream, the lines come back exactly, once each, in order;
// CRLF and LF both end a line; blank lines are dropped; a line over the bound throws LineTooLongError.
import fc from 'fast-check';
import { LineFramer, LineTooLongError } from '../../activities/qmp/line-framer';

/** A line's content: any text without line ends (a '\r' inside a line is content, one at its end is not). */
const piece = fc.oneof(
  fc.constantFrom(' ', '\t', '\r', '\u00e9', '\u2028', '\ud83d\ude00', '{"a":1}'),
  fc.string({ unit: 'grapheme', maxLength: 4 }),
);
const lineContent = fc
  .array(piece, { maxLength: 12 })
  .map((parts) => parts.join(''))
  .filter((s) => !s.includes('\n') && !s.endsWith('\r'));

/** Cut points (byte offsets) for a buffer of the given length, possibly inside multi-byte characters. */
function cutsFor(length: number) {
  return fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, length - 1) }), { maxLength: Math.min(length, 60) });
}

function chunk(data: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts)].filter((c) => c > 0 && c < data.length).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let start = 0;
  for (const end of [...points, data.length]) {
    out.push(data.subarray(start, end));
    start = end;
  }
  return out;
}

function feed(framer: LineFramer, chunks: Buffer[]): string[] {
  return chunks.flatMap((c) => framer.push(c));
}

const isBlank = (s: string) => s.trim() === '';

describe('LineFramer', () => {
  it('gives back exactly the lines, whatever the chunking and line ends (property)', () => {
    const scenario = fc
      .array(fc.record({ text: lineContent, crlf: fc.boolean() }), { maxLength: 30 })
      .chain((lines) => {
        const data = Buffer.from(lines.map((l) => `${l.text}${l.crlf ? '\r\n' : '\n'}`).join(''), 'utf8');
        return fc.record({ lines: fc.constant(lines), data: fc.constant(data), cuts: cutsFor(data.length) });
      });
    fc.assert(
      fc.property(scenario, ({ lines, data, cuts }) => {
        const framer = new LineFramer(1 << 20);
        const got = feed(framer, chunk(data, cuts));
        expect(got).toEqual(lines.map((l) => l.text).filter((t) => !isBlank(t)));
        // Nothing is held back once every line has ended.
        expect(framer.push(Buffer.from('{"after":1}\n'))).toEqual(['{"after":1}']);
      }),
      { numRuns: 500 },
    );
  });

  it('holds an unfinished line until its end arrives (property)', () => {
    fc.assert(
      fc.property(
        lineContent.filter((t) => !isBlank(t)),
        fc.nat({ max: 200 }),
        (text, seed) => {
          const framer = new LineFramer(1 << 20);
          const data = Buffer.from(text, 'utf8');
          const cut = data.length === 0 ? 0 : seed % data.length;
          expect(framer.push(data.subarray(0, cut))).toEqual([]);
          expect(framer.push(data.subarray(cut))).toEqual([]);
          expect(framer.push(Buffer.from('\r\n'))).toEqual([text]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('drops blank lines (empty, spaces, a lone CR)', () => {
    const framer = new LineFramer(1024);
    expect(framer.push(Buffer.from('\n\r\n   \n\t\r\n{"a":1}\r\n\n \r\n{"b":2}\n'))).toEqual(['{"a":1}', '{"b":2}']);
  });

  it('treats CRLF split between two chunks as one line end', () => {
    const framer = new LineFramer(1024);
    expect(framer.push(Buffer.from('{"a":1}\r'))).toEqual([]);
    expect(framer.push(Buffer.from('\n{"b"'))).toEqual(['{"a":1}']);
    expect(framer.push(Buffer.from(':2}\r\n'))).toEqual(['{"b":2}']);
  });

  it('reassembles a multi-byte character split across chunks', () => {
    const framer = new LineFramer(1024);
    const bytes = Buffer.from('{"x":"\u00e9\u20ac\ud83d\ude00"}\n', 'utf8');
    const out: string[] = [];
    for (let i = 0; i < bytes.length; i++) out.push(...framer.push(bytes.subarray(i, i + 1)));
    expect(out).toEqual(['{"x":"\u00e9\u20ac\ud83d\ude00"}']);
  });

  it('accepts a line of exactly the bound and throws LineTooLongError beyond it, whatever the chunking (property)', () => {
    const scenario = fc.integer({ min: 1, max: 300 }).chain((limit) =>
      fc.integer({ min: 1, max: 2 * limit + 5 }).chain((length) => {
        const line = Buffer.alloc(length, 0x61); // 'a' * length, no line end yet
        return fc.record({
          limit: fc.constant(limit),
          line: fc.constant(line),
          terminated: fc.boolean(),
          cuts: cutsFor(length + 1),
        });
      }),
    );
    fc.assert(
      fc.property(scenario, ({ limit, line, terminated, cuts }) => {
        const framer = new LineFramer(limit);
        const data = terminated ? Buffer.concat([line, Buffer.from('\n')]) : line;
        const run = () => feed(framer, chunk(data, cuts));
        if (line.length > limit) {
          let thrown: unknown;
          try {
            run();
          } catch (err) {
            thrown = err;
          }
          expect(thrown).toBeInstanceOf(LineTooLongError);
          expect((thrown as LineTooLongError).limit).toBe(limit);
        } else {
          expect(run()).toEqual(terminated ? [line.toString()] : []);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('bounds each line separately: many short lines in one chunk are fine', () => {
    const framer = new LineFramer(8);
    const lines = Array.from({ length: 100 }, (_, i) => `{"i":${i % 10}}`);
    expect(framer.push(Buffer.from(lines.map((l) => `${l}\n`).join('')))).toEqual(lines);
  });

  it('counts bytes, not characters, against the bound', () => {
    // 3 characters, 6 bytes in UTF-8.
    expect(() => new LineFramer(5).push(Buffer.from('\u00e9\u00e9\u00e9\n'))).toThrow(LineTooLongError);
    expect(new LineFramer(6).push(Buffer.from('\u00e9\u00e9\u00e9\n'))).toEqual(['\u00e9\u00e9\u00e9']);
  });
});
