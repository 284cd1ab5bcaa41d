// A deliberately tiny QMP client for the simulator's own tooling and tests (schema dumps, simulator tests).
// It is not the product's QMP client: no reconnects, no typing, one command in flight at a time.
import net from 'node:net';
import { JsonStreamSplitter } from './json';

export interface QmpMessage {
  QMP?: unknown;
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
  id?: unknown;
}

export class RawQmp {
  readonly events: QmpMessage[] = [];
  greeting: QmpMessage | undefined;
  closed = false;
  private readonly waiting: Array<(m: QmpMessage) => void> = [];
  private readonly replies: QmpMessage[] = [];
  private readonly eventWaiters: Array<{ match: (e: QmpMessage) => boolean; resolve: (e: QmpMessage) => void }> = [];
  private readonly closeWaiters: Array<() => void> = [];

  private constructor(private readonly sock: net.Socket) {
    const splitter = new JsonStreamSplitter();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      for (const item of splitter.feed(chunk)) {
        if (!('text' in item)) continue;
        this.onMessage(JSON.parse(item.text) as QmpMessage);
      }
    });
    sock.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters.splice(0)) w();
    });
    sock.on('error', () => undefined);
  }

  /** Connect, retrying while the socket does not exist yet, and wait for the greeting. */
  static async connect(path: string, opts: { timeoutMs?: number; negotiate?: boolean } = {}): Promise<RawQmp> {
    const deadline = Date.now() + (opts.timeoutMs ?? 5000);
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const c = new RawQmp(sock);
        try {
          c.greeting = await c.next(Math.max(100, deadline - Date.now()));
          if (opts.negotiate !== false) await c.cmd('qmp_capabilities');
        } catch (e) {
          sock.destroy();
          throw e;
        }
        return c;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  private onMessage(m: QmpMessage): void {
    if (m.event !== undefined) {
      this.events.push(m);
      for (let i = this.eventWaiters.length - 1; i >= 0; i--) {
        if (this.eventWaiters[i].match(m)) this.eventWaiters.splice(i, 1)[0].resolve(m);
      }
      return;
    }
    const w = this.waiting.shift();
    if (w) w(m);
    else this.replies.push(m);
  }

  /** Next non-event message (reply or greeting). */
  next(timeoutMs = 5000): Promise<QmpMessage> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const i = this.waiting.indexOf(done);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(new Error(`QMP: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (m: QmpMessage): void => {
        clearTimeout(t);
        resolve(m);
      };
      this.waiting.push(done);
    });
  }

  sendRaw(text: string): void {
    this.sock.write(text);
  }

  /** Send a command and return the whole reply message ({return} or {error}). */
  async execute(name: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<QmpMessage> {
    this.sendRaw(JSON.stringify(args === undefined ? { execute: name } : { execute: name, arguments: args }) + '\n');
    return this.next(timeoutMs);
  }

  /** Send a command; resolve with its return value, reject with the QMP error. */
  async cmd<T = unknown>(name: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<T> {
    const r = await this.execute(name, args, timeoutMs);
    if (r.error) throw Object.assign(new Error(`${name}: ${r.error.class}: ${r.error.desc}`), { qmpError: r.error });
    return r.return as T;
  }

  /** Resolve with the first event (already received or future) that matches. */
  waitEvent(
    name: string,
    pred: (data: Record<string, unknown>) => boolean = () => true,
    timeoutMs = 5000,
  ): Promise<QmpMessage> {
    const match = (e: QmpMessage): boolean => e.event === name && pred(e.data ?? {});
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const entry = { match, resolve: (e: QmpMessage) => (clearTimeout(t), resolve(e)) };
      const t = setTimeout(() => {
        const i = this.eventWaiters.indexOf(entry);
        if (i >= 0) this.eventWaiters.splice(i, 1);
        reject(new Error(`QMP: no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.eventWaiters.push(entry);
    });
  }

  /** Resolve when the server closes the connection. */
  waitClosed(timeoutMs = 5000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`QMP: connection still open after ${timeoutMs} ms`)), timeoutMs);
      this.closeWaiters.push(() => (clearTimeout(t), resolve()));
    });
  }

  close(): void {
    this.sock.destroy();
  }
}
