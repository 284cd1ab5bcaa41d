// The activities of a host worker, bound to its config. Each is safe to retry: it reconciles first.
import { Context } from '@temporalio/activity';
import { messageNames } from '../../workflows/names';
import type { HostConfig } from '../host/config';
import type { HostActivities, MigrationProgress } from './api';
import { startDestination } from './start-destination';
import { inspectSource } from './inspect-source';
import { probeTarget } from './probe-target';
import { describeHost, inventoryVms, listVms } from './inventory';
import { finalize } from './finalize';
import { rollback } from './rollback';
import { verify } from './verify';
import { migrate, type ActivitySide } from './migrate';
import { inspectAndProbe, startAndMigrate, verifyAndFinalize } from './grouped-steps';

export function createHostActivities(config: HostConfig): HostActivities {
  const migrations = new Slots(config.limits.maxConcurrentMigrations);
  return {
    inspectSource: (input) => beating(() => inspectSource(config, input)),
    probeTarget: (input) => beating(() => probeTarget(config, input)),
    startDestination: (input) => beating(() => startDestination(config, input)),
    migrate: (input) => holdingSlot(migrations, (side) => migrate(config, input, side), input.progressWorkflowId),
    verify: (input) => beating(() => verify(config, input)),
    finalize: (input) => beating(() => finalize(config, input)),
    rollback: (input) => beating(() => rollback(config, input)),
    inspectAndProbe: (input) => beating(() => inspectAndProbe(config, input, Context.current().info.attempt)),
    // The slot is taken before the destination starts: no more destinations wait than may migrate.
    startAndMigrate: (input) =>
      holdingSlot(migrations, (side) => startAndMigrate(config, input, side), input.progressWorkflowId),
    verifyAndFinalize: (input) => beating(() => verifyAndFinalize(config, input)),
    listVms: () => listVms(config),
    describeHost: async () => describeHost(config),
    inventoryVms: () => inventoryVms(config),
  };
}

/**
 * Runs a migration holding one of the host's slots (limits.maxConcurrentMigrations): a migration waiting for
 * one heartbeats all along, and its progress goes to the heartbeat and, when asked, to the workflow.
 */
async function holdingSlot<T>(
  migrations: Slots,
  run: (side: ActivitySide) => Promise<T>,
  progressWorkflowId: string | undefined,
): Promise<T> {
  const ctx = Context.current();
  const waiting = { status: 'queued', transferredBytes: 0, remainingBytes: 0, totalBytes: 0 };
  await migrations.acquire(() => ctx.heartbeat(waiting), ctx.cancelled);
  try {
    return await run({
      heartbeat: (progress) => ctx.heartbeat(progress),
      cancelled: ctx.cancelled,
      // A worker that stops leaves the migration running in QEMU; the retry on the next worker awaits it.
      keepMigrationOnCancel: () => ctx.cancellationDetails?.workerShutdown === true,
      ...(progressWorkflowId
        ? {
            signalProgress: (progress: MigrationProgress) =>
              ctx.client.workflow.getHandle(progressWorkflowId).signal(messageNames.migrationProgressSignal, progress),
          }
        : {}),
    });
  } finally {
    migrations.release();
  }
}

/** How often a step heartbeats; the workflow's heartbeat timeout (15 s) is several of these. */
const BEAT_MS = 3_000;

/**
 * Runs a saga step while heartbeating, so a host worker that dies mid-step is noticed within the heartbeat
 * timeout and the step retried on the next worker, not after the 120 s start-to-close timeout. The step
 * reconciles with what QEMU reports, so the retry continues where the lost attempt stopped.
 */
async function beating<T>(step: () => Promise<T>): Promise<T> {
  const ctx = Context.current();
  // No beat at the start: the heartbeat timeout runs from the step's start, and a step that ends within a
  // beat costs no heartbeat at all (each one the service receives is a write of the activity's state).
  const timer = setInterval(() => ctx.heartbeat(), BEAT_MS);
  try {
    return await step();
  } finally {
    clearInterval(timer);
  }
}

/** A counting semaphore: who waits heartbeats every few seconds, and stops waiting when cancelled. */
export class Slots {
  private used = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private readonly size: number) {}

  async acquire(beat: () => void, cancelled: Promise<never>): Promise<void> {
    while (this.used >= this.size) {
      beat();
      const freed = new Promise<void>((r) => this.waiters.push(r));
      await Promise.race([freed, cancelled, new Promise((r) => setTimeout(r, 5_000))]);
    }
    this.used++;
  }

  release(): void {
    this.used--;
    this.waiters.splice(0).forEach((wake) => wake());
  }
}
