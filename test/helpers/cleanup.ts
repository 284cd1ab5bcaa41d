// QEMU processes are started detached (they outlive the worker that launched them), so a test must stop
// the ones it caused: every QEMU — or QEMU simulator process (`node …/qemu-sim.js`, whose argv[0] is node) —
// whose command line names a path under its folder.
import { readdirSync, readFileSync } from 'node:fs';

/** Every process but this one whose command line (argv) satisfies `match`. */
function pidsWhere(match: (argv: string[]) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (match(readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0'))) pids.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return pids;
}

const namesPathUnder = (argv: string[], dir: string) => argv.some((a) => a.includes(dir));

export function qemuPidsUnder(dir: string): number[] {
  return pidsWhere(
    (argv) => (argv[0]?.includes('qemu') || argv.some((a) => a.endsWith('qemu-sim.js'))) && namesPathUnder(argv, dir),
  );
}

export function killQemusUnder(dir: string): void {
  killAll(qemuPidsUnder(dir));
}

/**
 * Every process but this one whose command line names a path under `dir`, whatever its program: for stand-ins
 * of QEMU (scripts named after what they fake) that the launcher started detached.
 */
export function killProcessesNaming(dir: string): void {
  killAll(pidsWhere((argv) => namesPathUnder(argv, dir)));
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
