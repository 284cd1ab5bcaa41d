// `fleet-upgrade vm launch|upgrade|status|retry`: one VM, by hand.
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { runVmLaunch } from '../../activities/host/vm-launch';
import { SAFE_ID, SAFE_LABEL } from '../../activities/host/validate';
import type { UpgradeVmInput, UpgradeVmProgress, UpgradeVmResult } from '../../workflows/upgrade-vm';
import { upgradeVmSearchAttributes } from '../../workflows/search-attributes';
import { BadInputError, CliError, ExitCode } from '../cli-errors';
import { orchestratorTaskQueue } from '../orchestrator-worker';

export function upgradeWorkflowId(hostId: string, vmId: string): string {
  return `upgrade-vm/${hostId}/${vmId}`;
}

export function checkIds(host: string, vm: string, to?: string): void {
  if (!SAFE_ID.test(host)) throw new BadInputError(`--host: ${JSON.stringify(host)} is not a host id`);
  if (!SAFE_ID.test(vm)) throw new BadInputError(`--vm: ${JSON.stringify(vm)} is not a VM id`);
  if (to !== undefined && !SAFE_LABEL.test(to))
    throw new BadInputError(`--to: ${JSON.stringify(to)} is not a version label`);
}

export async function vmLaunch(configFile: string, specFile: string): Promise<string> {
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

export async function vmUpgrade(
  client: Client,
  input: UpgradeVmInput,
  wait: boolean,
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
  if (!wait) return { text: `started ${workflowId} (run ${handle.firstExecutionRunId})`, exitCode: ExitCode.ok };
  const result = (await handle.result()) as UpgradeVmResult;
  return { text: describeResult(result), exitCode: exitCodeOf(result) };
}

export async function vmStatus(client: Client, host: string, vm: string, json: boolean): Promise<string> {
  checkIds(host, vm);
  const handle = client.workflow.getHandle(upgradeWorkflowId(host, vm));
  let description;
  try {
    description = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError)
      throw new CliError(`no upgrade of ${vm} on ${host} was ever started`, ExitCode.failed);
    throw err;
  }
  const status = description.status.name;
  const progress =
    status === 'RUNNING' || status === 'COMPLETED'
      ? await handle.query<UpgradeVmProgress>('progress').catch(() => undefined)
      : undefined;
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
