// Splits a byte stream into JSON lines, as QMP sends them (one message per line, "\r\n" or "\n").
// Holds partial lines across chunks and bounds how long one line may grow.

export class LineTooLongError extends Error {
  constructor(readonly limit: number) {
    super(`a line exceeded ${limit} bytes`);
    this.name = 'LineTooLongError';
  }
}

export class LineFramer {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxLineBytes: number) {}

  /** Feeds bytes; returns the complete lines they finish (without line ends, blank lines dropped). */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(0x0a, start); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, nl);
      this.ensureRoom(piece.length);
      const line = this.pendingBytes === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.pending = [];
      this.pendingBytes = 0;
      const text = line.toString('utf8').replace(/\r$/, '');
      if (text.trim() !== '') lines.push(text);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.ensureRoom(rest.length);
      this.pending.push(Buffer.from(rest));
      this.pendingBytes += rest.length;
    }
    return lines;
  }

  private ensureRoom(adding: number): void {
    if (this.pendingBytes + adding > this.maxLineBytes) {
      this.pending = [];
      this.pendingBytes = 0;
      throw new LineTooLongError(this.maxLineBytes);
    }
  }
}
