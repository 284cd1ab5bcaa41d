// The saga's steps grouped into one activity each where no decision of the workflow falls between them:
// inspect with probe (both only read), start-destination with migrate (the destination is started for this
// migration only), verify with finalize (finalize only follows a verification that passed). Each group is a
// round trip through the Temporal service fewer, and a retry of a group is safe because each of its steps
// reconciles with what QEMU and the VM's record report: a destination already waiting is kept, a migration
// already done is not repeated, a record already rewritten is only cleaned up after.
import { ApplicationFailure } from '@temporalio/common';
import { agreedTransferList } from '../../workflows/decisions/plan';
import { failureTypes, retryableFailureTypes } from '../../workflows/failures';
import type { HostConfig } from '../host/config';
import { QmpTimeoutError } from '../qmp/errors';
import type {
  DestinationStarted,
  HostActivities,
  InspectedAndProbed,
  StartedAndMigrated,
  VerifiedAndFinalized,
} from './api';
import { finalize } from './finalize';
import { inspectSource } from './inspect-source';
import { migrate, type ActivitySide } from './migrate';
import { outgoingMigration } from './migration-state';
import { findProcess, isAlive, refuseGenerations, refuseUnsafeInput, withQmp } from './processes';
import { probeTarget } from './probe-target';
import { startDestination } from './start-destination';
import { verify } from './verify';

/**
 * Steps 1–2. A source whose monitor does not answer is asked once more (`attempt` 1), then the step fails
 * without waiting out the timeout three more times: nothing was touched, and the VM is left as it runs.
 */
export async function inspectAndProbe(
  config: HostConfig,
  input: Parameters<HostActivities['inspectAndProbe']>[0],
  attempt: number,
): Promise<InspectedAndProbed> {
  const inspected = inspectSource(config, { vmId: input.vmId }).catch((err: unknown) => {
    if (attempt < 2 || !(err instanceof QmpTimeoutError)) throw err;
    throw ApplicationFailure.nonRetryable(err.message, failureTypes.monitorUnresponsive);
  });
  const [source, target] = await Promise.all([inspected, probeTarget(config, { label: input.label })]);
  return { source, target };
}

export async function startAndMigrate(
  config: HostConfig,
  input: Parameters<HostActivities['startAndMigrate']>[0],
  side: ActivitySide,
): Promise<StartedAndMigrated> {
  const t0 = performance.now();
  const { vmId, source, destination, plan } = input;
  // Before anything reads a path made of them (each step checks again).
  refuseUnsafeInput(vmId, source, destination);
  refuseGenerations(source, destination);
  // A retry once the migration began (a worker lost, a switchover that failed): the destination holds what
  // the source sent, and may have run. It is never started again (that would end it): migrate reconciles.
  if (await migrationBegan(config, input)) {
    const resumed: DestinationStarted = { process: destination, transferable: null };
    return { kind: 'migrated', destination: resumed, migration: await migrate(config, input, side), startMs: 0 };
  }
  // The destination's launch heartbeats like any step (the migration heartbeats its progress after).
  const starting = { status: 'starting-destination', transferredBytes: 0, remainingBytes: 0, totalBytes: 0 };
  const beat = setInterval(() => side.heartbeat(starting), 3_000);
  const started = await startDestination(config, { vmId, source, destination, plan }).finally(() =>
    clearInterval(beat),
  );
  if (started.transferable !== null) {
    const agreed = agreedTransferList(plan, started.transferable);
    if (agreed.join('\n') !== plan.transferBackends.join('\n')) return { kind: 'narrowed', transferable: agreed };
  }
  const startMs = performance.now() - t0;
  const migration = await migrate(config, input, side);
  return { kind: 'migrated', destination: started, migration, startMs };
}

/** Whether an earlier attempt left a live destination that the source is migrating, or migrated, into. */
async function migrationBegan(config: HostConfig, input: Parameters<HostActivities['migrate']>[0]): Promise<boolean> {
  const destination = await findProcess(config, input.vmId, input.destination);
  if (!destination || !isAlive(destination)) return false;
  const source = await findProcess(config, input.vmId, input.source);
  if (!source || !isAlive(source)) return false;
  return (await withQmp(config, source, outgoingMigration)).begun;
}

/** Failures the workflow handles itself are not retried; FinalizeFailed keeps that of the failure it wraps. */
const handled = new Set<string>(Object.values(failureTypes));

export async function verifyAndFinalize(
  config: HostConfig,
  input: Parameters<HostActivities['verifyAndFinalize']>[0],
): Promise<VerifiedAndFinalized> {
  const t0 = performance.now();
  const { vmId, source, destination, expectVersion } = input;
  refuseUnsafeInput(vmId, source, destination);
  refuseGenerations(source, destination);
  const verification = await verify(config, { vmId, destination, expectVersion });
  const verifyMs = performance.now() - t0;
  try {
    await finalize(config, { vmId, source, destination });
  } catch (err) {
    // The workflow tells a failure of finalize (the destination verified) from one of verify by this type;
    // the wrapped failure stays the cause, with its own type and words.
    const final = err instanceof ApplicationFailure && (err.nonRetryable || handled.has(err.type ?? ''));
    throw ApplicationFailure.create({
      type: retryableFailureTypes.finalizeFailed,
      message: `finalize of ${vmId} failed`,
      nonRetryable: final,
      cause: err instanceof Error ? err : new Error(String(err)),
    });
  }
  return { verification, verifyMs };
}
