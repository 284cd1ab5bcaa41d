// `fleet-upgrade inventory`: which VMs, on which hosts, run which QEMU build — what `virsh list` or `kubectl
// get vmi` answer. The hosts are the live host workers (per Temporal's pollers, as `hosts` finds them) plus
// any named with --host; each worker lists its VMs with what their live QEMU reports (workflow
// fleetInventory, within a deadline), and each VM's last upgrade comes from its upgradeVm workflow. Hosts
// that do not answer are listed with the reason, never skipped.
import { randomUUID } from 'node:crypto';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { hostOfIdentity, hostsQueue } from '../presence';
import { activityPollers, LIVE_POLLER_MS } from '../../activities/fleet/task-queues';
import type { InventoryVmDetail } from '../../activities/upgrade/inventory';
import type { UpgradeVmProgress, UpgradeVmResult } from '../../workflows/upgrade-vm';
import type { HostInventoryRow } from '../../workflows/fleet-inventory';
import { orchestratorTaskQueue } from './common';
import { upgradeWorkflowId } from './vm';

export interface LastUpgrade {
  workflowId: string;
  /** Temporal's status of the last run (`RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, …), or `NONE`. */
  status: string;
  /** The result's outcome when the run completed (`upgraded`, `rolled-back`, …). */
  outcome?: string;
  target?: string;
  /** The phase of a run in flight. */
  phase?: string;
  reason?: string;
}

export interface InventoryVmRow extends InventoryVmDetail {
  lastUpgrade: LastUpgrade;
}

export interface InventoryHost extends Omit<HostInventoryRow, 'vms'> {
  vms?: InventoryVmRow[];
}

export interface InventoryView {
  hosts: InventoryHost[];
  summary: {
    hosts: number;
    hostsNotAnswering: string[];
    vms: number;
    /** VMs per `label (version)`. */
    byVersion: Record<string, number>;
    target?: string;
    /** VMs not on the target label yet (of the hosts that answered), as `host/vm`. */
    leftToUpgrade?: string[];
  };
}

async function lastUpgradeOf(client: Client, hostId: string, vmId: string): Promise<LastUpgrade> {
  const workflowId = upgradeWorkflowId(hostId, vmId);
  const handle = client.workflow.getHandle(workflowId);
  let d;
  try {
    d = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return { workflowId, status: 'NONE' };
    throw err;
  }
  const status = d.status.name;
  if (status === 'RUNNING') {
    const p = await handle.query<UpgradeVmProgress>('progress').catch(() => undefined);
    return { workflowId, status, ...(p ? { phase: p.phase } : {}) };
  }
  if (status === 'COMPLETED') {
    const r = (await handle.result().catch(() => undefined)) as UpgradeVmResult | undefined;
    if (r) {
      return {
        workflowId,
        status,
        outcome: r.outcome,
        ...(r.to?.label ? { target: r.to.label } : {}),
        ...(r.reason ? { reason: r.reason } : {}),
      };
    }
  }
  return { workflowId, status };
}

/** Host ids: the live host workers on the presence queue, plus the ones asked for. */
async function hostIdsOf(client: Client, namespace: string, asked: string[]): Promise<string[]> {
  const presence =
    (await activityPollers(client.connection.workflowService, namespace, [hostsQueue]))[hostsQueue] ?? [];
  const ids = new Set(asked);
  if (asked.length === 0) {
    for (const p of presence) {
      const h = hostOfIdentity(p.identity);
      if (h && (p.ageMs === null || p.ageMs < LIVE_POLLER_MS)) ids.add(h);
    }
  }
  return [...ids].sort();
}

export async function inventory(
  client: Client,
  namespace: string,
  opts: { hosts?: string[]; target?: string; timeoutSec: number },
): Promise<InventoryView> {
  const hostIds = await hostIdsOf(client, namespace, opts.hosts ?? []);
  let rows: HostInventoryRow[] = [];
  if (hostIds.length) {
    const handle = await client.workflow.start('fleetInventory', {
      taskQueue: orchestratorTaskQueue,
      workflowId: `fleet-inventory/${randomUUID()}`,
      args: [{ hostIds, timeoutSec: opts.timeoutSec }],
      workflowExecutionTimeout: `${opts.timeoutSec + 30}s`,
    });
    let timer: NodeJS.Timeout | undefined;
    const answer = await Promise.race([
      handle.result() as Promise<HostInventoryRow[]>,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), (opts.timeoutSec + 10) * 1000);
      }),
    ]).finally(() => clearTimeout(timer));
    if (answer) rows = answer;
    else {
      await handle.terminate('fleet-upgrade inventory gave up waiting').catch(() => undefined);
      rows = hostIds.map((hostId) => ({
        hostId,
        ok: false,
        pollers: [],
        problem: 'unknown: no orchestrator worker ran the fleetInventory workflow in time',
      }));
    }
  }
  // Each VM's last upgrade, a few workflows at a time.
  const hosts: InventoryHost[] = rows.map((r) => ({ ...r, vms: undefined }));
  const jobs: Array<() => Promise<void>> = [];
  rows.forEach((r, i) => {
    if (!r.vms) return;
    const vms: InventoryVmRow[] = r.vms.map((v) => ({ ...v, lastUpgrade: { workflowId: '', status: 'NONE' } }));
    hosts[i]!.vms = vms;
    for (const v of vms)
      jobs.push(async () => {
        v.lastUpgrade = await lastUpgradeOf(client, r.hostId, v.vmId);
      });
  });
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(8, jobs.length) }, async () => {
      for (let i = next++; i < jobs.length; i = next++) await jobs[i]!();
    }),
  );
  for (const h of hosts) if (!h.vms) delete h.vms;

  const all = hosts.flatMap((h) => (h.vms ?? []).map((v) => ({ hostId: h.hostId, v })));
  const byVersion: Record<string, number> = {};
  for (const { v } of all) {
    const key = `${v.label} (${v.version ?? v.state})`;
    byVersion[key] = (byVersion[key] ?? 0) + 1;
  }
  return {
    hosts,
    summary: {
      hosts: hosts.length,
      hostsNotAnswering: hosts.filter((h) => !h.ok).map((h) => h.hostId),
      vms: all.length,
      byVersion,
      ...(opts.target
        ? {
            target: opts.target,
            leftToUpgrade: all.filter(({ v }) => v.label !== opts.target).map(({ hostId, v }) => `${hostId}/${v.vmId}`),
          }
        : {}),
    },
  };
}

function lastOf(u: LastUpgrade): string {
  if (u.status === 'NONE') return '-';
  if (u.status === 'RUNNING') return `in flight${u.phase ? ` (${u.phase})` : ''}`;
  if (u.outcome) return `${u.outcome}${u.target ? ` → ${u.target}` : ''}`;
  return u.status.toLowerCase();
}

export function describeInventory(view: InventoryView): string {
  if (view.hosts.length === 0) return 'no host workers are polling (none seen on queue fleet-upgrade.hosts)';
  const table: string[][] = [['HOST', 'VM', 'LABEL', 'VERSION', 'MACHINE', 'STATE', 'LAST UPGRADE']];
  for (const h of view.hosts) {
    if (!h.ok) {
      table.push([h.hostId, '?', '', '', '', 'NOT ANSWERING', h.problem ?? '']);
      continue;
    }
    if (!h.vms?.length) table.push([h.hostId, '(no VMs)', '', '', '', '', '']);
    for (const v of h.vms ?? []) {
      table.push([h.hostId, v.vmId, v.label, v.version ?? '?', v.machineType ?? '?', v.state, lastOf(v.lastUpgrade)]);
    }
  }
  const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const lines = table.map((r) =>
    r
      .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd(),
  );
  const s = view.summary;
  const versions = Object.entries(s.byVersion)
    .map(([k, n]) => `${n} on ${k}`)
    .join(', ');
  lines.push('');
  lines.push(
    `${s.vms} VMs on ${s.hosts - s.hostsNotAnswering.length} of ${s.hosts} hosts${versions ? `: ${versions}` : ''}`,
  );
  if (s.target !== undefined) {
    lines.push(
      `left to upgrade to ${s.target}: ${s.leftToUpgrade!.length}${s.leftToUpgrade!.length ? ` (${s.leftToUpgrade!.join(' ')})` : ''}` +
        (s.hostsNotAnswering.length ? `, plus the VMs of ${s.hostsNotAnswering.length} hosts that did not answer` : ''),
    );
  }
  if (s.hostsNotAnswering.length) lines.push(`not answering: ${s.hostsNotAnswering.join(', ')}`);
  return lines.join('\n');
}
