// The activities of a host worker, bound to its config. Each is safe to retry: it reconciles first.
import { Context } from '@temporalio/activity';
import type { HostConfig } from '../host/config';
import type { HostActivities, MigrationProgress } from './api';
import { startDestination } from './destination';
import { inspectSource, probeTarget } from './inspect';
import { describeHost, inventoryVms, listVms } from './inventory';
import { finalize, rollback, verify } from './lifecycle';
import { migrate } from './migrate';

export function createHostActivities(config: HostConfig): HostActivities {
  const migrations = new Slots(config.limits.maxConcurrentMigrations);
  return {
    inspectSource: (input) => inspectSource(config, input),
    probeTarget: (input) => probeTarget(config, input),
    startDestination: (input) => startDestination(config, input),
    migrate: async (input) => {
      const ctx = Context.current();
      const workflowId = input.progressWorkflowId;
      // At most limits.maxConcurrentMigrations at once on this host; a waiting one heartbeats all along.
      const waiting = { status: 'queued', transferredBytes: 0, remainingBytes: 0, totalBytes: 0 };
      await migrations.acquire(() => ctx.heartbeat(waiting), ctx.cancelled);
      try {
        return await migrate(config, input, {
          heartbeat: (progress) => ctx.heartbeat(progress),
          cancelled: ctx.cancelled,
          // A worker that stops leaves the migration running in QEMU; the retry on the next worker awaits it.
          keepMigrationOnCancel: () => ctx.cancellationDetails?.workerShutdown === true,
          ...(workflowId
            ? {
                signalProgress: (progress: MigrationProgress) =>
                  ctx.client.workflow.getHandle(workflowId).signal('migrationProgress', progress),
              }
            : {}),
        });
      } finally {
        migrations.release();
      }
    },
    verify: (input) => verify(config, input),
    finalize: (input) => finalize(config, input),
    rollback: (input) => rollback(config, input),
    listVms: () => listVms(config),
    describeHost: async () => describeHost(config),
    inventoryVms: () => inventoryVms(config),
  };
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
