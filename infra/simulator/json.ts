// JSON the way QEMU's monitor writes and reads it.
//
// Output: QEMU's QObject serializer separates with ", " and ": " and ends every message with "\r\n".
// Input: QEMU's JSON streamer splits the byte stream into top-level values by brace/bracket depth, not by
// lines, so clients may send several commands on a line or one command over several lines.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Serialize like QEMU's qobject_to_json(): `{"a": 1, "b": [1, 2]}`. Undefined members are dropped. */
export function toQemuJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(toQemuJson).join(', ')}]`;
      const parts: string[] = [];
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (v !== undefined) parts.push(`${JSON.stringify(k)}: ${toQemuJson(v)}`);
      }
      return `{${parts.join(', ')}}`;
    }
    default:
      return 'null';
  }
}

/** One complete top-level value split out of the input stream, or a lexical error. */
export type StreamItem = { text: string } | { error: string };

/**
 * Incremental splitter for QEMU's JSON stream: feed() bytes, get back complete top-level texts.
 * Whitespace between values is skipped; a bare token outside any object or array is an error, as in QEMU.
 */
export class JsonStreamSplitter {
  private buf = '';
  private depth = 0;
  private inString = false;
  private escape = false;
  private start = -1;

  feed(chunk: string): StreamItem[] {
    const out: StreamItem[] = [];
    const s = this.buf + chunk;
    let i = this.buf.length;
    this.buf = s;
    for (; i < s.length; i++) {
      const c = s[i];
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (c === '\\') this.escape = true;
        else if (c === '"') this.inString = false;
        continue;
      }
      if (this.depth === 0) {
        if (c === ' ' || c === '\n' || c === '\r' || c === '\t') continue;
        if (c !== '{' && c !== '[') {
          // QEMU reports the offending token; read it up to the next delimiter.
          let j = i;
          while (j < s.length && !/[\s{}[\],:"]/.test(s[j])) j++;
          const token = s.slice(i, Math.max(j, i + 1));
          out.push({
            error: /^[a-zA-Z]/.test(token)
              ? `JSON parse error, invalid keyword '${token}'`
              : 'JSON parse error, stray token',
          });
          i = Math.max(j, i + 1) - 1;
          continue;
        }
        this.start = i;
      }
      if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === 0) {
          out.push({ text: s.slice(this.start, i + 1) });
          this.start = -1;
        }
      }
    }
    // Keep only the unfinished value, if any.
    this.buf = this.start >= 0 ? s.slice(this.start) : '';
    if (this.start >= 0) this.start = 0;
    if (this.buf.length > 64 * 1024 * 1024) {
      this.reset();
      out.push({ error: 'JSON parse error, message too large' });
    }
    return out;
  }

  reset(): void {
    this.buf = '';
    this.depth = 0;
    this.inString = false;
    this.escape = false;
    this.start = -1;
  }
}
