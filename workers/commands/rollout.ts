// `fleet-upgrade rollout start|status|list|pause|resume|abort|approve|retry`: fleet rollouts (workflow
// `rollout`, id `rollout/<plan name>`). A plan error exits 2 before any connection to Temporal.
import {
  Client,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type WorkflowHandle,
} from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { rolloutWorkflowId, type RolloutPlan } from '../../workflows/decisions/rollout-plan';
import type { RolloutInput, RolloutProgress, RolloutResult, RolloutStatus, UpdateAck } from '../../workflows/rollout';
import { rolloutKey, targetKey } from '../../workflows/search-attributes';
import { BadInputError, CliError, ExitCode } from '../cli-errors';
import { orchestratorTaskQueue } from './common';
import { HOST_OR_VM_REF } from '../../workflows/names';

// The commands themselves are registered in ./fleet-commands.ts, which imports this module when one runs.
export { temporalFlags, type TemporalFlags } from './common';

/** `name` or `rollout/name` → the workflow id. */
export function rolloutIdOf(id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._:/-]{0,200}$/.test(id))
    throw new BadInputError(`${JSON.stringify(id)} is not a rollout id`);
  return id.startsWith('rollout/') ? id : rolloutWorkflowId(id);
}

export function rolloutStartOptions(plan: RolloutPlan, input: RolloutInput) {
  return {
    taskQueue: orchestratorTaskQueue,
    workflowId: rolloutWorkflowId(plan.name),
    args: [input] as [RolloutInput],
    workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
    typedSearchAttributes: [
      { key: rolloutKey, value: plan.name },
      { key: targetKey, value: plan.target },
    ],
  };
}

export async function startRollout(client: Client, plan: RolloutPlan, input: RolloutInput = { plan }) {
  try {
    return await client.workflow.start('rollout', rolloutStartOptions(plan, input));
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      throw new CliError(
        `rollout ${plan.name} is already running (${rolloutWorkflowId(plan.name)}); see \`fleet-upgrade rollout status ${plan.name}\``,
        ExitCode.failed,
      );
    }
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Rendering

const when = (ms?: number) => (ms === undefined ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));

export function describeProgress(p: RolloutProgress, outcome?: string): string {
  const lines: string[] = [];
  const head = `rollout ${p.rolloutId} → ${p.target}: ${outcome ?? p.status}`;
  lines.push(head + (p.pauseReason ? ` (${p.pauseReason})` : '') + (p.abortReason ? ` (${p.abortReason})` : ''));
  lines.push(
    `  wave ${p.wave.index + 1}/${p.wave.of} ${p.wave.name}${p.wave.awaitingApproval ? ' — awaiting approval (fleet-upgrade rollout approve)' : ''}`,
  );
  const v = p.vms;
  lines.push(
    `  VMs: ${v.upgraded} upgraded, ${v['already-on-target']} already on target, ${v['in-flight']} in flight, ${v.pending} pending, ` +
      `${v.failed} failed, ${v['rolled-back']} rolled back, ${v.refused} refused${v.cancelled ? `, ${v.cancelled} cancelled` : ''}${v['needs-operator'] ? `, ${v['needs-operator']} need an operator` : ''}`,
  );
  const hb = p.hostsByState;
  lines.push(
    `  hosts: ${hb.done} done, ${hb.running} running, ${hb.pending} pending, ${hb.failed} failed, ${hb.skipped} skipped`,
  );
  lines.push(`  failure budget: ${p.budget.failedSinceResume}/${p.budget.budget} used since start or last resume`);
  if (p.window.always) lines.push('  windows: none (always open)');
  else if (p.window.open)
    lines.push(`  window: open until ${when(p.window.closesAt)}; next opens ${when(p.window.nextOpensAt)}`);
  else lines.push(`  window: closed; next opens ${when(p.window.nextOpensAt)}`);
  for (const h of p.hosts) {
    const c = h.counts;
    const failed = c.failed + c['rolled-back'] + c.refused + (c['needs-operator'] ?? 0);
    lines.push(
      `  ${h.hostId.padEnd(16)} ${h.wave.padEnd(10)} ${h.state.padEnd(8)} ${c.upgraded + c['already-on-target']}/${h.total || '?'} done` +
        `${failed ? `, ${failed} failed` : ''}${h.inFlight.length ? `, in flight: ${h.inFlight.join(' ')}` : ''}` +
        `${h.reason ? ` — ${h.reason}` : ''}`,
    );
  }
  for (const pf of p.preflight.filter((x) => !x.ok)) lines.push(`  preflight ${pf.hostId}: ${pf.reason}`);
  if (p.failures.length) {
    lines.push('  failures:');
    for (const f of p.failures)
      lines.push(`    ${f.hostId}/${f.vmId}: ${f.outcome}${f.reason ? ` — ${f.reason}` : ''}`);
  }
  return lines.join('\n');
}

export interface RolloutView {
  workflowId: string;
  runId: string;
  status: string;
  progress?: RolloutProgress;
  result?: RolloutResult;
}

export async function rolloutView(client: Client, id: string): Promise<RolloutView> {
  const handle = client.workflow.getHandle(rolloutIdOf(id));
  let d;
  try {
    d = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new CliError(`no rollout ${id}`, ExitCode.failed);
    throw err;
  }
  const status = d.status.name;
  const view: RolloutView = { workflowId: handle.workflowId, runId: d.runId, status };
  if (status === 'COMPLETED') view.result = (await handle.result()) as RolloutResult;
  else if (status === 'RUNNING') view.progress = await handle.query<RolloutProgress>('progress');
  return view;
}

export async function rolloutStatus(client: Client, id: string, json: boolean): Promise<string> {
  const v = await rolloutView(client, id);
  if (json) return JSON.stringify(v);
  const lines = [`${v.workflowId} (run ${v.runId}): ${v.status}`];
  if (v.result) lines.push(describeProgress(v.result, v.result.outcome));
  else if (v.progress) lines.push(describeProgress(v.progress));
  return lines.join('\n');
}

/** 0 when the rollout completed with every VM upgraded (or already there); 1 otherwise. */
export function exitCodeOfRollout(r: RolloutResult): number {
  const v = r.vms;
  const bad =
    v.failed +
    v['rolled-back'] +
    v.refused +
    v.cancelled +
    (v['needs-operator'] ?? 0) +
    r.hostsByState.failed +
    r.hostsByState.skipped;
  return r.outcome === 'completed' && bad === 0 ? ExitCode.ok : ExitCode.failed;
}

export async function waitForResult(
  handle: WorkflowHandle,
  say: (line: string) => void,
  pollMs = 2000,
): Promise<RolloutResult> {
  let last = '';
  let done = false;
  const result = handle.result().finally(() => (done = true)) as Promise<RolloutResult>;
  void (async () => {
    while (!done) {
      await new Promise((r) => setTimeout(r, pollMs));
      if (done) break;
      try {
        const p = await handle.query<RolloutProgress>('progress');
        const v = p.vms;
        const line = `${p.status} wave ${p.wave.index + 1}/${p.wave.of} ${p.wave.name}: ${v.upgraded + v['already-on-target']} done, ${v['in-flight']} in flight, ${v.pending} pending, ${v.failed + v['rolled-back'] + v.refused + (v['needs-operator'] ?? 0)} failed${p.window.always || p.window.open ? '' : ', window closed'}`;
        if (line !== last) say(line);
        last = line;
      } catch {
        // between runs (continue-as-new) or finishing
      }
    }
  })();
  return result;
}

export async function update(
  client: Client,
  id: string,
  name: 'pause' | 'resume' | 'abort' | 'approve' | 'retry',
  arg: Record<string, unknown>,
): Promise<UpdateAck> {
  const handle = client.workflow.getHandle(rolloutIdOf(id));
  try {
    return name === 'resume'
      ? await handle.executeUpdate<UpdateAck, []>(name)
      : await handle.executeUpdate<UpdateAck, [Record<string, unknown>]>(name, { args: [arg] });
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) {
      throw new CliError(`${name}: ${err.cause?.message ?? err.message}`, ExitCode.failed);
    }
    if (err instanceof WorkflowNotFoundError) throw new CliError(`no running rollout ${id}`, ExitCode.failed);
    const cause = (err as { cause?: Error }).cause;
    if (/already completed/.test(`${(err as Error).message} ${cause?.message ?? ''}`)) {
      throw new CliError(
        `${name}: rollout ${id} has finished; see \`fleet-upgrade rollout status ${id}\``,
        ExitCode.failed,
      );
    }
    throw err;
  }
}

/** Retry failed VMs: an update of a running rollout, or a new run (same id) of a finished one. */
export async function rolloutRetry(client: Client, id: string, vms: string[] | undefined): Promise<string> {
  for (const v of vms ?? []) {
    if (!HOST_OR_VM_REF.test(v)) {
      throw new BadInputError(`--vm: ${JSON.stringify(v)} is not host/vm`);
    }
  }
  const view = await rolloutView(client, id);
  if (view.status === 'RUNNING') {
    const ack = await update(client, id, 'retry', vms ? { vms } : {});
    return ack.message;
  }
  if (!view.result) throw new CliError(`rollout ${id} is ${view.status}; nothing to retry from`, ExitCode.failed);
  const r = view.result;
  const picked = r.failures.filter((f) => !vms || vms.includes(`${f.hostId}/${f.vmId}`) || vms.includes(f.hostId));
  if (picked.length === 0) throw new CliError(`rollout ${id} has no matching failed VM to retry`, ExitCode.failed);
  const only: Record<string, string[] | null> = {};
  for (const f of picked) {
    if (f.vmId === '*') only[f.hostId] = null;
    else if (only[f.hostId] !== null) only[f.hostId] = [...(only[f.hostId] ?? []), f.vmId];
  }
  const handle = client.workflow.getHandle(view.workflowId);
  const history = await handle.fetchHistory();
  const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  if (!payload?.data) throw new CliError(`cannot read the plan of the last run of ${view.workflowId}`, ExitCode.failed);
  const last = JSON.parse(Buffer.from(payload.data).toString('utf8')) as RolloutInput;
  const started = await startRollout(client, last.plan, { plan: last.plan, only });
  return `started a new run of ${started.workflowId} (run ${started.firstExecutionRunId}) for ${picked.length} failed VM(s)`;
}

export async function listRollouts(client: Client, json: boolean): Promise<string> {
  const rows: Array<{ workflowId: string; runId: string; status: string; startTime: string }> = [];
  for await (const w of client.workflow.list({ query: `WorkflowType = 'rollout'` })) {
    rows.push({
      workflowId: w.workflowId,
      runId: w.runId,
      status: w.status.name,
      startTime: w.startTime.toISOString(),
    });
    if (rows.length >= 200) break;
  }
  if (json) return JSON.stringify(rows);
  if (rows.length === 0) return 'no rollouts';
  return rows.map((r) => `${r.workflowId.padEnd(40)} ${r.status.padEnd(12)} ${r.startTime}`).join('\n');
}

export type { RolloutStatus };
