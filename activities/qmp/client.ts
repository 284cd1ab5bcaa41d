// A QMP client: one UNIX-socket conversation with one QEMU monitor.
// - waits for the greeting, negotiates capabilities (out-of-band only when the peer offers it);
// - tags every command with an id and matches replies by id (in order for replies QEMU sends without one);
// - delivers asynchronous events to subscribers while commands are in flight;
// - frames lines with an upper bound on their length;
// - bounds every wait with a timeout; a disconnect rejects everything pending.
import net from 'node:net';
import { LineFramer, LineTooLongError } from './line-framer';
import { QmpConnectError, QmpDisconnectedError, QmpError, QmpProtocolError, QmpTimeoutError } from './errors';
import { classifyMessage, type QmpEvent, type QmpGreeting, type QmpMessage } from './messages';

export interface QmpClientOptions {
  /** Bound on connecting plus the greeting, and the default bound on each command. */
  timeoutMs?: number;
  /** The longest line accepted from the peer (query-qmp-schema is a few hundred KiB). */
  maxLineBytes?: number;
}

export interface CommandOptions {
  timeoutMs?: number;
}

export interface EventWaitOptions {
  timeoutMs: number;
  /** What is awaited, for the timeout message. */
  description?: string;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

type EventListener = (event: QmpEvent) => void;
type CloseListener = (error: Error) => void;

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

export class QmpClient {
  private readonly framer: LineFramer;
  private readonly pending = new Map<string, Pending>();
  /** Ids of commands sent, oldest first: a reply without an id answers the oldest. */
  private readonly order: string[] = [];
  /** Ids whose wait timed out: a late reply to one of them is dropped, not a protocol error. */
  private readonly abandoned = new Set<string>();
  private readonly eventListeners = new Set<EventListener>();
  private readonly closeListeners = new Set<CloseListener>();
  private nextId = 1;
  private closedWith: Error | undefined;
  private greetingWaiter: { resolve(g: QmpGreeting): void; reject(e: Error): void } | undefined;
  private greetingValue: QmpGreeting | undefined;
  private oob = false;
  private connected = false;

  private constructor(
    readonly peer: string,
    private readonly socket: net.Socket,
    private readonly timeoutMs: number,
    maxLineBytes: number,
  ) {
    this.framer = new LineFramer(maxLineBytes);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.once('connect', () => (this.connected = true));
    socket.on('error', (err) =>
      this.shutdown(
        this.connected ? new QmpDisconnectedError(peer, err.message) : new QmpConnectError(peer, err.message),
      ),
    );
    socket.on('close', () => this.shutdown(new QmpDisconnectedError(peer, 'the peer closed the connection')));
  }

  /** Connects, reads the greeting and leaves capability negotiation done. */
  static async connect(socketPath: string, options: QmpClientOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const socket = net.createConnection({ path: socketPath });
    const client = new QmpClient(socketPath, socket, timeoutMs, options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    const deadline = setTimeout(
      () => client.shutdown(new QmpTimeoutError(socketPath, 'the connection and greeting', timeoutMs)),
      timeoutMs,
    );
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        client.closeListeners.add(reject);
      });
      const greeting = await client.greeting();
      const enable = greeting.capabilities.includes('oob') ? ['oob'] : [];
      await client.execute('qmp_capabilities', enable.length ? { enable } : undefined);
      client.oob = enable.length > 0;
      return client;
    } catch (err) {
      client.shutdown(err instanceof Error ? err : new Error(String(err)));
      throw err;
    } finally {
      clearTimeout(deadline);
      client.closeListeners.clear();
    }
  }

  /** The peer's greeting (version and capabilities). */
  get qmpGreeting(): QmpGreeting {
    if (!this.greetingValue) throw new Error(`${this.peer}: no greeting yet`);
    return this.greetingValue;
  }

  get oobEnabled(): boolean {
    return this.oob;
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /** Runs one command and resolves with its `return` value; rejects with a typed error. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: CommandOptions = {}): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = `fu-${this.nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.forget(id);
        this.abandoned.add(id);
        reject(new QmpTimeoutError(this.peer, command, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.order.push(id);
      const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  /** Subscribes to every event; returns the unsubscribe function. */
  onEvent(listener: EventListener): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Called once when the conversation ends, with the reason. */
  onClose(listener: CloseListener): () => void {
    if (this.closedWith) {
      listener(this.closedWith);
      return () => undefined;
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /** Resolves with the first event that satisfies the predicate from now on. */
  waitForEvent(predicate: (event: QmpEvent) => boolean, options: EventWaitOptions): Promise<QmpEvent> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise<QmpEvent>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        offEvent();
        offClose();
      };
      const timer = setTimeout(() => {
        done();
        reject(new QmpTimeoutError(this.peer, options.description ?? 'an event', options.timeoutMs));
      }, options.timeoutMs);
      const offEvent = this.onEvent((event) => {
        let matches: boolean;
        try {
          matches = predicate(event);
        } catch (err) {
          done();
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        if (!matches) return;
        done();
        resolve(event);
      });
      const offClose = this.onClose((error) => {
        done();
        reject(error);
      });
    });
  }

  /** Ends the conversation; pending commands are rejected. */
  async close(): Promise<void> {
    if (this.closedWith) return;
    this.shutdown(new QmpDisconnectedError(this.peer, 'closed by the client'));
    await new Promise<void>((resolve) => {
      if (this.socket.destroyed) resolve();
      else this.socket.once('close', () => resolve());
    });
  }

  private greeting(): Promise<QmpGreeting> {
    if (this.greetingValue) return Promise.resolve(this.greetingValue);
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise((resolve, reject) => {
      this.greetingWaiter = { resolve, reject };
    });
  }

  private onData(chunk: Buffer): void {
    let lines: string[];
    try {
      lines = this.framer.push(chunk);
    } catch (err) {
      if (err instanceof LineTooLongError) {
        this.shutdown(new QmpProtocolError(this.peer, `a message longer than ${err.limit} bytes`));
        return;
      }
      throw err;
    }
    for (const line of lines) {
      if (this.closedWith) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        this.shutdown(new QmpProtocolError(this.peer, `not JSON: ${truncate(line)}`));
        return;
      }
      const message = classifyMessage(parsed);
      if (!message) {
        this.shutdown(new QmpProtocolError(this.peer, `a message of no QMP shape: ${truncate(line)}`));
        return;
      }
      this.dispatch(message, line);
    }
  }

  private dispatch(message: QmpMessage, line: string): void {
    switch (message.kind) {
      case 'greeting':
        if (this.greetingValue || !this.greetingWaiter) {
          this.shutdown(new QmpProtocolError(this.peer, 'an unexpected second greeting'));
          return;
        }
        this.greetingValue = message.greeting;
        this.greetingWaiter.resolve(message.greeting);
        this.greetingWaiter = undefined;
        return;
      case 'event':
        for (const listener of [...this.eventListeners]) {
          // A subscriber's bug must not cost the conversation (or the worker): it is reported, not thrown.
          try {
            listener(message.event);
          } catch (err) {
            process.emitWarning(
              `${this.peer}: an event subscriber failed: ${err instanceof Error ? err.message : err}`,
            );
          }
        }
        return;
      case 'return':
      case 'error': {
        if (!this.greetingValue) {
          this.shutdown(new QmpProtocolError(this.peer, `a reply before the greeting: ${truncate(line)}`));
          return;
        }
        const id = message.id === undefined ? this.order[0] : String(message.id);
        if (id !== undefined && this.abandoned.delete(id)) return;
        const entry = id === undefined ? undefined : this.pending.get(id);
        if (!entry || id === undefined) {
          this.shutdown(new QmpProtocolError(this.peer, `a reply to no command sent: ${truncate(line)}`));
          return;
        }
        this.forget(id);
        if (message.kind === 'return') entry.resolve(message.value);
        else entry.reject(new QmpError(this.peer, entry.command, message.errorClass, message.desc));
        return;
      }
    }
  }

  private forget(id: string): void {
    const entry = this.pending.get(id);
    if (entry) clearTimeout(entry.timer);
    this.pending.delete(id);
    const at = this.order.indexOf(id);
    if (at !== -1) this.order.splice(at, 1);
  }

  private shutdown(reason: Error): void {
    if (this.closedWith) return;
    this.closedWith = reason;
    for (const [id, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.reject(reason);
      this.pending.delete(id);
    }
    this.order.length = 0;
    this.greetingWaiter?.reject(reason);
    this.greetingWaiter = undefined;
    for (const listener of [...this.closeListeners]) listener(reason);
    this.closeListeners.clear();
    this.eventListeners.clear();
    this.socket.destroy();
  }
}

/** A peer's line as it may be shown to an operator: control characters escaped, length bounded. */
function truncate(line: string): string {
  // eslint-disable-next-line no-control-regex
  const safe = line.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return safe.length > 120 ? `${safe.slice(0, 120)}…` : safe;
}
