// Workflow `fleetHosts`, and the preflight `rollout` runs first: per host, whether a worker polls its task
// queue (per Temporal) and what it answers within a short deadline — its host id and the version labels it
// allows. Deterministic: no I/O here.
import { ActivityFailure, proxyActivities, TimeoutFailure } from '@temporalio/workflow';
import type { HostActivities } from '../activities/upgrade/api';
import type { FleetActivities } from '../activities/fleet/task-queues';
import type { PreflightResult } from './decisions/rollout-state';
import { reasonOf } from './failures';
import { hostTaskQueue, LIVE_POLLER_MS } from './names';

export type { PreflightResult } from './decisions/rollout-state';

type Pollers = Awaited<ReturnType<FleetActivities['taskQueuePollers']>>;

/**
 * Workflow `fleetHosts`: what `fleet-upgrade hosts` shows — per host, the workers Temporal sees polling its
 * queue and the version labels the worker allows (asked with a short deadline).
 */
export async function fleetHosts(input: { hostIds: string[]; timeoutSec: number }): Promise<PreflightResult[]> {
  const fleet = proxyActivities<FleetActivities>({ startToCloseTimeout: '30s', retry: { maximumAttempts: 3 } });
  return preflight(input.hostIds, undefined, input.timeoutSec, fleet);
}

/** Each host: a live poller on its queue (per Temporal), then its worker's answer within `timeoutSec`. */
export async function preflight(
  hostIds: string[],
  target: string | undefined,
  timeoutSec: number,
  fleet: FleetActivities,
): Promise<PreflightResult[]> {
  const queues = hostIds.map(hostTaskQueue);
  const pollers = await fleet.taskQueuePollers({ queues });
  return Promise.all(hostIds.map((hostId) => preflightHost(hostId, target, timeoutSec, pollers)));
}

async function preflightHost(
  hostId: string,
  target: string | undefined,
  timeoutSec: number,
  pollers: Pollers,
): Promise<PreflightResult> {
  const queue = hostTaskQueue(hostId);
  const live = (pollers[queue] ?? []).filter((p) => p.ageMs === null || p.ageMs < LIVE_POLLER_MS);
  const identities = [...new Set(live.map((p) => p.identity))];
  if (live.length === 0) {
    return { hostId, ok: false, reason: `no worker is polling task queue ${queue}`, pollers: [] };
  }
  const host = proxyActivities<HostActivities>({
    taskQueue: queue,
    scheduleToCloseTimeout: timeoutSec * 1000,
    retry: { maximumAttempts: 1 },
  });
  try {
    const d = await host.describeHost({});
    if (d.hostId !== hostId) {
      return { hostId, ok: false, reason: `the worker on ${queue} says it is host ${d.hostId}`, pollers: identities };
    }
    if (target !== undefined && !d.labels.includes(target)) {
      return {
        hostId,
        ok: false,
        reason: `target label "${target}" is not allowed on ${hostId} (allowed: ${d.labels.join(', ')})`,
        pollers: identities,
        labels: d.labels,
      };
    }
    return { hostId, ok: true, pollers: identities, labels: d.labels };
  } catch (err) {
    const timedOut = err instanceof ActivityFailure && err.cause instanceof TimeoutFailure;
    return {
      hostId,
      ok: false,
      reason: timedOut
        ? `the worker polling ${queue} (${identities.join(', ')}) did not answer within ${timeoutSec}s`
        : `the worker polling ${queue} failed to describe the host: ${reasonOf(err)}`,
      pollers: identities,
    };
  }
}
