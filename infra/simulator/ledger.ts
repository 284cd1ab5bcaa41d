// The simulator's records, for tests to assert invariants from the simulator's own point of view.
//
// With --sim-state-dir DIR:
//   DIR/backends/<key>.json    the one current owner of each host backend (tap:<ifname>, vhost-user:<path>),
//                              written atomically (tmp + rename; exclusive create with link()).
//   DIR/events/<instance>.jsonl append-only log per simulated QEMU: start, status changes, migration,
//                              backend claims/transfers/releases, quit, crash; wall-clock timestamps.
// Without a state dir, ownership is still enforced, in memory, among the VMs of this Node process.
//
// Ownership models the kernel: a TAP (or a vhost-user connection) can be opened by one process; a second
// open fails with EBUSY while the owner lives; when the owner dies the kernel frees it (a dead owner does
// not count); passing the fd in the migration stream moves ownership to the destination. A process given a
// duplicate of the owner's fd (a host worker's handover: `-netdev tap,fd=N`) holds the tap too, without
// EBUSY; when the owner closes it or dies, the tap stays open and its holder is the single owner.
import {
  appendFileSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import type { BackendKind } from './dialects';

export interface Owner {
  pid: number;
  /** Unique per simulated QEMU: `<pid>` for a process, `<pid>-<n>` for one of many in a Node process. */
  instance: string;
  vm?: string;
}

export interface BackendRecord {
  key: string;
  kind: BackendKind;
  /** The tap ifname or the vhost-user socket path. */
  name: string;
  owner: Owner;
  since: string;
  /** open: opened by name; transfer: from a migration stream; fd: a duplicate of another process's fd. */
  via: 'open' | 'transfer' | 'fd';
  /** Other processes holding a duplicate of the owner's fd. */
  holders?: Owner[];
}

export interface LedgerEvent {
  /** Milliseconds since the epoch, sub-millisecond precision. */
  t: number;
  ts: string;
  pid: number;
  instance: string;
  vm?: string;
  event: string;
  [k: string]: unknown;
}

export function backendKey(kind: BackendKind, name: string): string {
  return `${kind}:${name}`;
}

/** Instances of this Node process that are live; ownership by a stopped or crashed one does not count. */
const liveInstances = new Set<string>();
const memoryBackends = new Map<string, BackendRecord>();

export function markInstanceLive(instance: string, live: boolean): void {
  if (live) liveInstances.add(instance);
  else liveInstances.delete(instance);
}

/** Whether an owner still holds its backends (process alive and not a zombie; instance live). */
export function ownerAlive(o: Owner): boolean {
  if (o.pid === process.pid) return liveInstances.has(o.instance);
  try {
    process.kill(o.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${o.pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}

function now(): { t: number; ts: string } {
  const t = performance.timeOrigin + performance.now();
  return { t, ts: new Date(t).toISOString() };
}

const sameOwner = (a: Owner, b: Owner): boolean => a.pid === b.pid && a.instance === b.instance;

/** The live processes that hold a backend: its owner first, then the holders of duplicates. */
function liveHolders(rec: BackendRecord): Owner[] {
  return [rec.owner, ...(rec.holders ?? [])].filter((o) => ownerAlive(o));
}

/** The record as the kernel sees it now: a dead owner's place taken by the first live holder of a duplicate. */
function effective(rec: BackendRecord): BackendRecord & { alive: boolean } {
  const live = liveHolders(rec);
  if (live.length === 0) return { ...rec, alive: false };
  if (sameOwner(live[0]!, rec.owner))
    return { ...rec, ...(live.length > 1 ? { holders: live.slice(1) } : {}), alive: true };
  const [owner, ...rest] = live as [Owner, ...Owner[]];
  const { holders: _gone, ...base } = rec;
  return { ...base, owner, via: 'fd', ...(rest.length ? { holders: rest } : {}), alive: true };
}

export type ClaimResult = { ok: true } | { ok: false; owner: Owner };

export class Ledger {
  private readonly backendsDir?: string;
  private readonly eventsFile?: string;
  private tmpSeq = 0;

  constructor(
    readonly dir: string | undefined,
    readonly owner: Owner,
  ) {
    if (dir) {
      this.backendsDir = path.join(dir, 'backends');
      mkdirSync(this.backendsDir, { recursive: true });
      mkdirSync(path.join(dir, 'events'), { recursive: true });
      this.eventsFile = path.join(dir, 'events', `${owner.instance}.jsonl`);
    }
  }

  /** Append one event to this instance's log. */
  log(event: string, data: Record<string, unknown> = {}): void {
    if (!this.eventsFile) return;
    const rec: LedgerEvent = {
      ...now(),
      pid: this.owner.pid,
      instance: this.owner.instance,
      vm: this.owner.vm,
      event,
      ...data,
    };
    appendFileSync(this.eventsFile, JSON.stringify(rec) + '\n');
  }

  current(key: string): BackendRecord | undefined {
    if (!this.backendsDir) return memoryBackends.get(key);
    try {
      return JSON.parse(readFileSync(this.file(key), 'utf8')) as BackendRecord;
    } catch {
      return undefined;
    }
  }

  /** Open a backend: exclusive unless the current owner is dead (or is us); a duplicate's holder counts too. */
  claim(kind: BackendKind, name: string): ClaimResult {
    const key = backendKey(kind, name);
    const rec: BackendRecord = { key, kind, name, owner: this.owner, since: now().ts, via: 'open' };
    const busy = (cur: BackendRecord | undefined): Owner | undefined =>
      cur ? liveHolders(cur).find((o) => !sameOwner(o, this.owner)) : undefined;
    if (!this.backendsDir) {
      const cur = memoryBackends.get(key);
      const other = busy(cur);
      if (other) return { ok: false, owner: other };
      memoryBackends.set(key, rec);
      this.log('backend-claim', { backend: key });
      return { ok: true };
    }
    const tmp = this.writeTmp(rec);
    try {
      linkSync(tmp, this.file(key));
      unlinkSync(tmp);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const other = busy(this.current(key));
      if (other) {
        unlinkSync(tmp);
        return { ok: false, owner: other };
      }
      renameSync(tmp, this.file(key));
    }
    this.log('backend-claim', { backend: key });
    return { ok: true };
  }

  /** The destination took the backend's fd from the stream: it is the owner now. */
  transferIn(kind: BackendKind, name: string, from: Owner): void {
    const key = backendKey(kind, name);
    const rec: BackendRecord = { key, kind, name, owner: this.owner, since: now().ts, via: 'transfer' };
    if (this.backendsDir) renameSync(this.writeTmp(rec), this.file(key));
    else memoryBackends.set(key, rec);
    this.log('backend-transfer-in', { backend: key, from: from.instance, fromPid: from.pid });
  }

  /**
   * Open a backend through a duplicate of another process's fd (`-netdev tap,fd=N`): never EBUSY. Beside a
   * live owner this process is one more holder; with none it is the owner.
   */
  hold(kind: BackendKind, name: string, from?: Owner): void {
    const key = backendKey(kind, name);
    const cur = this.current(key);
    const live = cur ? effective(cur) : undefined;
    let rec: BackendRecord;
    if (!live?.alive || sameOwner(live.owner, this.owner)) {
      rec = { key, kind, name, owner: this.owner, since: now().ts, via: 'fd' };
    } else {
      const { alive: _alive, ...base } = live;
      const holders = (base.holders ?? []).filter((o) => !sameOwner(o, this.owner));
      rec = { ...base, holders: [...holders, this.owner] };
    }
    this.write(rec);
    this.log('backend-hold', {
      backend: key,
      owner: rec.owner.instance,
      ...(from ? { from: from.instance, fromPid: from.pid } : {}),
    });
  }

  /** Close a backend. The owner's close passes it to a live holder of a duplicate, if any; a holder's only drops it. */
  release(kind: BackendKind, name: string): void {
    const key = backendKey(kind, name);
    const cur = this.current(key);
    if (!cur) return;
    const holders = (cur.holders ?? []).filter((o) => !sameOwner(o, this.owner));
    if (!sameOwner(cur.owner, this.owner)) {
      if (holders.length === (cur.holders ?? []).length) return; // not ours
      const { holders: _h, ...base } = cur;
      this.write({ ...base, ...(holders.length ? { holders } : {}) });
      this.log('backend-release', { backend: key, held: true });
      return;
    }
    const [next, ...rest] = holders.filter((o) => ownerAlive(o));
    if (next) {
      // The kernel keeps the tap open for the fd another process holds: that process is its owner now.
      const { holders: _h, ...base } = cur;
      this.write({ ...base, owner: next, since: now().ts, via: 'fd', ...(rest.length ? { holders: rest } : {}) });
      this.log('backend-release', { backend: key, to: next.instance, toPid: next.pid });
      return;
    }
    if (this.backendsDir) {
      try {
        unlinkSync(this.file(key));
      } catch {
        // already gone
      }
    } else memoryBackends.delete(key);
    this.log('backend-release', { backend: key });
  }

  private write(rec: BackendRecord): void {
    if (this.backendsDir) renameSync(this.writeTmp(rec), this.file(rec.key));
    else memoryBackends.set(rec.key, rec);
  }

  private file(key: string): string {
    return path.join(this.backendsDir as string, `${encodeURIComponent(key)}.json`);
  }

  private writeTmp(rec: BackendRecord): string {
    const tmp = path.join(this.backendsDir as string, `.tmp-${this.owner.instance}-${this.tmpSeq++}`);
    writeFileSync(tmp, JSON.stringify(rec) + '\n');
    return tmp;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Readers for tests

export interface LedgerSnapshot {
  /** Current owner per backend key (a dead owner replaced by a live holder of a duplicate), alive or not. */
  backends: Record<string, BackendRecord & { alive: boolean }>;
  /** All instances' events, in time order. */
  events: LedgerEvent[];
}

export function readLedger(dir: string): LedgerSnapshot {
  const backends: LedgerSnapshot['backends'] = {};
  const bdir = path.join(dir, 'backends');
  for (const f of safeReaddir(bdir)) {
    if (!f.endsWith('.json')) continue;
    try {
      const rec = JSON.parse(readFileSync(path.join(bdir, f), 'utf8')) as BackendRecord;
      backends[rec.key] = effective(rec);
    } catch {
      // being replaced right now
    }
  }
  return { backends, events: readLedgerEvents(dir) };
}

export function readLedgerEvents(dir: string): LedgerEvent[] {
  const edir = path.join(dir, 'events');
  const events: LedgerEvent[] = [];
  for (const f of safeReaddir(edir)) {
    if (!f.endsWith('.jsonl')) continue;
    for (const line of readFileSync(path.join(edir, f), 'utf8').split('\n')) {
      if (line.trim()) events.push(JSON.parse(line) as LedgerEvent);
    }
  }
  return events.sort((a, b) => a.t - b.t);
}

/** The live owner of a backend (`tap:<ifname>`), or undefined if nobody holds it. */
export function backendOwner(dir: string, key: string): Owner | undefined {
  const rec = readLedger(dir).backends[key];
  return rec?.alive ? rec.owner : undefined;
}

/**
 * Intervals during which each instance's guest was running, from the event logs ('running' opens one;
 * 'paused', 'quit', 'crash', 'exit' close it). Lets tests check "a VM runs in exactly one process".
 */
export function runningIntervals(
  events: LedgerEvent[],
): Array<{ instance: string; vm?: string; from: number; to: number }> {
  const open = new Map<string, LedgerEvent>();
  const out: Array<{ instance: string; vm?: string; from: number; to: number }> = [];
  for (const e of events) {
    if (e.event === 'status' && e.status === 'running') {
      if (!open.has(e.instance)) open.set(e.instance, e);
    } else if ((e.event === 'status' && e.status !== 'running') || ['quit', 'crash', 'exit'].includes(e.event)) {
      const o = open.get(e.instance);
      if (o) {
        out.push({ instance: e.instance, vm: o.vm, from: o.t, to: e.t });
        open.delete(e.instance);
      }
    }
  }
  for (const [instance, o] of open) out.push({ instance, vm: o.vm, from: o.t, to: Infinity });
  return out;
}

function safeReaddir(d: string): string[] {
  try {
    return readdirSync(d);
  } catch {
    return [];
  }
}
