// A network of its own for a (demo or test) host: a network namespace with a bridge (10.77.0.1/24 by
// default) and taps on it, so real VMs get real tap NICs without touching the machine's own network; and a
// pinger inside it that records the largest gap between replies. Needs root (namespaces and taps).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';

const IP = '/usr/sbin/ip';

export interface HostNetwork {
  ns: string;
  bridge: string;
  /** Adds a tap on the bridge, up, optionally multiqueue. */
  addTap(name: string, o?: { multiQueue?: boolean }): void;
  /** Whether the interface exists in the namespace. */
  hasLink(name: string): boolean;
  /** Runs a command inside the namespace. */
  exec(cmd: string, args: string[]): string;
  /** Deletes the namespace (and with it its bridge and taps); idempotent. */
  remove(): void;
}

/** Why this process cannot build host networks (namespaces and taps), or undefined when it can. */
export function whyNoHostNetwork(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root';
  if (!existsSync(IP)) return `${IP} (iproute2) is missing`;
  return undefined;
}

export function createHostNetwork(ns: string, hostAddress = '10.77.0.1/24'): HostNetwork {
  const why = whyNoHostNetwork();
  if (why) throw new Error(`real VM networking needs root, network namespaces and taps: ${why}`);
  const ip = (...args: string[]) => execFileSync(IP, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  deleteNetns(ns);
  ip('netns', 'add', ns);
  try {
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', ns, 'addr', 'add', hostAddress, 'dev', 'br0');
    ip('-n', ns, 'link', 'set', 'br0', 'up');
  } catch (err) {
    deleteNetns(ns);
    throw err;
  }
  return {
    ns,
    bridge: 'br0',
    addTap(name, o = {}) {
      ip('-n', ns, 'tuntap', 'add', 'dev', name, 'mode', 'tap', ...(o.multiQueue ? ['multi_queue'] : []));
      ip('-n', ns, 'link', 'set', name, 'master', 'br0', 'up');
    },
    hasLink(name) {
      try {
        ip('-n', ns, 'link', 'show', name);
        return true;
      } catch {
        return false;
      }
    },
    exec(cmd, args) {
      return execFileSync(IP, ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
    },
    remove() {
      deleteNetns(ns);
    },
  };
}

/** Deletes a network namespace if it exists. */
export function deleteNetns(ns: string): void {
  try {
    execFileSync(IP, ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {
    /* none */
  }
}

/**
 * A ping every `intervalMs` from inside the namespace; `stop()` returns the largest gap between replies,
 * counting the silence from the last reply (or the start) to the stop.
 */
export interface Pinger {
  stop(): Promise<{ replies: number; largestGapMs: number; largestGapEndedAt: number; lastReplyAt: number }>;
  replies(): number;
  /** The largest gap between replies so far, ms. */
  largestGapMs(): number;
}

export function startPinger(ns: string, address: string, intervalMs = 10): Pinger {
  const child: ChildProcess = spawn(
    IP,
    ['netns', 'exec', ns, 'ping', '-D', '-n', '-i', String(intervalMs / 1000), address],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const startedAt = Date.now();
  const times: number[] = [];
  let gap = 0;
  let gapEnd = 0;
  let buf = '';
  child.stdout?.on('data', (b: Buffer) => {
    buf += b.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const line of lines) {
      // [1733123456.123456] 64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.3 ms
      const m = /^\[(\d+\.\d+)\] \d+ bytes from/.exec(line);
      if (!m) continue;
      const t = Number(m[1]) * 1000;
      const prev = times.at(-1);
      if (prev !== undefined && t - prev > gap) {
        gap = t - prev;
        gapEnd = t;
      }
      times.push(t);
    }
  });
  const exited = new Promise<void>((r) => {
    if (child.exitCode !== null || child.signalCode !== null) r();
    else child.once('exit', () => r());
  });
  return {
    replies: () => times.length,
    largestGapMs: () => Math.round(gap * 10) / 10,
    async stop() {
      // A guest that stopped answering counts too: the silence since the last reply (or since the start).
      const now = Date.now();
      const last = times.at(-1) ?? startedAt;
      if (now - last > gap) {
        gap = now - last;
        gapEnd = now;
      }
      child.kill('SIGINT');
      await exited;
      return {
        replies: times.length,
        largestGapMs: Math.round(gap * 10) / 10,
        largestGapEndedAt: gapEnd,
        lastReplyAt: times.at(-1) ?? 0,
      };
    },
  };
}
