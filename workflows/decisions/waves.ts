// Waves of a rollout and which hosts may start next. Pure.
//
// Waves run in order; the first is the canary. A wave's size is a count of hosts, a percent of all hosts
// (rounded up, at least one), an explicit list of host ids, or `rest` (every host not yet in a wave). Count
// and percent waves take hosts in plan order from those no explicit wave names. Every host must end up in
// exactly one wave, and no wave may be empty (but an empty `rest` wave is dropped).

export type WaveSize = { count: number } | { percent: number } | { rest: true } | { hosts: string[] };

export interface WaveSpec {
  name?: string;
  size: WaveSize;
}

export interface Wave {
  name: string;
  hosts: string[];
}

export class WaveError extends Error {
  override name = 'WaveError';
  constructor(
    /** Index of the wave at fault, or undefined for the waves as a whole. */
    readonly index: number | undefined,
    message: string,
  ) {
    super(message);
  }
}

export function defaultWaveName(index: number): string {
  return index === 0 ? 'canary' : `wave-${index + 1}`;
}

/** Assigns every host to a wave; throws WaveError naming the wave at fault. */
export function resolveWaves(hosts: string[], specs: WaveSpec[]): Wave[] {
  if (specs.length === 0) throw new WaveError(undefined, 'at least one wave is required');
  const known = new Set(hosts);
  const named = new Map<string, number>();
  specs.forEach((spec, i) => {
    if (!('hosts' in spec.size)) return;
    for (const h of spec.size.hosts) {
      if (!known.has(h)) throw new WaveError(i, `host ${JSON.stringify(h)} is not in hosts`);
      const prior = named.get(h);
      if (prior !== undefined) throw new WaveError(i, `host ${JSON.stringify(h)} is already in waves[${prior}]`);
      named.set(h, i);
    }
  });
  const pool = hosts.filter((h) => !named.has(h));
  const restAt = specs.findIndex((s) => 'rest' in s.size);
  if (restAt >= 0 && specs.some((s, i) => i !== restAt && 'rest' in s.size)) {
    throw new WaveError(undefined, 'only one wave may be `rest`');
  }
  const waves: Wave[] = specs.map((s, i) => ({ name: s.name ?? defaultWaveName(i), hosts: [] }));
  let taken = 0;
  specs.forEach((spec, i) => {
    const size = spec.size;
    if ('hosts' in size) waves[i]!.hosts = [...size.hosts];
    else if ('count' in size || 'percent' in size) {
      const want = 'count' in size ? size.count : Math.max(1, Math.ceil((size.percent / 100) * hosts.length));
      waves[i]!.hosts = pool.slice(taken, taken + want);
      taken += waves[i]!.hosts.length;
    }
  });
  if (restAt >= 0) {
    waves[restAt]!.hosts = pool.slice(taken);
    taken = pool.length;
  }
  if (taken < pool.length) {
    throw new WaveError(
      undefined,
      `waves cover ${hosts.length - (pool.length - taken)} of ${hosts.length} hosts; size the last wave \`rest\` to take the others`,
    );
  }
  // A `rest` wave with nothing left is dropped (a one-host fleet under the default canary-then-rest).
  if (restAt >= 0 && waves[restAt]!.hosts.length === 0) waves.splice(restAt, 1);
  const empty = waves.findIndex((w) => w.hosts.length === 0);
  if (empty >= 0) throw new WaveError(empty, 'no hosts left for this wave');
  const names = new Set<string>();
  waves.forEach((w, i) => {
    if (names.has(w.name)) throw new WaveError(i, `duplicate wave name ${JSON.stringify(w.name)}`);
    names.add(w.name);
  });
  return waves;
}

// ---------------------------------------------------------------------------------------------------------
// Which hosts start next

export type HostRunState = 'pending' | 'running' | 'done' | 'failed' | 'skipped';

export interface HostSlot {
  hostId: string;
  wave: number;
  state: HostRunState;
}

export type Approvals = 'none' | 'after-canary' | 'between-waves';

/** Whether starting wave `wave` (0-based) needs an operator's approval first. */
export function needsApproval(approvals: Approvals, wave: number): boolean {
  if (wave <= 0) return false;
  if (approvals === 'between-waves') return true;
  return approvals === 'after-canary' && wave === 1;
}

/** True when no host of waves 0..wave is pending or running. */
export function waveFinished(hosts: HostSlot[], wave: number): boolean {
  return hosts.every((h) => h.wave > wave || (h.state !== 'pending' && h.state !== 'running'));
}

/**
 * Hosts to start now: pending hosts of the current wave or earlier (earlier ones are retries), in wave and
 * plan order, up to the host concurrency minus those running.
 */
export function hostsToStart(hosts: HostSlot[], currentWave: number, maxHosts: number): string[] {
  const running = hosts.filter((h) => h.state === 'running').length;
  const room = Math.max(0, maxHosts - running);
  if (room === 0) return [];
  return hosts
    .map((h, i) => ({ h, i }))
    .filter(({ h }) => h.state === 'pending' && h.wave <= currentWave)
    .sort((a, b) => a.h.wave - b.h.wave || a.i - b.i)
    .slice(0, room)
    .map(({ h }) => h.hostId);
}
