// `fleet-upgrade vm launch|upgrade|status|retry|cancel`: one VM, by hand.
import {
  WorkflowExecutionAlreadyStartedError,
  WorkflowFailedError,
  WorkflowClient,
  WorkflowNotFoundError,
  type Client,
} from '@temporalio/client';
import { CancelledFailure, WorkflowIdReusePolicy } from '@temporalio/common';
import type { MigrationPolicy } from '../../workflows/decisions/policy';
import type { UpgradeVmInput, UpgradeVmProgress, UpgradeVmResult } from '../../workflows/upgrade-vm';
import { upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import { BadInputError, CliError, ExitCode } from '../cli-errors';
import { orchestratorTaskQueue, SAFE_ID, SAFE_LABEL } from './common';
import { messageNames, workflowIds } from '../../workflows/names';
// The host-side commands (launch, resolve) and the policy schema (zod) are imported where used, so that the
// client commands (status, upgrade, cancel, retry) load the Temporal client and little else.

export function upgradeWorkflowId(hostId: string, vmId: string): string {
  return workflowIds.upgradeVm(hostId, vmId);
}

export function checkIds(host: string, vm: string, to?: string): void {
  if (!SAFE_ID.test(host)) throw new BadInputError(`--host: ${JSON.stringify(host)} is not a host id`);
  if (!SAFE_ID.test(vm)) throw new BadInputError(`--vm: ${JSON.stringify(vm)} is not a VM id`);
  if (to !== undefined && !SAFE_LABEL.test(to))
    throw new BadInputError(`--to: ${JSON.stringify(to)} is not a version label`);
}

/** `vm resolve`: the host-side answer to an upgrade that kept every process for an operator. */
export async function vmResolve(configFile: string, vmId: string, keep: number, resume: boolean) {
  if (!SAFE_ID.test(vmId)) throw new BadInputError(`--vm: ${JSON.stringify(vmId)} is not a VM id`);
  const [{ loadHostConfig }, { resolveVm }] = await Promise.all([
    import('../../activities/host/config'),
    import('../../activities/upgrade/resolve'),
  ]);
  return resolveVm(await loadHostConfig(configFile), vmId, keep, { resume });
}

export async function vmLaunch(configFile: string, specFile: string): Promise<string> {
  const { runVmLaunch } = await import('../../activities/host/vm-launch');
  const r = await runVmLaunch(configFile, specFile);
  return `launched ${r.id}: QEMU ${r.binary.label} pid ${r.pid}, machine ${r.machineType}, QMP ${r.qmpSocket}`;
}

export function describeResult(r: UpgradeVmResult): string {
  const m = r.migration;
  const lines = [`${r.hostId}/${r.vmId}: ${r.outcome}${r.reason ? ` — ${r.reason}` : ''}`];
  if (r.from || r.to) lines.push(`  from ${r.from?.label ?? '?'} to ${r.to?.label ?? '?'}`);
  if (r.strategy) {
    lines.push(
      `  strategy ${r.strategy}${r.ram ? `, RAM ${r.ram}` : ''}, backends transferred by QEMU: ${r.transferredBackends.join(', ') || 'none'}`,
    );
  }
  lines.push(...describeBackends(r.backends));
  if (m) {
    lines.push(
      `  migration ${m.totalTimeMs} ms, ${m.transferredBytes} bytes streamed, downtime ${m.downtimeMs ?? '?'} ms (QEMU), guest pause ${m.guestPauseMs ?? '?'} ms, switchover gap ${m.switchoverGapMs ?? '?'} ms`,
    );
  }
  if (r.rollback) lines.push(`  rollback: ${r.rollback.actions.join('; ')}`);
  return lines.join('\n');
}

/** One line per backend: its mode and why. */
export function describeBackends(backends: UpgradeVmResult['backends']): string[] {
  return (backends ?? []).map((b) => `  backend ${b.id}: ${b.mode} — ${b.why}`);
}

export function exitCodeOf(r: UpgradeVmResult): number {
  return r.outcome === 'upgraded' || r.outcome === 'already-on-target' ? ExitCode.ok : ExitCode.failed;
}

/** The policy flags of `vm upgrade`, as typed (strings), before validation. */
export interface PolicyFlags {
  strategies?: string;
  excludeBackend?: string[];
  requireBackendTransfer?: boolean;
  downtimeLimit?: string;
  bandwidth?: string;
  completionTimeoutPerGib?: string;
  progressTimeout?: string;
  autoConverge?: boolean;
}

/** Each policy field and the flag that sets it (for error messages naming the flag). */
const policyFlagOf: Record<keyof MigrationPolicy, string> = {
  strategies: '--strategies',
  excludeBackends: '--exclude-backend',
  requireBackendTransfer: '--require-backend-transfer',
  transport: '--transport',
  downtimeLimitMs: '--downtime-limit',
  bandwidthLimitMiBps: '--bandwidth',
  completionTimeoutPerGiBSec: '--completion-timeout-per-gib',
  progressTimeoutSec: '--progress-timeout',
  autoConverge: '--auto-converge',
};

/**
 * The migration policy given by flags, validated exactly as a rollout plan's `policy:` section is (the same
 * schema, through parsePlan); a bad value is a one-line BadInputError naming the flag.
 */
export async function policyFromFlags(f: PolicyFlags): Promise<Partial<MigrationPolicy>> {
  const whole = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v.trim())) throw new BadInputError(`${flag}: ${JSON.stringify(v)} is not a whole number`);
    return Number(v.trim());
  };
  const raw: Record<string, unknown> = {
    strategies: f.strategies?.split(',').map((s) => s.trim()),
    excludeBackends: f.excludeBackend,
    requireBackendTransfer: f.requireBackendTransfer,
    downtimeLimitMs: whole('--downtime-limit', f.downtimeLimit),
    bandwidthLimitMiBps: whole('--bandwidth', f.bandwidth),
    completionTimeoutPerGiBSec: whole('--completion-timeout-per-gib', f.completionTimeoutPerGib),
    progressTimeoutSec: whole('--progress-timeout', f.progressTimeout),
    autoConverge: f.autoConverge,
  };
  const policy = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
  const { parsePlan, PlanError } = await import('../../workflows/decisions/rollout-plan');
  try {
    return parsePlan({ name: 'vm-upgrade', target: 'x', hosts: ['h'], policy }).policy;
  } catch (err) {
    if (!(err instanceof PlanError)) throw err;
    const m = /^policy\.([A-Za-z]+)(.*)$/.exec(err.field);
    const flag = m ? (policyFlagOf[m[1] as keyof MigrationPolicy] ?? m[1]) : err.field;
    throw new BadInputError(`${flag}${m?.[2] ?? ''}: ${err.detail}`);
  }
}

export async function vmUpgrade(
  client: Client,
  input: UpgradeVmInput,
  wait: boolean,
  json = false,
): Promise<{ text: string; exitCode: number }> {
  checkIds(input.hostId, input.vmId, input.target);
  const workflowId = upgradeWorkflowId(input.hostId, input.vmId);
  let handle;
  try {
    handle = await client.workflow.start('upgradeVm', {
      taskQueue: orchestratorTaskQueue,
      workflowId,
      args: [input],
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
      typedSearchAttributes: upgradeVmSearchAttributes(input),
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      throw new CliError(
        `an upgrade of ${input.vmId} on ${input.hostId} is already running (${workflowId})`,
        ExitCode.failed,
      );
    }
    throw err;
  }
  const runId = handle.firstExecutionRunId;
  if (!wait) {
    return {
      text: json
        ? JSON.stringify({ workflowId, runId, status: 'RUNNING', input })
        : `started ${workflowId} (run ${runId})`,
      exitCode: ExitCode.ok,
    };
  }
  const result = (await handle.result()) as UpgradeVmResult;
  return {
    text: json ? JSON.stringify({ workflowId, runId, status: 'COMPLETED', input, result }) : describeResult(result),
    exitCode: exitCodeOf(result),
  };
}

export async function vmStatus(client: Client, host: string, vm: string, json: boolean): Promise<string> {
  checkIds(host, vm);
  const handle = client.workflow.getHandle(upgradeWorkflowId(host, vm));
  // A run in flight answers its progress query; a closed run's result says all of it. The query goes out with
  // the describe rather than after it, a round trip less for a run in flight: the service itself refuses it
  // when the run is closed (NOT_OPEN), as querying a closed run would make the orchestrator worker replay its
  // whole history, for every `vm status` of a fleet-wide loop.
  const progressQuery = new WorkflowClient({
    connection: client.connection,
    namespace: client.options.namespace,
    queryRejectCondition: 'NOT_OPEN',
  })
    .getHandle(handle.workflowId)
    .query<UpgradeVmProgress>(messageNames.progressQuery)
    .catch(() => undefined);
  let description;
  try {
    description = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError)
      throw new CliError(`no upgrade of ${vm} on ${host} was ever started`, ExitCode.failed);
    throw err;
  }
  const status = description.status.name;
  const progress = status === 'RUNNING' ? await progressQuery : undefined;
  const result = status === 'COMPLETED' ? ((await handle.result()) as UpgradeVmResult) : undefined;
  const view = { workflowId: handle.workflowId, runId: description.runId, status, progress, result };
  if (json) return JSON.stringify(view);
  const lines = [`${handle.workflowId} (${description.runId}): ${status}`];
  if (progress) {
    const p = progress.migration;
    lines.push(
      `  phase ${progress.phase}${progress.strategy ? `, strategy ${progress.strategy}` : ''}${progress.ram ? `, RAM ${progress.ram}` : ''}`,
    );
    if (!result) lines.push(...describeBackends(progress.backends));
    if (p) lines.push(`  migration ${p.status}: ${p.transferredBytes} bytes sent, ${p.remainingBytes} remaining`);
  }
  if (result) lines.push(describeResult(result));
  return lines.join('\n');
}

/** A new run of the same workflow id with the last run's input, after a failure or rollback. */
export async function vmRetry(client: Client, host: string, vm: string, wait: boolean) {
  checkIds(host, vm);
  const handle = client.workflow.getHandle(upgradeWorkflowId(host, vm));
  let description;
  try {
    description = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError)
      throw new CliError(`no upgrade of ${vm} on ${host} to retry`, ExitCode.failed);
    throw err;
  }
  if (description.status.name === 'RUNNING') {
    throw new CliError(
      `the upgrade of ${vm} on ${host} is still running (run ${description.runId}); nothing to retry`,
      ExitCode.failed,
    );
  }
  if (description.status.name === 'COMPLETED') {
    const last = (await handle.result()) as UpgradeVmResult;
    if (last.outcome === 'upgraded' || last.outcome === 'already-on-target') {
      throw new CliError(
        `the last upgrade of ${vm} on ${host} succeeded (${last.outcome}); nothing to retry`,
        ExitCode.failed,
      );
    }
  }
  const history = await handle.fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  const payload = started?.input?.payloads?.[0];
  if (!payload?.data)
    throw new CliError(`cannot read the input of the last run of ${handle.workflowId}`, ExitCode.failed);
  const input = JSON.parse(Buffer.from(payload.data).toString('utf8')) as UpgradeVmInput;
  return vmUpgrade(client, input, wait);
}

export interface CancelView {
  workflowId: string;
  runId: string;
  /** What the cancel led to: `requested` without --wait; then what the run's end says. */
  outcome: 'requested' | 'rolled-back' | 'upgraded' | 'failed' | 'cancelled';
  /** The phase the upgrade was in when the cancel was requested. */
  phaseAtCancel?: string;
  result?: UpgradeVmResult;
  message: string;
}

/**
 * `vm cancel`: cancels the running upgradeVm workflow of one VM. Before the switchover the VM rolls back to
 * its source; after it the upgrade finishes — the workflow decides; this reports what its end says. No
 * upgrade in flight: exit 1, nothing touched. Exit 0 when the VM stayed on (or went back to) its source.
 */
export async function vmCancel(
  client: Client,
  host: string,
  vm: string,
  wait: boolean,
  json: boolean,
): Promise<{ text: string; exitCode: number }> {
  checkIds(host, vm);
  const handle = client.workflow.getHandle(upgradeWorkflowId(host, vm));
  let description;
  try {
    description = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError)
      throw new CliError(`no upgrade of ${vm} on ${host} is in flight`, ExitCode.failed);
    throw err;
  }
  if (description.status.name !== 'RUNNING') {
    throw new CliError(
      `no upgrade of ${vm} on ${host} is in flight (the last one, run ${description.runId}, is ${description.status.name})`,
      ExitCode.failed,
    );
  }
  const runId = description.runId;
  const pinned = client.workflow.getHandle(handle.workflowId, runId);
  const phase = (await pinned.query<UpgradeVmProgress>(messageNames.progressQuery).catch(() => undefined))?.phase;
  await pinned.cancel();
  const done = (view: Omit<CancelView, 'workflowId' | 'runId'>, exitCode: number) => ({
    text: json ? JSON.stringify({ workflowId: handle.workflowId, runId, ...view }) : view.message,
    exitCode,
  });
  const at = phase ? ` (in phase ${phase})` : '';
  if (!wait) {
    return done(
      {
        outcome: 'requested',
        ...(phase ? { phaseAtCancel: phase } : {}),
        message: `cancel requested for ${handle.workflowId} (run ${runId})${at}; \`fleet-upgrade vm status --host ${host} --vm ${vm}\` tells how it ended`,
      },
      ExitCode.ok,
    );
  }
  let result: UpgradeVmResult;
  try {
    result = (await pinned.result()) as UpgradeVmResult;
  } catch (err) {
    if (err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure) {
      // The run ended cancelled: the workflow rolled the VM back before it let the cancellation through.
      return done(
        {
          outcome: 'cancelled',
          ...(phase ? { phaseAtCancel: phase } : {}),
          message: `${host}/${vm}: cancelled${at}; the upgrade was stopped before the switchover and the VM runs on its source`,
        },
        ExitCode.ok,
      );
    }
    throw err;
  }
  const view = { ...(phase ? { phaseAtCancel: phase } : {}), result };
  if (result.outcome === 'rolled-back' || result.outcome === 'refused') {
    return done(
      {
        ...view,
        outcome: 'rolled-back',
        message: `${host}/${vm}: cancelled${at}; rolled back, the VM runs on ${result.from?.label ?? 'its source'}\n${describeResult(result)}`,
      },
      ExitCode.ok,
    );
  }
  if (result.outcome === 'upgraded' || result.outcome === 'already-on-target') {
    return done(
      {
        ...view,
        outcome: 'upgraded',
        message: `${host}/${vm}: too late to cancel${at}: past the switchover, the upgrade finished\n${describeResult(result)}`,
      },
      ExitCode.failed,
    );
  }
  return done(
    {
      ...view,
      outcome: 'failed',
      message: `${host}/${vm}: cancelled${at}; the upgrade ended ${result.outcome}\n${describeResult(result)}`,
    },
    ExitCode.failed,
  );
}
