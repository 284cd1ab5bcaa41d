// The saga's compensation: undoes an upgrade that cannot go on, as the recovery table decides from what both
// QEMUs report now. Reads the state afresh on every attempt, so a retry after a crash decides again.
import { ApplicationFailure } from '@temporalio/common';
import { failureTypes } from '../../workflows/failures';
import {
  recoveryAction,
  type DestinationState,
  type RecoveryFacts,
  type SourceState,
} from '../../workflows/decisions/recovery';
import { queryStatus } from '../capabilities/probe';
import type { HostConfig } from '../host/config';
import { killQemu } from '../host/qemu-launcher';
import { deleteTap } from '../host/taps';
import { readVmRecord, writeVmRecord, type VmRecord } from '../host/vm-record';
import type { HostActivities, RollbackOutcome } from './api';
import { finalize, recreatedTaps, removeLeftovers } from './finalize';
import { cancelMigration, inFlight, queryMigrate } from './migration-state';
import {
  findProcess,
  forgetProcess,
  isAlive,
  refuseGenerations,
  refuseUnsafeInput,
  withQmp,
  type VmProcess,
} from './processes';
import { destinationMayHaveRun, markResumed } from './resume-marker';

/**
 * Undoes an upgrade that cannot go on, as the recovery table (workflows/decisions/recovery.ts) decides from what
 * both QEMUs report now: before the destination ever ran, the source resumes and the destination goes; once it
 * may have run, it is never killed — it becomes the VM's process when it holds the newest state, and otherwise
 * both processes are kept and the record says that an operator must decide. A source whose monitor does not
 * answer is retried while the monitor may come back; but when the step that failed had already timed out on it
 * (`sourceSilent`), a second silence leaves the VM to an operator, with the source kept as it is.
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
    sourceSilentBefore: input.sourceSilent === true,
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
      markResumed(config, vmId, input.destination.generation);
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
      await dropDestination(config, input, record, destination, actions);
      if (action.kind === 'lost') return { runningIn: null, actions: [...actions, action.why] };
      if (action.kind === 'retry') throw new Error(`${action.why} (pid ${source?.pid})`);
      const resumed = await withQmp(config, source!, async (qmp) => {
        if ((await queryStatus(qmp)).running) return false;
        await qmp.execute('cont');
        return true;
      });
      if (resumed) actions.push('resumed the source');
      return { runningIn: input.source, actions };
    }
    case 'operator': {
      if (action.dropDestination) await dropDestination(config, input, record, destination, actions);
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
      const check = kept.length > 1 ? 'check which holds the guest' : 'check that it answers and holds the guest';
      throw ApplicationFailure.nonRetryable(
        `an operator must decide: ${action.why}. Kept ${which || 'no live process'}; ${check}, ` +
          `then run \`fleet-upgrade vm resolve --config <host config> --vm ${vmId} --keep <generation>\``,
        failureTypes.needsOperator,
      );
    }
  }
}

/** Removes a destination that never ran: its process, its name in the process table, its taps and files. */
async function dropDestination(
  config: HostConfig,
  input: Parameters<HostActivities['rollback']>[0],
  record: VmRecord | undefined,
  destination: VmProcess | undefined,
  actions: string[],
): Promise<void> {
  const { vmId } = input;
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
}

/** Cancels an outgoing migration still in flight, then reads where the source is. */
async function settleSource(config: HostConfig, p: VmProcess | undefined, actions: string[]): Promise<SourceState> {
  if (!p || !isAlive(p)) return 'gone';
  try {
    return await withQmp(config, p, async (qmp) => {
      const info = await queryMigrate(qmp);
      if (info.status && inFlight.has(info.status)) {
        await cancelMigration(qmp);
        actions.push('cancelled the migration on the source');
      }
      return (await queryStatus(qmp)).running ? 'running' : 'stopped';
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
      const [state, info] = await Promise.all([queryStatus(qmp), queryMigrate(qmp)]);
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
