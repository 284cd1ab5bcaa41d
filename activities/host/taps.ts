// Re-creating a tap: a new interface on the VM's bridge for a destination that cannot be handed the old
// one (excluded by policy, a multiqueue tap, a worker without the right to take fds). Named from the VM,
// the netdev and the destination's generation, so a retry, the rollback and finalize all find it.
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { IP_BINARY } from './process-launcher';

const run = promisify(execFile);

/** At most 15 characters, as Linux allows: `fu` + 8 hex digits of the VM and netdev + `g` + generation. */
export function recreatedTapName(vmId: string, netdevId: string, generation: number): string {
  const h = createHash('sha256').update(`${vmId}/${netdevId}`).digest('hex').slice(0, 8);
  return `fu${h}g${generation.toString(36)}`.slice(0, 15);
}

async function ip(netns: string | undefined, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(IP_BINARY, [...(netns ? ['-n', netns] : []), ...args], { timeout: 10_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`);
  }
}

export async function tapExists(netns: string | undefined, name: string): Promise<boolean> {
  return ip(netns, ['link', 'show', 'dev', name]).then(
    () => true,
    () => false,
  );
}

/** A new tap on `bridge`, up; an interface of that name left by an earlier attempt is replaced. */
export async function createTap(
  netns: string | undefined,
  name: string,
  bridge: string,
  o: { multiQueue: boolean },
): Promise<void> {
  if (await tapExists(netns, name)) await deleteTap(netns, name);
  await ip(netns, ['tuntap', 'add', 'dev', name, 'mode', 'tap', ...(o.multiQueue ? ['multi_queue'] : [])]);
  try {
    await ip(netns, ['link', 'set', 'dev', name, 'master', bridge, 'up']);
  } catch (err) {
    await deleteTap(netns, name).catch(() => undefined);
    throw err;
  }
}

/** Deletes a tap; one already gone is fine. */
export async function deleteTap(netns: string | undefined, name: string): Promise<void> {
  if (!(await tapExists(netns, name))) return;
  await ip(netns, ['tuntap', 'del', 'dev', name, 'mode', 'tap']).catch(async () => {
    // A multiqueue tap is deleted with its flag.
    await ip(netns, ['tuntap', 'del', 'dev', name, 'mode', 'tap', 'multi_queue']);
  });
}
