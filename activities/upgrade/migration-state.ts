// What QEMU says of a migration (`query-migrate`), and how an outgoing one is cancelled: shared by the
// migrate step, which cancels on a stall or a deadline, and the rollback, which cancels what is left.
import { z } from 'zod';
import { queryStatus } from '../capabilities/probe';
import type { QmpClient } from '../qmp/client';

const migrateInfoSchema = z
  .object({
    status: z.string().optional(),
    'total-time': z.number().optional(),
    downtime: z.number().optional(),
    'error-desc': z.string().optional(),
    ram: z.object({ transferred: z.number(), remaining: z.number(), total: z.number() }).partial().optional(),
  })
  .passthrough();
export type MigrateInfo = z.infer<typeof migrateInfoSchema>;

/** Statuses of a migration still under way (QEMU's MigrationStatus). */
export const inFlight: ReadonlySet<string> = new Set([
  'setup',
  'active',
  'pre-switchover',
  'device',
  'postcopy-active',
  'wait-unplug',
  'cancelling',
]);

export async function queryMigrate(qmp: QmpClient): Promise<MigrateInfo> {
  return migrateInfoSchema.parse(await qmp.execute('query-migrate'));
}

/**
 * What the source says of its outgoing migration, and whether one of ours began: under way, or its state sent
 * away. `completed` is also what a process reports after it *received* a migration (a VM migrating back
 * starts from the destination of the way there): only a source that sent its state away (postmigrate)
 * completed an outgoing one.
 */
export async function outgoingMigration(src: QmpClient): Promise<{ info: MigrateInfo; begun: boolean }> {
  const info = await queryMigrate(src);
  const status = info.status ?? 'none';
  if (inFlight.has(status)) return { info, begun: true };
  const sentAway = status === 'completed' && (await queryStatus(src)).status === 'postmigrate';
  return { info, begun: sentAway };
}

/** `migrate_cancel`, then wait (up to 10 s) until the source is no longer migrating. */
export async function cancelMigration(src: QmpClient): Promise<void> {
  try {
    await src.execute('migrate_cancel');
    for (let i = 0; i < 200; i++) {
      const s = (await queryMigrate(src)).status ?? 'none';
      if (!inFlight.has(s)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch {
    /* the rollback reconciles with whatever state is left */
  }
}
