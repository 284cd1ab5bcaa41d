// A network of its own for a test host: a network namespace with a bridge (10.77.0.1/24) and taps on it,
// so real VMs get real tap NICs without touching the machine's own network. Needs root; a test that needs
// it fails loudly without it.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

const IP = '/usr/sbin/ip';

export interface TestNetwork {
  ns: string;
  bridge: string;
  /** Adds a tap on the bridge, up, optionally multiqueue. */
  addTap(name: string, o?: { multiQueue?: boolean }): void;
  /** Whether the interface exists in the namespace. */
  hasLink(name: string): boolean;
  /** Runs a command inside the namespace. */
  exec(cmd: string, args: string[]): string;
  remove(): void;
}

export function createTestNetwork(ns: string, hostAddress = '10.77.0.1/24'): TestNetwork {
  if (process.getuid?.() !== 0) throw new Error('real VM networking needs root (network namespaces and taps)');
  const ip = (...args: string[]) => execFileSync(IP, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  try {
    ip('netns', 'del', ns);
  } catch {
    /* none left from an earlier run */
  }
  ip('netns', 'add', ns);
  ip('-n', ns, 'link', 'set', 'lo', 'up');
  ip('-n', ns, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', ns, 'addr', 'add', hostAddress, 'dev', 'br0');
  ip('-n', ns, 'link', 'set', 'br0', 'up');
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
      try {
        ip('netns', 'del', ns);
      } catch {
        /* already gone */
      }
    },
  };
}

/** A ping every `intervalMs` from inside the namespace; `stop()` returns the largest gap between replies. */
export interface Pinger {
  stop(): Promise<{ replies: number; largestGapMs: number; lastReplyAt: number }>;
  replies(): number;
}

export function startPinger(ns: string, address: string, intervalMs = 10): Pinger {
  const child: ChildProcess = spawn(
    IP,
    ['netns', 'exec', ns, 'ping', '-D', '-n', '-i', String(intervalMs / 1000), address],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const times: number[] = [];
  let buf = '';
  child.stdout?.on('data', (b: Buffer) => {
    buf += b.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const line of lines) {
      // [1733123456.123456] 64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.3 ms
      const m = /^\[(\d+\.\d+)\] \d+ bytes from/.exec(line);
      if (m) times.push(Number(m[1]) * 1000);
    }
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    replies: () => times.length,
    async stop() {
      child.kill('SIGINT');
      await exited;
      let largestGapMs = 0;
      for (let i = 1; i < times.length; i++) largestGapMs = Math.max(largestGapMs, times[i]! - times[i - 1]!);
      return {
        replies: times.length,
        largestGapMs: Math.round(largestGapMs * 10) / 10,
        lastReplyAt: times.at(-1) ?? 0,
      };
    },
  };
}
