// Workflow `fleetInventory`, for `fleet-upgrade inventory`: per host, whether a worker polls its queue (per
// Temporal) and, from the worker within a deadline, every VM with the version and run state its live QEMU
// reports. Deterministic: the hosts' answers come from activities, the deadline from a workflow timer.
import { ActivityFailure, proxyActivities, TimeoutFailure } from '@temporalio/workflow';
import type { FleetActivities } from '../activities/fleet/task-queues';
import type { HostActivities } from '../activities/upgrade/api';
import type { InventoryVmDetail } from '../activities/upgrade/inventory';
import { reasonOf } from './failures';
import { hostTaskQueue, LIVE_POLLER_MS } from './names';

export interface HostInventoryRow {
  hostId: string;
  /** Whether the host's worker answered; when not, `problem` says why. */
  ok: boolean;
  problem?: string;
  /** Worker identities polling `qemu-host.<hostId>`. */
  pollers: string[];
  labels?: string[];
  vms?: InventoryVmDetail[];
}

export async function fleetInventory(input: { hostIds: string[]; timeoutSec: number }): Promise<HostInventoryRow[]> {
  const fleet = proxyActivities<FleetActivities>({ startToCloseTimeout: '30s', retry: { maximumAttempts: 3 } });
  const queues = input.hostIds.map((h) => hostTaskQueue(h));
  const pollers = await fleet.taskQueuePollers({ queues });
  return Promise.all(
    input.hostIds.map(async (hostId): Promise<HostInventoryRow> => {
      const queue = hostTaskQueue(hostId);
      const live = (pollers[queue] ?? []).filter((p) => p.ageMs === null || p.ageMs < LIVE_POLLER_MS);
      const identities = [...new Set(live.map((p) => p.identity))];
      if (live.length === 0) return { hostId, ok: false, problem: `no worker is polling ${queue}`, pollers: [] };
      const host = proxyActivities<HostActivities>({
        taskQueue: queue,
        scheduleToCloseTimeout: input.timeoutSec * 1000,
        retry: { maximumAttempts: 1 },
      });
      try {
        const inv = await host.inventoryVms({});
        if (inv.hostId !== hostId) {
          return {
            hostId,
            ok: false,
            problem: `the worker on ${queue} says it is host ${inv.hostId}`,
            pollers: identities,
          };
        }
        return { hostId, ok: true, pollers: identities, labels: inv.labels, vms: inv.vms };
      } catch (err) {
        const timedOut = err instanceof ActivityFailure && err.cause instanceof TimeoutFailure;
        return {
          hostId,
          ok: false,
          problem: timedOut
            ? `the worker polling ${queue} (${identities.join(', ')}) did not answer within ${input.timeoutSec}s`
            : `the worker polling ${queue} failed to list its VMs: ${reasonOf(err)}`,
          pollers: identities,
        };
      }
    }),
  );
}
