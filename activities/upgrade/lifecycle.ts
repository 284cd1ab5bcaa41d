// Step 7 of the saga (verify, finalize) and the rollback. Each reconciles with what QEMU and the VM record
// say before acting, so a retry after a crash continues instead of repeating.
import { writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { failureTypes } from '../../workflows/failures';
import { queryVersion } from '../capabilities/probe';
import type { HostConfig } from '../host/config';
import { socketPath } from '../host/paths';
import { killQemu } from '../host/qemu-launcher';
import { deleteTap, recreatedTapName, tapExists } from '../host/taps';
import type { VmSpec } from '../host/vm-spec';
import {
  recoveryAction,
  type DestinationState,
  type RecoveryFacts,
  type SourceState,
} from '../../workflows/decisions/recovery';
import { readVmRecord, writeVmRecord } from '../host/vm-record';
import type { QmpClient } from '../qmp/client';
import type { HostActivities, RollbackOutcome, Verification } from './api';
import { destinationMayHaveRun, resumeMarker } from './migrate';
import {
  allowedBinary,
  findProcess,
  forgetProcess,
  isAlive,
  refuseGenerations,
  refuseUnsafeInput,
  rememberProcess,
  requireLiveProcess,
  requireRecord,
  withQmp,
  type VmProcess,
} from './processes';

const statusSchema = z.object({ status: z.string(), running: z.boolean() });
const qomListSchema = z.array(z.object({ name: z.string(), type: z.string() }));

/** QEMU's run state (`query-status`). */
export async function statusOf(qmp: QmpClient) {
  return statusSchema.parse(await qmp.execute('query-status'));
}

export async function verify(
  config: HostConfig,
  input: Parameters<HostActivities['verify']>[0],
): Promise<Verification> {
  refuseUnsafeInput(input.vmId, input.destination);
  const record = await requireRecord(config, input.vmId);
  const p = await requireLiveProcess(config, input.vmId, input.destination, 'destination');
  return withQmp(config, p, async (qmp) => {
    const [state, version, children] = await Promise.all([
      statusOf(qmp),
      queryVersion(qmp),
      qmp.execute('qom-list', { path: '/machine/peripheral' }).then((l) => qomListSchema.parse(l)),
    ]);
    const devices = children.filter((c) => c.type.startsWith('child<')).map((c) => c.name);
    const problems: string[] = [];
    if (!state.running) problems.push(`status is ${state.status}, not running`);
    if (version.version !== input.expectVersion)
      problems.push(`QEMU ${version.version}, expected ${input.expectVersion}`);
    const missing = record.spec.devices.map((d) => d.id).filter((id) => !devices.includes(id));
    if (missing.length) problems.push(`devices missing: ${missing.join(', ')}`);
    if (problems.length) {
      throw ApplicationFailure.nonRetryable(
        `destination of ${input.vmId} failed verification: ${problems.join('; ')}`,
        failureTypes.verificationFailed,
      );
    }
    return { status: state.status, qemuVersion: version.version, devices };
  });
}

/** Quits a process politely over QMP, then makes sure it is gone. */
async function stopProcess(config: HostConfig, p: VmProcess): Promise<void> {
  if (!isAlive(p)) return;
  await withQmp(config, p, (qmp) => qmp.execute('quit')).catch(() => undefined);
  await killQemu(p.pid, { graceMs: config.limits.killGraceMs, expectArg: p.qmpSocket });
}

async function removeLeftovers(config: HostConfig, vmId: string, generation: number): Promise<void> {
  const kinds = ['mig', 'cpr'] as const;
  await Promise.all([
    ...kinds.map((k) => rm(socketPath(config.runtimeDir, vmId, generation, k), { force: true })),
    rm(resumeMarker(config, vmId, generation), { force: true }),
  ]);
}

/**
 * Makes the destination the VM's process: the record is rewritten first (so it always names a live
 * process), then the old process quits.
 */
export async function finalize(config: HostConfig, input: Parameters<HostActivities['finalize']>[0]): Promise<void> {
  const { vmId } = input;
  refuseUnsafeInput(vmId, input.source, input.destination);
  refuseGenerations(input.source, input.destination);
  const record = await requireRecord(config, vmId);
  // Taps re-created for the destination, found once: the record names them, then the old ones go.
  const recreated =
    record.generation === input.source.generation
      ? await recreatedTaps(config, record.spec, input.destination.generation)
      : {};
  if (record.generation === input.source.generation) {
    const destination = await requireLiveProcess(config, vmId, input.destination, 'destination');
    const binary = allowedBinary(config, input.destination.label);
    // Keep the old process findable by generation, so a retry after a crash can still stop it.
    await rememberProcess(config, vmId, record.generation, record.binary.label, record.pid);
    await writeVmRecord(
      config.runtimeDir,
      {
        ...record,
        // A re-created tap is the VM's interface from now on.
        spec: {
          ...record.spec,
          netdevs: record.spec.netdevs.map((n) => (recreated[n.id] ? { ...n, ifname: recreated[n.id] } : n)),
        },
        pid: destination.pid,
        qmpSocket: destination.qmpSocket,
        binary: { label: binary.label, path: binary.path },
        generation: input.destination.generation,
        startedAt: new Date().toISOString(),
        logFile: record.logFile?.replace(
          /\.\d+\.(source|destination)\.log$/,
          `.${input.destination.generation}.destination.log`,
        ),
      },
      { expectGeneration: record.generation },
    );
  } else if (record.generation !== input.destination.generation) {
    throw ApplicationFailure.nonRetryable(
      `VM ${vmId} is at generation ${record.generation}, neither ${input.source.generation} nor ${input.destination.generation}`,
      failureTypes.migrationFailed,
    );
  }
  const old = await findProcess(config, vmId, input.source);
  if (old) await stopProcess(config, old);
  // The old taps of re-created backends, once no process holds them (the record names the new ones).
  for (const id of Object.keys(recreated)) {
    const oldName = record.spec.netdevs.find((n) => n.id === id)?.ifname;
    if (oldName) await deleteTap(config.netns, oldName);
  }
  await forgetProcess(config, vmId, input.source.generation);
  await forgetProcess(config, vmId, input.destination.generation);
  await removeLeftovers(config, vmId, input.destination.generation);
}

/**
 * Undoes an upgrade that cannot go on, as the recovery table (workflows/decisions/recovery.ts) decides from what
 * both QEMUs report now: before the destination ever ran, the source resumes and the destination goes; once it
 * may have run, it is never killed — it becomes the VM's process when it holds the newest state, and otherwise
 * both processes are kept and the record says that an operator must decide.
 */
export async function rollback(
  config: HostConfig,
  input: Parameters<HostActivities['rollback']>[0],
): Promise<RollbackOutcome> {
  const { vmId } = input;
  refuseUnsafeInput(vmId, input.source, input.destination);
  refuseGenerations(input.source, input.destination);
  const actions: string[] = [];
  const record = await readVmRecord(config.runtimeDir, vmId);
  if (record?.generation === input.destination.generation) {
    return { runningIn: input.destination, actions: ['the destination was already finalized'] };
  }
  const source = await findProcess(config, vmId, input.source);
  const destination = await findProcess(config, vmId, input.destination);
  const facts: RecoveryFacts = {
    finalized: false,
    mayHaveRun: destinationMayHaveRun(config, vmId, input.destination.generation),
    source: await settleSource(config, source, actions),
    destination: await destinationState(config, destination),
  };
  const action = recoveryAction(facts);
  switch (action.kind) {
    case 'already-finalized':
      return { runningIn: input.destination, actions };
    case 'keep-destination':
      await finalize(config, input);
      return {
        runningIn: input.destination,
        actions: [...actions, 'the destination runs the guest: kept it and finalized'],
      };
    case 'resume-destination': {
      writeFileSync(resumeMarker(config, vmId, input.destination.generation), new Date().toISOString(), {
        mode: 0o600,
      });
      await withQmp(config, destination!, (qmp) => qmp.execute('cont'));
      await finalize(config, input);
      return {
        runningIn: input.destination,
        actions: [
          ...actions,
          'the destination held the whole state and the source had stopped: resumed the destination and finalized',
        ],
      };
    }
    case 'retry':
    case 'resume-source':
    case 'lost': {
      if (action.kind === 'retry' && !action.dropDestination) {
        // Retryable: the monitor may come back. Until then nobody can tell whether the guest runs there.
        throw new Error(`${action.why} (pid ${source?.pid})`);
      }
      // The destination never ran: it holds nothing that is not (or was not) in the source.
      if (destination && isAlive(destination)) {
        await killQemu(destination.pid, { graceMs: 0, expectArg: destination.qmpSocket });
        actions.push(`killed the destination (pid ${destination.pid}), which never ran`);
      }
      await forgetProcess(config, vmId, input.destination.generation);
      if (record) {
        for (const name of Object.values(await recreatedTaps(config, record.spec, input.destination.generation))) {
          await deleteTap(config.netns, name);
          actions.push(`deleted the re-created tap ${name}`);
        }
      }
      await removeLeftovers(config, vmId, input.destination.generation);
      if (action.kind === 'lost') return { runningIn: null, actions: [...actions, action.why] };
      if (action.kind === 'retry') throw new Error(`${action.why} (pid ${source?.pid})`);
      const resumed = await withQmp(config, source!, async (qmp) => {
        if ((await statusOf(qmp)).running) return false;
        await qmp.execute('cont');
        return true;
      });
      if (resumed) actions.push('resumed the source');
      return { runningIn: input.source, actions };
    }
    case 'operator': {
      const kept = [source, destination].filter((p): p is VmProcess => p !== undefined && isAlive(p));
      if (record) {
        await writeVmRecord(
          config.runtimeDir,
          {
            ...record,
            attention: {
              reason: action.why,
              since: new Date().toISOString(),
              processes: kept.map((p) => ({
                generation: p.generation,
                label: p.label,
                pid: p.pid,
                qmpSocket: p.qmpSocket,
              })),
            },
          },
          { expectGeneration: record.generation },
        );
      }
      const which = kept.map((p) => `generation ${p.generation} (QEMU ${p.label}, pid ${p.pid})`).join(' and ');
      throw ApplicationFailure.nonRetryable(
        `an operator must decide: ${action.why}. Kept ${which || 'no live process'}; check which holds the guest, ` +
          `then run \`fleet-upgrade vm resolve --config <host config> --vm ${vmId} --keep <generation>\``,
        failureTypes.needsOperator,
      );
    }
  }
}

const settled = ['completed', 'failed', 'cancelled', 'none'];

/** Cancels an outgoing migration still in flight, then reads where the source is. */
async function settleSource(config: HostConfig, p: VmProcess | undefined, actions: string[]): Promise<SourceState> {
  if (!p || !isAlive(p)) return 'gone';
  try {
    return await withQmp(config, p, async (qmp) => {
      const info = (await qmp.execute('query-migrate')) as { status?: string };
      if (info.status && !settled.includes(info.status)) {
        await qmp.execute('migrate_cancel');
        actions.push('cancelled the migration on the source');
        await waitUntilSettled(qmp);
      }
      return (await statusOf(qmp)).running ? 'running' : 'stopped';
    });
  } catch {
    return isAlive(p) ? 'unreachable' : 'gone';
  }
}

/** What the destination is now, as its monitor says (never guessed from a failed question). */
async function destinationState(config: HostConfig, p: VmProcess | undefined): Promise<DestinationState> {
  if (!p || !isAlive(p)) return 'gone';
  try {
    return await withQmp(config, p, async (qmp) => {
      const [state, info] = await Promise.all([
        statusOf(qmp),
        qmp.execute('query-migrate') as Promise<{ status?: string }>,
      ]);
      if (state.running) return 'running';
      if (state.status === 'inmigrate') return 'incomplete';
      if (state.status === 'paused' || state.status === 'prelaunch') {
        return info.status === 'completed' ? 'holds-completed' : 'incomplete';
      }
      return 'stopped';
    });
  } catch {
    return isAlive(p) ? 'unreachable' : 'gone';
  }
}

/** The taps made for the destination of `generation` (see destination.ts), by netdev id. */
async function recreatedTaps(config: HostConfig, spec: VmSpec, generation: number): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const n of spec.netdevs) {
    if (n.type !== 'tap' || !n.bridge) continue;
    const name = recreatedTapName(spec.id, n.id, generation);
    if (await tapExists(config.netns, name)) out[n.id] = name;
  }
  return out;
}

async function waitUntilSettled(qmp: QmpClient): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const info = (await qmp.execute('query-migrate')) as { status?: string };
    if (!info.status || settled.includes(info.status)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}
