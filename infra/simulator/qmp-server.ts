// The QMP monitor on a UNIX socket, as QEMU runs it: greeting, capabilities negotiation, one client at a
// time (a second client connects but gets no greeting until the first leaves, as with QEMU's chardev),
// commands handled in order, replies `{"return": ..., "id": ...}`, events only after negotiation.
import net from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';
import { JsonStreamSplitter, toQemuJson } from './json';

export interface QmpError {
  class: string;
  desc: string;
}

export type QmpResult =
  | { return: unknown; after?: () => void }
  | { error: QmpError; after?: () => void }
  /** Never answer (hung process, or a crash in progress). */
  | { noReply: true };

export interface QmpHost {
  /** The `{"QMP": ...}` greeting. */
  greeting(): Record<string, unknown>;
  /** A negotiated command (capabilities are handled here). */
  execute(name: string, args: Record<string, unknown>): QmpResult | Promise<QmpResult>;
  /** While true, nothing is written: no greeting, replies or events. */
  isHung(): boolean;
}

export const genericError = (desc: string): { error: QmpError } => ({ error: { class: 'GenericError', desc } });

type Item = { text: string } | { error: string };

class Session {
  negotiated = false;
  oob = false;
  busy = false;
  readonly queue: Item[] = [];
  readonly splitter = new JsonStreamSplitter();

  constructor(readonly sock: net.Socket) {}

  write(msg: unknown): void {
    if (!this.sock.destroyed) this.sock.write(toQemuJson(msg) + '\r\n');
  }
}

function timestamp(): { seconds: number; microseconds: number } {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
}

export class QmpMonitor {
  private server?: net.Server;
  private active?: Session;
  private readonly waiting: Session[] = [];

  constructor(
    readonly path: string,
    private readonly host: QmpHost,
  ) {}

  /** Bind and listen; a stale socket file is replaced, as QEMU does. Rejects with QEMU's bind error text. */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (existsSync(this.path)) {
        try {
          unlinkSync(this.path);
        } catch {
          // bind will report it
        }
      }
      const server = net.createServer((sock) => this.onConnection(sock));
      server.once('error', (e: NodeJS.ErrnoException) => {
        reject(new Error(`Failed to bind socket to ${this.path}: ${describeErrno(e)}`));
      });
      server.listen(this.path, () => {
        this.server = server;
        resolve();
      });
    });
  }

  private onConnection(sock: net.Socket): void {
    sock.setEncoding('utf8');
    sock.setNoDelay?.(true);
    const s = new Session(sock);
    sock.on('data', (chunk: string) => {
      // A client not served yet keeps its input queued, as it would wait in the socket.
      s.queue.push(...s.splitter.feed(chunk));
      void this.pump(s);
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (this.active === s) {
        this.active = undefined;
        this.promote();
      } else {
        const i = this.waiting.indexOf(s);
        if (i >= 0) this.waiting.splice(i, 1);
      }
    });
    this.waiting.push(s);
    this.promote();
  }

  private promote(): void {
    if (this.active || this.host.isHung()) return;
    const next = this.waiting.shift();
    if (!next) return;
    this.active = next;
    next.write(this.host.greeting());
    void this.pump(next);
  }

  /** Handle queued input of the served session, one command at a time, in order. */
  private async pump(s: Session): Promise<void> {
    if (s.busy) return;
    s.busy = true;
    try {
      while (s.queue.length > 0 && this.active === s && !this.host.isHung() && !s.sock.destroyed) {
        await this.handle(s, s.queue.shift() as Item);
      }
    } finally {
      s.busy = false;
    }
  }

  private async handle(s: Session, item: Item): Promise<void> {
    if ('error' in item) return s.write(genericError(item.error));
    let msg: unknown;
    try {
      msg = JSON.parse(item.text);
    } catch {
      return s.write(genericError('JSON parse error'));
    }
    const env = checkEnvelope(msg, s.oob);
    if ('error' in env) return s.write(withId(env, env.id));
    const { name, args, id } = env;
    let result: QmpResult;
    if (!s.negotiated) {
      if (name === 'qmp_capabilities') result = this.negotiate(s, args);
      else
        result = {
          error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" },
        };
    } else if (name === 'qmp_capabilities') {
      result = {
        error: { class: 'CommandNotFound', desc: 'Capabilities negotiation is already complete, command ignored' },
      };
    } else {
      result = await this.host.execute(name, args);
    }
    if ('noReply' in result || this.host.isHung()) return;
    s.write(withId('error' in result ? { error: result.error } : { return: result.return }, id));
    result.after?.();
  }

  private negotiate(s: Session, args: Record<string, unknown>): QmpResult {
    for (const k of Object.keys(args)) if (k !== 'enable') return genericError(`Parameter '${k}' is unexpected`);
    const enable = args.enable;
    if (enable !== undefined) {
      if (!Array.isArray(enable)) return genericError("Invalid parameter type for 'enable', expected: array");
      for (const c of enable) {
        if (c !== 'oob') return genericError(`Parameter 'enable[0]' does not accept value '${String(c)}'`);
      }
      s.oob = enable.includes('oob');
    }
    s.negotiated = true;
    return { return: {} };
  }

  /** Broadcast an event to the negotiated client, if any. */
  emitEvent(event: string, data?: Record<string, unknown>): void {
    if (this.host.isHung()) return;
    const s = this.active;
    if (!s?.negotiated) return;
    s.write(data === undefined ? { timestamp: timestamp(), event } : { timestamp: timestamp(), event, data });
  }

  /** After a hang is cleared (never, today) or on start: greet a waiting client. */
  kick(): void {
    this.promote();
  }

  /** Close like a process exit: connections end, the socket file stays (QEMU leaves it too). */
  close(): void {
    this.server?.close();
    for (const s of [this.active, ...this.waiting]) s?.sock.end();
    this.active = undefined;
    this.waiting.length = 0;
  }

  /** Abrupt: connections reset. */
  destroy(): void {
    this.server?.close();
    for (const s of [this.active, ...this.waiting]) s?.sock.destroy();
    this.active = undefined;
    this.waiting.length = 0;
  }
}

function withId<T extends object>(m: T, id: unknown): T {
  return id === undefined ? m : { ...m, id };
}

type Envelope = { name: string; args: Record<string, unknown>; id?: unknown } | { error: QmpError; id?: unknown };

/** QEMU's qmp_dispatch() checks of the request object itself. */
function checkEnvelope(msg: unknown, oob: boolean): Envelope {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
    return { error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } };
  }
  const m = msg as Record<string, unknown>;
  const id = m.id;
  let name: string | undefined;
  for (const [k, v] of Object.entries(m)) {
    if (k === 'execute' || (k === 'exec-oob' && oob)) {
      if (typeof v !== 'string')
        return { error: { class: 'GenericError', desc: `QMP input member '${k}' must be a string` }, id };
      name = v;
    } else if (k === 'arguments') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        return { error: { class: 'GenericError', desc: "QMP input member 'arguments' must be an object" }, id };
      }
    } else if (k !== 'id') {
      return { error: { class: 'GenericError', desc: `QMP input member '${k}' is unexpected` }, id };
    }
  }
  if (name === undefined) return { error: { class: 'GenericError', desc: "QMP input lacks member 'execute'" }, id };
  return { name, args: (m.arguments as Record<string, unknown>) ?? {}, id };
}

export function describeErrno(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ENOENT':
      return 'No such file or directory';
    case 'EACCES':
      return 'Permission denied';
    case 'EADDRINUSE':
      return 'Address already in use';
    case 'ECONNREFUSED':
      return 'Connection refused';
    case 'EPIPE':
      return 'Broken pipe';
    case 'ENAMETOOLONG':
      return 'File name too long';
    default:
      return e.message;
  }
}
