// Guest RAM copied through the migration stream vs shared by both QEMU processes (memfd share=on,
// `x-ignore-shared`): one real 7.2 → 10.0.2 upgrade through the saga per RAM size and mode.
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import { killAllWith, realQemuHost, silent } from './real-qemu';
import { launchVm } from '../../activities/host/vm-launch';
import { parseVmSpec } from '../../activities/host/vm-spec';
import type { RamMode } from '../../workflows/decisions/plan';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { createHostWorker } from '../../workers/host-worker';
import { createOrchestratorWorker, orchestratorTaskQueue, workflowsPath } from '../../workers/orchestrator-worker';
import { connectClient } from '../../workers/temporal-connection';
import { writeCounterGuest } from '../guest/counter-guest';
import { startDevServer } from '../devserver';
import { qemu10, qemu72, requireQemu } from '../real-parts';

export interface RamModeFigures {
  ramMiB: number;
  mode: RamMode;
  migrationMs: number;
  /** As the source QEMU reports it; null when it reports none. */
  downtimeMs: number | null;
  streamedBytes: number;
  sagaWallMs: number;
}

export const RAM_SIZES_MIB = [64, 1024, 4096] as const;
export const RAM_MODES: readonly RamMode[] = ['copied', 'shared'];

/** The goal for shared RAM: what the largest guest may cost at most. */
export const SHARED_GOAL = { migrationMs: 50, streamedBytes: 1024 * 1024, downtimeMs: 10 } as const;

/** Whether the shared rows meet the goal: the largest guest within the limits, and flat in RAM size. */
export function sharedGoalMet(rows: RamModeFigures[]): boolean {
  const shared = rows.filter((r) => r.mode === 'shared').sort((a, b) => a.ramMiB - b.ramMiB);
  const largest = shared[shared.length - 1];
  if (!largest || largest.ramMiB < 4096) return false;
  return shared.every(
    (r) =>
      r.migrationMs <= SHARED_GOAL.migrationMs &&
      r.streamedBytes <= SHARED_GOAL.streamedBytes &&
      r.downtimeMs !== null &&
      r.downtimeMs <= SHARED_GOAL.downtimeMs,
  );
}

export async function runRamModesBench(say: (s: string) => void = () => undefined): Promise<RamModeFigures[]> {
  requireQemu(qemu72);
  requireQemu(qemu10);
  try {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
  } catch {
    /* installed already by the caller */
  }
  const base = mkdtempSync('/tmp/fu-bench-ram-');
  const workers: { w: Worker; done: Promise<void> }[] = [];
  let server: Awaited<ReturnType<typeof startDevServer>> | undefined;
  let connection: Awaited<ReturnType<typeof connectClient>> | undefined;
  try {
    server = await startDevServer({
      headless: true,
      searchAttributes: searchAttributeTypes,
      dbFile: path.join(base, 't.db'),
    });
    const settings = { address: server.address, namespace: server.namespace };
    const config = realQemuHost(base, 'bench-ram');
    connection = await connectClient(settings);
    const bundle = await bundleWorkflowCode({ workflowsPath: workflowsPath(), logger: silent });
    for (const w of [await createOrchestratorWorker(settings, bundle), await createHostWorker(config, settings)]) {
      workers.push({ w, done: w.run() });
    }
    const client = new Client({ connection, namespace: settings.namespace });
    const rows: RamModeFigures[] = [];
    // The first upgrade warms the workers and QEMU up (caches, JIT) and is not counted, as in real-qemu.ts.
    const cases = [
      { ramMiB: 64, mode: 'shared' as RamMode, warmUp: true },
      ...RAM_SIZES_MIB.flatMap((ramMiB) => RAM_MODES.map((mode) => ({ ramMiB, mode, warmUp: false }))),
    ];
    for (const { ramMiB, mode, warmUp } of cases) {
      const id = `ram-${ramMiB}-${mode}${warmUp ? '-warm' : ''}`;
      const disk = writeCounterGuest(path.join(config.runtimeDir, `${id}.img`));
      const spec = parseVmSpec({
        id,
        binary: '7.2',
        machine: 'pc-i440fx-7.2',
        accel: 'tcg',
        memoryMiB: ramMiB,
        memoryBackend: 'memfd',
        memoryShared: mode === 'shared',
        drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
      });
      await launchVm({ config, spec });
      await new Promise((r) => setTimeout(r, 200));
      const t0 = performance.now();
      const handle = await client.workflow.start('upgradeVm', {
        taskQueue: orchestratorTaskQueue,
        workflowId: `bench/${id}`,
        args: [{ hostId: config.hostId, vmId: id, target: '10.0.2' }],
      });
      const r = (await handle.result()) as UpgradeVmResult;
      const sagaWallMs = performance.now() - t0;
      if (r.outcome !== 'upgraded') throw new Error(`ram bench upgrade of ${id}: ${r.outcome} ${r.reason ?? ''}`);
      if (r.ram !== mode) {
        throw new Error(`ram bench upgrade of ${id}: RAM was ${r.ram ?? 'not reported'}, meant to be ${mode}`);
      }
      if (!r.migration) throw new Error(`ram bench upgrade of ${id}: no migration figures in the result`);
      const row: RamModeFigures = {
        ramMiB,
        mode,
        migrationMs: r.migration.totalTimeMs,
        downtimeMs: r.migration.downtimeMs,
        streamedBytes: r.migration.transferredBytes,
        sagaWallMs,
      };
      if (!warmUp) rows.push(row);
      say(
        `${warmUp ? '(warm-up) ' : ''}` +
          `${ramMiB} MiB ${mode}: migration ${row.migrationMs} ms, downtime ${row.downtimeMs ?? 'n/a'} ms, ` +
          `streamed ${row.streamedBytes} B, saga ${sagaWallMs.toFixed(0)} ms`,
      );
      // The upgraded VM holds its RAM until killed: do not keep 4 GiB guests around for the next row.
      killAllWith(`${path.sep}${id}.`, base);
    }
    return rows;
  } finally {
    for (const { w } of workers) w.shutdown();
    await Promise.allSettled(workers.map((x) => x.done));
    await connection?.close();
    await server?.stop();
    killAllWith(base);
    rmSync(base, { recursive: true, force: true });
  }
}
