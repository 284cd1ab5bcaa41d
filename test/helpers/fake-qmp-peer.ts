// A fake QMP peer on a real UNIX socket (net.createServer), for tests of the QMP client and of the CLI
// against peers that behave or misbehave. The test scripts each connection: what to write, when, in how
// many pieces, and what to do with the commands it receives.
import { existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';

export interface ReceivedCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: string | number;
  /** The line as received. */
  raw: string;
}

/** The greeting of a QEMU 10.0.2 (capabilities as given). */
export function greeting(capabilities: string[] = [], version = { major: 10, minor: 0, micro: 2 }): object {
  return {
    QMP: {
      version: { qemu: { major: version.major, minor: version.minor, micro: version.micro }, package: 'fake' },
      capabilities,
    },
  };
}

/** An event as QEMU sends it, with a timestamp. */
export function event(name: string, data?: Record<string, unknown>, atMs = Date.now()): object {
  const timestamp = { seconds: Math.floor(atMs / 1000), microseconds: (atMs % 1000) * 1000 };
  return data === undefined ? { event: name, timestamp } : { event: name, data, timestamp };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One accepted connection of the fake peer. */
export class FakeQmpConnection {
  readonly received: ReceivedCommand[] = [];
  /** Lines that were not JSON objects with `execute` (kept for assertions). */
  readonly garbage: string[] = [];
  readonly closed: Promise<void>;
  /** When the connection was accepted (Date.now()). */
  readonly acceptedAt = Date.now();
  private buffered = '';
  private readonly waiters: Array<(c: ReceivedCommand) => void> = [];
  private readonly unread: ReceivedCommand[] = [];
  private isClosed = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (b: Buffer) => this.onData(b));
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        resolve();
      }),
    );
  }

  get isOpen(): boolean {
    return !this.isClosed && !this.socket.destroyed;
  }

  /** Writes one message (an object is JSON-encoded) and a line end. */
  send(message: object | string, lineEnd = '\r\n'): void {
    if (!this.isOpen) return;
    this.socket.write(`${typeof message === 'string' ? message : JSON.stringify(message)}${lineEnd}`);
  }

  /** Writes raw bytes as they are. */
  writeRaw(data: string | Buffer): void {
    if (this.isOpen) this.socket.write(data);
  }

  /**
   * Writes `data` in pieces cut at the given byte offsets, letting the event loop turn between pieces so they
   * tend to arrive as separate reads.
   */
  async writeInPieces(data: Buffer, cuts: number[], pauseMs = 0): Promise<void> {
    const points = [...new Set(cuts.filter((c) => c > 0 && c < data.length))].sort((a, b) => a - b);
    let start = 0;
    for (const end of [...points, data.length]) {
      if (!this.isOpen) return;
      await new Promise<void>((resolve) => this.socket.write(data.subarray(start, end), () => resolve()));
      start = end;
      if (pauseMs > 0) await sleep(pauseMs);
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** The next command received (in arrival order); rejects after timeoutMs or when the connection closes. */
  nextCommand(timeoutMs = 5_000): Promise<ReceivedCommand> {
    const ready = this.unread.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const waiter = (c: ReceivedCommand) => {
        clearTimeout(timer);
        resolve(c);
      };
      const giveUp = (message: string) => {
        const at = this.waiters.indexOf(waiter);
        if (at !== -1) this.waiters.splice(at, 1);
        clearTimeout(timer);
        reject(new Error(message));
      };
      const timer = setTimeout(() => giveUp(`fake QMP peer: no command within ${timeoutMs} ms`), timeoutMs);
      void this.closed.then(() => giveUp('fake QMP peer: connection closed while waiting for a command'));
      this.waiters.push(waiter);
    });
  }

  /** Greets, waits for qmp_capabilities, answers it; returns that command (to check its arguments). */
  async negotiate(capabilities: string[] = []): Promise<ReceivedCommand> {
    this.send(greeting(capabilities));
    const cmd = await this.nextCommand();
    if (cmd.execute !== 'qmp_capabilities') throw new Error(`fake QMP peer: expected qmp_capabilities, got ${cmd.raw}`);
    this.send(cmd.id === undefined ? { return: {} } : { return: {}, id: cmd.id });
    return cmd;
  }

  /** Half-closes gracefully (FIN). */
  end(): void {
    this.socket.end();
  }

  /** Drops the connection at once. */
  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffered += chunk.toString('utf8');
    for (let nl = this.buffered.indexOf('\n'); nl !== -1; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl).replace(/\r$/, '');
      this.buffered = this.buffered.slice(nl + 1);
      if (line.trim() === '') continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        this.garbage.push(line);
        continue;
      }
      if (
        parsed === null ||
        typeof parsed !== 'object' ||
        typeof (parsed as { execute?: unknown }).execute !== 'string'
      ) {
        this.garbage.push(line);
        continue;
      }
      const p = parsed as { execute: string; arguments?: Record<string, unknown>; id?: string | number };
      const cmd: ReceivedCommand = { execute: p.execute, raw: line };
      if (p.arguments !== undefined) cmd.arguments = p.arguments;
      if (p.id !== undefined) cmd.id = p.id;
      this.received.push(cmd);
      const waiter = this.waiters.shift();
      if (waiter) waiter(cmd);
      else this.unread.push(cmd);
    }
  }
}

export type ConnectionScript = (conn: FakeQmpConnection) => void | Promise<void>;

/** A UNIX-socket server that runs `script` for every connection it accepts. */
export class FakeQmpPeer {
  readonly connections: FakeQmpConnection[] = [];
  /** Errors thrown by scripts (a test can assert there were none). */
  readonly scriptErrors: Error[] = [];
  private readonly connectionWaiters: Array<(c: FakeQmpConnection) => void> = [];
  private takenCount = 0;

  private constructor(
    readonly socketPath: string,
    private readonly server: net.Server,
  ) {}

  static async start(socketPath: string, script: ConnectionScript): Promise<FakeQmpPeer> {
    if (existsSync(socketPath)) unlinkSync(socketPath);
    const server = net.createServer();
    const peer = new FakeQmpPeer(socketPath, server);
    server.on('connection', (socket) => {
      const conn = new FakeQmpConnection(socket);
      peer.connections.push(conn);
      peer.connectionWaiters.shift()?.(conn);
      Promise.resolve()
        .then(() => script(conn))
        .catch((err: unknown) => {
          // A script that fails because the client went away is not an error of the peer.
          if (conn.isOpen) peer.scriptErrors.push(err instanceof Error ? err : new Error(String(err)));
        });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return peer;
  }

  /** The next connection accepted (or the first one already accepted and not yet taken). */
  nextConnection(timeoutMs = 5_000): Promise<FakeQmpConnection> {
    const taken = this.takenCount++;
    const existing = this.connections[taken];
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve, reject) => {
      const waiter = (c: FakeQmpConnection) => {
        clearTimeout(timer);
        resolve(c);
      };
      const timer = setTimeout(() => {
        const at = this.connectionWaiters.indexOf(waiter);
        if (at !== -1) this.connectionWaiters.splice(at, 1);
        this.takenCount--;
        reject(new Error(`fake QMP peer: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      this.connectionWaiters.push(waiter);
    });
  }

  /** Stops listening, drops every connection, removes the socket file. */
  async close(): Promise<void> {
    for (const c of this.connections) c.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (existsSync(this.socketPath)) unlinkSync(this.socketPath);
  }
}

// ---- Schemas in each backend-transfer dialect, built by patching a real `query-qmp-schema` answer the way
// activities/capabilities/dialects.ts expects the unmerged series to look. ---------------------------------

export interface SchemaEntry {
  name: string;
  'meta-type': string;
  [key: string]: unknown;
}

export type SyntheticDialect = 'backend-transfer-bool' | 'backend-transfer-list' | 'local';
export type TapPermitOption = 'x-permit-local-migration' | 'local-migration-supported';

export interface DialectPatch {
  dialect: SyntheticDialect;
  /** `local` only: tap options to add (default: the newest name). */
  tapOptions?: TapPermitOption[];
  /** `backend-transfer-list` only: describe `[str]` under an opaque numeric name, as QEMU does for objects. */
  opaqueArrayName?: boolean;
}

function entry(schema: SchemaEntry[], name: string | undefined, what: string): SchemaEntry {
  const e = schema.find((x) => x.name === name);
  if (!e) throw new Error(`schema patch: no ${what} (${name})`);
  return e;
}

/** Adds a member to the argument object of a command (in place). */
export function addCommandArgMember(schema: SchemaEntry[], command: string, member: string, type: string): void {
  const cmd = entry(schema, command, `command ${command}`);
  const arg = entry(schema, cmd['arg-type'] as string | undefined, `argument type of ${command}`);
  (arg.members as Array<Record<string, unknown>>).push({ name: member, type, default: null });
}

/** Adds an option to the `tap` case of `netdev_add`'s argument (in place). */
export function addTapOption(schema: SchemaEntry[], option: string, type = 'bool'): void {
  const cmd = entry(schema, 'netdev_add', 'command netdev_add');
  const arg = entry(schema, cmd['arg-type'] as string | undefined, 'argument type of netdev_add');
  const variants = arg.variants as Array<{ case: string; type: string }>;
  const tap = entry(schema, variants.find((v) => v.case === 'tap')?.type, 'tap variant of netdev_add');
  (tap.members as Array<Record<string, unknown>>).push({ name: option, type, default: null });
}

/** A deep copy of `base` that speaks the given dialect. */
export function schemaInDialect(base: readonly SchemaEntry[], patch: DialectPatch): SchemaEntry[] {
  const schema = structuredClone(base) as SchemaEntry[];
  switch (patch.dialect) {
    case 'backend-transfer-bool':
      addCommandArgMember(schema, 'migrate-set-parameters', 'backend-transfer', 'bool');
      break;
    case 'backend-transfer-list': {
      let arrayName = '[str]';
      if (patch.opaqueArrayName) {
        arrayName = '90001';
        schema.push({ name: arrayName, 'meta-type': 'array', 'element-type': 'str' });
      } else if (!schema.some((e) => e.name === '[str]')) {
        schema.push({ name: '[str]', 'meta-type': 'array', 'element-type': 'str' });
      }
      addCommandArgMember(schema, 'migrate-set-parameters', 'backend-transfer', arrayName);
      // query-backend-transfer-support: [{path: str}]
      schema.push({ name: '90002', 'meta-type': 'object', members: [{ name: 'path', type: 'str' }] });
      schema.push({ name: '[90002]', 'meta-type': 'array', 'element-type': '90002' });
      schema.push({
        name: 'query-backend-transfer-support',
        'meta-type': 'command',
        'arg-type': '0',
        'ret-type': '[90002]',
      });
      break;
    }
    case 'local':
      addCommandArgMember(schema, 'migrate-set-parameters', 'local', 'bool');
      for (const option of patch.tapOptions ?? ['x-permit-local-migration']) addTapOption(schema, option);
      break;
  }
  return schema;
}
