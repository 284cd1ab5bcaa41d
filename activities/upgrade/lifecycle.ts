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
import { readVmRecord, writeVmRecord } from '../host/vm-record';
import type { QmpClient } from '../qmp/client';
import type { HostActivities, ProcessRef, RollbackOutcome, Verification } from './api';
import { destinationMayHaveRun, resumeMarker } from './migrate';
import {
  allowedBinary,
  findProcess,
  forgetProcess,
  isAlive,
  refuseUnsafeInput,
  rememberProcess,
  requireLiveProcess,
  requireRecord,
  withQmp,
  type VmProcess,
} from './processes';

const statusSchema = z.object({ status: z.string(), running: z.boolean() });
const qomListSchema = z.array(z.object({ name: z.string(), type: z.string() }));

async function statusOf(qmp: QmpClient) {
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
  const record = await requireRecord(config, vmId);
  if (record.generation === input.source.generation) {
    const destination = await requireLiveProcess(config, vmId, input.destination, 'destination');
    const binary = allowedBinary(config, input.destination.label);
    // Keep the old process findable by generation, so a retry after a crash can still stop it.
    await rememberProcess(config, vmId, record.generation, record.binary.label, record.pid);
    const recreated = await recreatedTaps(config, record.spec, input.destination.generation);
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
  if (record.generation === input.source.generation) {
    const recreated = await recreatedTaps(config, record.spec, input.destination.generation);
    for (const id of Object.keys(recreated)) {
      const oldName = record.spec.netdevs.find((n) => n.id === id)?.ifname;
      if (oldName) await deleteTap(config.netns, oldName);
    }
  }
  await forgetProcess(config, vmId, input.source.generation);
  await forgetProcess(config, vmId, input.destination.generation);
  await removeLeftovers(config, vmId, input.destination.generation);
}

/**
 * Before the destination ever ran: cancel any migration, kill the destination, resume the source.
 * A destination that did run is kept (and finalized); a source whose state may be stale is never resumed.
 */
export async function rollback(
  config: HostConfig,
  input: Parameters<HostActivities['rollback']>[0],
): Promise<RollbackOutcome> {
  const { vmId } = input;
  refuseUnsafeInput(vmId, input.source, input.destination);
  const actions: string[] = [];
  const record = await readVmRecord(config.runtimeDir, vmId);
  if (record?.generation === input.destination.generation) {
    return { runningIn: input.destination, actions: ['the destination was already finalized'] };
  }
  const source = await findProcess(config, vmId, input.source);
  const destination = await findProcess(config, vmId, input.destination);
  const sourceAlive = source !== undefined && isAlive(source);
  const destinationAlive = destination !== undefined && isAlive(destination);

  // A source whose monitor does not answer can be neither cancelled nor resumed from here; the destination
  // is still dealt with below (kept if it runs the guest, killed if it never did), so the VM is not left
  // with a second process, and the failure is reported afterwards.
  let sourceUnreachable: unknown;
  if (sourceAlive) {
    try {
      await withQmp(config, source, async (qmp) => {
        const info = (await qmp.execute('query-migrate')) as { status?: string };
        if (info.status && !['completed', 'failed', 'cancelled', 'none'].includes(info.status)) {
          await qmp.execute('migrate_cancel');
          actions.push('cancelled the migration on the source');
          await waitUntilSettled(qmp);
        }
      });
    } catch (err) {
      sourceUnreachable = err;
    }
  }

  if (destinationAlive) {
    const running = await withQmp(config, destination, async (qmp) => (await statusOf(qmp)).running).catch(() => false);
    if (running) {
      await finalize(config, input);
      return {
        runningIn: input.destination,
        actions: [...actions, 'the destination already runs the guest: kept it and finalized'],
      };
    }
  }
  if (!sourceAlive && destination && destinationAlive && (await holdsCompletedMigration(config, destination))) {
    // The source died after the destination had received everything: the destination holds the latest
    // state and nothing ran since, so it is resumed rather than the VM lost.
    writeFileSync(resumeMarker(config, vmId, input.destination.generation), new Date().toISOString(), { mode: 0o600 });
    await withQmp(config, destination, (qmp) => qmp.execute('cont'));
    await finalize(config, input);
    return {
      runningIn: input.destination,
      actions: [...actions, 'the source died after the migration completed: resumed the destination and finalized'],
    };
  }
  const ran = destinationMayHaveRun(config, vmId, input.destination.generation);
  if (destination && destinationAlive) {
    await killQemu(destination.pid, { graceMs: 0, expectArg: destination.qmpSocket });
    actions.push(`killed the destination (pid ${destination.pid})`);
  }
  await forgetProcess(config, vmId, input.destination.generation);
  if (record) {
    for (const name of Object.values(await recreatedTaps(config, record.spec, input.destination.generation))) {
      await deleteTap(config.netns, name);
      actions.push(`deleted the re-created tap ${name}`);
    }
  }

  if (!sourceAlive) {
    actions.push('the source QEMU is gone: the VM is not running');
    return { runningIn: null, actions };
  }
  if (ran) {
    throw ApplicationFailure.nonRetryable(
      `the destination of ${vmId} may have run the guest before it died; the source's state is stale and was left paused`,
      failureTypes.staleSource,
    );
  }
  if (sourceUnreachable !== undefined) {
    // Retryable: the monitor may come back. Until then nobody can tell whether the guest runs there.
    throw new Error(
      `the source QEMU (pid ${source?.pid}) does not answer its monitor, so the VM may not be running: ${(sourceUnreachable as Error).message}`,
    );
  }
  const resumed = await withQmp(config, source, async (qmp) => {
    const state = await statusOf(qmp);
    if (state.running) return false;
    await qmp.execute('cont');
    return true;
  });
  if (resumed) actions.push('resumed the source');
  await removeLeftovers(config, vmId, input.destination.generation);
  return { runningIn: input.source as ProcessRef, actions };
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

/** A paused destination whose incoming migration completed. */
async function holdsCompletedMigration(config: HostConfig, destination: VmProcess): Promise<boolean> {
  try {
    return await withQmp(config, destination, async (qmp) => {
      const [state, info] = await Promise.all([
        statusOf(qmp),
        qmp.execute('query-migrate') as Promise<{ status?: string }>,
      ]);
      return !state.running && info.status === 'completed';
    });
  } catch {
    return false;
  }
}

async function waitUntilSettled(qmp: QmpClient): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const info = (await qmp.execute('query-migrate')) as { status?: string };
    if (!info.status || ['completed', 'failed', 'cancelled', 'none'].includes(info.status)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}
