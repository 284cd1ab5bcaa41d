// The Temporal CLI dev server (`temporal server start-dev`) as a managed child process: its own SQLite file,
// free loopback ports, custom search attributes, readiness by a real client connection, clean stop and a
// restart that keeps the database (for "dev server restarted" fault tests).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { requireRealPart, temporalCli } from './real-parts';

export type SearchAttributeType = 'Text' | 'Keyword' | 'Int' | 'Double' | 'Bool' | 'Datetime' | 'KeywordList';

export interface DevServerOptions {
  /** SQLite file; default: a fresh file in a temporary folder that stop() removes. */
  dbFile?: string;
  /** Front-end gRPC port; default: a free loopback port. */
  port?: number;
  /** Web UI port; default: a free loopback port. Ignored when headless. */
  uiPort?: number;
  headless?: boolean;
  /** Namespace to create at launch ("default" always exists). Default: "default". */
  namespace?: string;
  searchAttributes?: Record<string, SearchAttributeType>;
  /** Dynamic config values over devServerTuning, JSON-encoded onto `--dynamic-config-value KEY=VALUE`. */
  dynamicConfig?: Record<string, unknown>;
  /** Server stdout/stderr; default: `<folder of dbFile>/temporal-dev.log` (appended). */
  logFile?: string;
  /** How long to wait for the server to accept clients. Default 60 s. */
  startTimeoutMs?: number;
  /** Binary; default: the CLI installed by infra/install.sh. */
  binary?: string;
}

export interface DevServer {
  /** host:port of the gRPC front end. */
  address: string;
  /** http://host:port of the Web UI, undefined when headless. */
  uiAddress: string | undefined;
  namespace: string;
  dbFile: string;
  logFile: string;
  /** PID of the current server process. */
  readonly pid: number;
  /** Stops the server (SIGTERM, then SIGKILL) and removes the temporary folder if this module created it. */
  stop(): Promise<void>;
  /** Stops and starts again on the same SQLite file and ports; waits until ready. */
  restart(): Promise<void>;
  /** Lets this process exit while the server keeps running (`demo --keep`); stop() still works. */
  detach(): void;
}

const HOST = '127.0.0.1';
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;
const STOP_GRACE_MS = 10_000;

/** A currently free TCP port on the loopback interface. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * What the dev server is started with unless told otherwise. It runs one history shard, and each shard's queue
 * readers poll for new tasks at most 20 times a second by default: every activity and workflow task then
 * waited up to 50 ms (30–40 ms measured) before it reached a worker, about 60 % of one upgrade's wall time on
 * the simulator. A production cluster spreads its workflows over hundreds of shards, each with that budget;
 * one shard polling at 200/s gives the dev server the same latency (3–5 ms per task measured), at no measurable
 * CPU cost.
 */
export const devServerTuning: Record<string, unknown> = {
  'history.transferProcessorMaxPollRPS': 200,
  'history.timerProcessorMaxPollRPS': 200,
  'history.visibilityProcessorMaxPollRPS': 200,
};

/** Pure: the `temporal` argv for start-dev. */
export function devServerArgs(o: {
  dbFile: string;
  port: number;
  uiPort?: number;
  headless: boolean;
  namespace: string;
  searchAttributes: Record<string, SearchAttributeType>;
  dynamicConfig: Record<string, unknown>;
}): string[] {
  if (!NAMESPACE.test(o.namespace)) throw new Error(`devserver: invalid namespace ${JSON.stringify(o.namespace)}`);
  const args = ['server', 'start-dev', '--ip', HOST, '--port', String(o.port), '--db-filename', o.dbFile];
  args.push('--log-format', 'json', '--log-level', 'warn');
  if (o.headless) args.push('--headless');
  else if (o.uiPort !== undefined) args.push('--ui-port', String(o.uiPort), '--ui-disable-news-fetch');
  if (o.namespace !== 'default') args.push('--namespace', o.namespace);
  for (const [name, type] of Object.entries(o.searchAttributes)) {
    if (!IDENT.test(name)) throw new Error(`devserver: invalid search attribute name ${JSON.stringify(name)}`);
    args.push('--search-attribute', `${name}=${type}`);
  }
  for (const [key, value] of Object.entries(o.dynamicConfig)) {
    if (!/^[A-Za-z0-9_.]+$/.test(key)) throw new Error(`devserver: invalid dynamic config key ${JSON.stringify(key)}`);
    args.push('--dynamic-config-value', `${key}=${JSON.stringify(value)}`);
  }
  return args;
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
  hasExited: () => boolean;
}

function spawnServer(binary: string, args: string[], logFile: string): Running {
  const fd = openSync(logFile, 'a', 0o600);
  let done = false;
  let child: ChildProcess;
  try {
    child = spawn(binary, args, { stdio: ['ignore', fd, fd], env: { ...process.env, NO_COLOR: '1' } });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      done = true;
      resolve();
    });
    child.once('error', () => {
      done = true;
      resolve();
    });
  });
  return { child, exited, hasExited: () => done };
}

async function halt(r: Running): Promise<void> {
  if (r.hasExited()) return;
  r.child.kill('SIGTERM');
  const timer = setTimeout(() => r.child.kill('SIGKILL'), STOP_GRACE_MS);
  await r.exited;
  clearTimeout(timer);
}

async function waitReady(
  r: Running,
  address: string,
  namespace: string,
  searchAttributes: string[],
  logFile: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (r.hasExited()) {
      throw new Error(
        `temporal dev server exited during start (code ${r.child.exitCode}, signal ${r.child.signalCode}); log tail:\n${tail(logFile)}`,
      );
    }
    let conn: Connection | undefined;
    try {
      conn = await Connection.connect({
        address,
        connectTimeout: Math.max(500, Math.min(2_000, deadline - Date.now())),
      });
      await conn.workflowService.describeNamespace({ namespace });
      if (searchAttributes.length) {
        const { customAttributes } = await conn.operatorService.listSearchAttributes({ namespace });
        const missing = searchAttributes.filter((n) => !(customAttributes && n in customAttributes));
        if (missing.length) throw new Error(`search attributes not registered yet: ${missing.join(', ')}`);
      }
      return;
    } catch (err) {
      last = err;
    } finally {
      await conn?.close().catch(() => undefined);
    }
    await sleep(200);
  }
  throw new Error(
    `temporal dev server at ${address} not ready after ${timeoutMs} ms: ${String((last as Error)?.message ?? last)}; log tail:\n${tail(logFile)}`,
  );
}

export async function startDevServer(opts: DevServerOptions = {}): Promise<DevServer> {
  const binary = requireRealPart('Temporal CLI', opts.binary ?? temporalCli);
  let ownedDir: string | undefined;
  let dbFile = opts.dbFile;
  if (!dbFile) {
    ownedDir = mkdtempSync(path.join(os.tmpdir(), 'temporal-dev-'));
    dbFile = path.join(ownedDir, 'temporal.db');
  }
  dbFile = path.resolve(dbFile);
  const logFile = path.resolve(opts.logFile ?? path.join(path.dirname(dbFile), 'temporal-dev.log'));
  const headless = opts.headless ?? false;
  const namespace = opts.namespace ?? 'default';
  const searchAttributes = opts.searchAttributes ?? {};
  const port = opts.port ?? (await freePort());
  const uiPort = headless ? undefined : (opts.uiPort ?? (await freePort()));
  const args = devServerArgs({
    dbFile,
    port,
    uiPort,
    headless,
    namespace,
    searchAttributes,
    dynamicConfig: { ...devServerTuning, ...opts.dynamicConfig },
  });
  const address = `${HOST}:${port}`;
  const timeoutMs = opts.startTimeoutMs ?? 60_000;

  const launch = async (): Promise<Running> => {
    const r = spawnServer(binary, args, logFile);
    try {
      await waitReady(r, address, namespace, Object.keys(searchAttributes), logFile, timeoutMs);
    } catch (err) {
      await halt(r);
      throw err;
    }
    return r;
  };

  let current: Running | undefined;
  let stopped = false;
  try {
    current = await launch();
  } catch (err) {
    if (ownedDir) rmSync(ownedDir, { recursive: true, force: true });
    throw err;
  }

  return {
    address,
    uiAddress: uiPort === undefined ? undefined : `http://${HOST}:${uiPort}`,
    namespace,
    dbFile,
    logFile,
    get pid() {
      return current?.child.pid ?? -1;
    },
    async stop() {
      stopped = true;
      if (current) await halt(current);
      current = undefined;
      if (ownedDir) rmSync(ownedDir, { recursive: true, force: true });
      ownedDir = undefined;
    },
    detach() {
      current?.child.unref();
    },
    async restart() {
      if (stopped) throw new Error('devserver: restart() after stop()');
      if (current) await halt(current);
      current = undefined;
      current = await launch();
    },
  };
}
