// `fleet-upgrade hosts`: the live host workers and the QEMU version labels they allow. Liveness comes from
// Temporal: every host worker also polls the shared queue `fleet-upgrade.hosts` with its identity
// `host-worker/<hostId>/<pid>`, and each host's own queue `qemu-host.<hostId>` lists its pollers. The labels
// come from the workers themselves (workflow `fleetHosts`, run by the orchestrator worker, asks each one
// with a short deadline), so a worker that polls but does not answer shows as such.
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { hostOfIdentity, hostsQueue } from '../presence';
import { activityPollers, LIVE_POLLER_MS } from '../../activities/fleet/task-queues';
import type { PreflightResult } from '../../workflows/rollout';
import { orchestratorTaskQueue } from './common';
import { hostTaskQueue } from '../../workflows/names';

export interface HostRow {
  hostId: string;
  /** Worker identities polling `qemu-host.<hostId>`, with how long ago Temporal last saw each poll. */
  pollers: Array<{ identity: string; ageMs: number | null }>;
  live: boolean;
  labels?: string[];
  /** Why the worker is not usable (not polling, not answering). */
  problem?: string;
}

export async function listHosts(
  client: Client,
  namespace: string,
  opts: { hosts?: string[]; timeoutSec: number },
): Promise<HostRow[]> {
  const service = client.connection.workflowService;
  const presence = (await activityPollers(service, namespace, [hostsQueue]))[hostsQueue] ?? [];
  const ids = new Set(opts.hosts ?? []);
  for (const p of presence) {
    const h = hostOfIdentity(p.identity);
    if (h && (p.ageMs === null || p.ageMs < LIVE_POLLER_MS)) ids.add(h);
  }
  const hostIds = [...ids].sort();
  if (hostIds.length === 0) return [];
  const queues = await activityPollers(
    service,
    namespace,
    hostIds.map((h) => hostTaskQueue(h)),
  );
  const rows: HostRow[] = hostIds.map((hostId) => {
    const pollers = queues[hostTaskQueue(hostId)] ?? [];
    const live = pollers.some((p) => p.ageMs === null || p.ageMs < LIVE_POLLER_MS);
    return { hostId, pollers, live, ...(live ? {} : { problem: `no worker is polling ${hostTaskQueue(hostId)}` }) };
  });
  // Ask the live ones for their labels, through the orchestrator worker, within a deadline.
  const ask = rows.filter((r) => r.live).map((r) => r.hostId);
  if (ask.length === 0) return rows;
  const handle = await client.workflow.start('fleetHosts', {
    taskQueue: orchestratorTaskQueue,
    workflowId: `fleet-hosts/${randomUUID()}`,
    args: [{ hostIds: ask, timeoutSec: opts.timeoutSec }],
    workflowExecutionTimeout: `${opts.timeoutSec + 30}s`,
  });
  let timer: NodeJS.Timeout | undefined;
  const answers = await Promise.race([
    handle.result() as Promise<PreflightResult[]>,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), (opts.timeoutSec + 10) * 1000);
    }),
  ]).finally(() => clearTimeout(timer));
  for (const r of rows) {
    if (!r.live) continue;
    const a = answers?.find((x) => x.hostId === r.hostId);
    if (!answers) r.problem = 'labels unknown: no orchestrator worker ran the fleetHosts workflow in time';
    else if (a?.labels) r.labels = a.labels;
    if (a && !a.ok) r.problem = a.reason;
  }
  if (!answers) await handle.terminate('fleet-upgrade hosts gave up waiting').catch(() => undefined);
  return rows;
}

export function describeHosts(rows: HostRow[]): string {
  if (rows.length === 0) return 'no host workers are polling (none seen on queue fleet-upgrade.hosts)';
  return rows
    .map((r) => {
      const who = r.pollers.map(
        (p) => `${p.identity}${p.ageMs !== null ? ` (${Math.round(p.ageMs / 1000)}s ago)` : ''}`,
      );
      const labels = r.labels ? `allows ${r.labels.join(', ')}` : '';
      return `${r.hostId.padEnd(16)} ${r.live ? 'live' : 'DOWN'}  ${labels}${r.problem ? `${labels ? '; ' : ''}${r.problem}` : ''}${who.length ? `  [${who.join(', ')}]` : ''}`;
    })
    .join('\n');
}
