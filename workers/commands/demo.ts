// `fleet-upgrade demo`: the whole product on an embedded default. A Temporal dev server (unless
// TEMPORAL_ADDRESS is set), the orchestrator worker, one host worker per local host, VMs on real QEMU 7.2
// running the counter guest, each upgraded to 10.0.2 through upgradeVm; a table at the end; cleanup.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import { parseHostConfig, type HostConfig } from '../../activities/host/config';
import { killQemu } from '../../activities/host/qemu-launcher';
import { listVmRecords, readVmRecord } from '../../activities/host/vm-record';
import { launchVm } from '../../activities/host/vm-launch';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { QmpClient } from '../../activities/qmp/client';
import { parseCounter, writeCounterGuest } from '../../infra/counter-guest';
import { startDevServer, type DevServer } from '../../infra/devserver';
import { qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import type { UpgradeVmResult } from '../../workflows/upgrade-vm';
import { hostKey, searchAttributeTypes, targetKey, vmKey } from '../../workflows/search-attributes';
import { createHostWorker } from '../host-worker';
import { createOrchestratorWorker, orchestratorTaskQueue } from '../orchestrator-worker';
import { connectClient, settingsFromEnv, type TemporalSettings } from '../temporal-connection';
import { upgradeWorkflowId } from './vm';

export interface DemoOptions {
  hosts: number;
  vmsPerHost: number;
  keep: boolean;
  runtimeDir?: string;
  json: boolean;
}

interface Row {
  host: string;
  vm: string;
  result: UpgradeVmResult;
  counterBefore: number;
  counterAfter: number;
}

async function readCounter(qmpSocket: string): Promise<number> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    return parseCounter(String(await qmp.execute('human-monitor-command', { 'command-line': 'x /1wx 0x7e00' })));
  } finally {
    await qmp.close();
  }
}

export async function runDemo(o: DemoOptions, say: (line: string) => void): Promise<{ summary: object; ok: boolean }> {
  const started = Date.now();
  requireQemu(qemu72);
  requireQemu(qemu10);
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const base = o.runtimeDir ? path.resolve(o.runtimeDir) : mkdtempSync('/tmp/fu-demo-');
  let server: DevServer | undefined;
  const workers: { worker: Worker; done: Promise<void> }[] = [];
  const configs: HostConfig[] = [];
  let connection: Awaited<ReturnType<typeof connectClient>> | undefined;
  try {
    let settings: TemporalSettings;
    if (process.env.TEMPORAL_ADDRESS) {
      settings = settingsFromEnv();
      say(`Temporal at ${settings.address} (TEMPORAL_ADDRESS)`);
    } else {
      server = await startDevServer({ searchAttributes: searchAttributeTypes, dbFile: path.join(base, 'temporal.db') });
      settings = { address: server.address, namespace: server.namespace };
      say(`Temporal dev server at ${server.address}; Web UI ${server.uiAddress}`);
    }
    const orchestrator = await createOrchestratorWorker(settings);
    workers.push({ worker: orchestrator, done: orchestrator.run() });
    for (let h = 1; h <= o.hosts; h++) {
      const config = parseHostConfig({
        hostId: `demo-host-${h}`,
        runtimeDir: path.join(base, `h${h}`),
        binaries: {
          '7.2': { path: qemu72.binary, dataDirs: qemu72.dataDirs },
          '10.0.2': { path: qemu10.binary, dataDirs: qemu10.dataDirs },
        },
      });
      configs.push(config);
      mkdirSync(config.runtimeDir, { recursive: true, mode: 0o700 });
      const w = await createHostWorker(config, settings);
      workers.push({ worker: w, done: w.run() });
      for (let v = 1; v <= o.vmsPerHost; v++) {
        const disk = writeCounterGuest(path.join(config.runtimeDir, `vm${v}.img`));
        const spec = parseVmSpec({
          id: `vm${v}`,
          binary: '7.2',
          machine: 'pc-i440fx-7.2',
          accel: 'tcg',
          memoryMiB: 64,
          drives: [{ id: 'disk0', file: disk, format: 'raw', interface: 'ide' }],
        });
        const r = await launchVm({ config, spec });
        say(`launched ${config.hostId}/${r.id} on QEMU 7.2 (pid ${r.pid})`);
      }
    }
    connection = await connectClient(settings);
    const client = new Client({ connection, namespace: settings.namespace });

    // Hosts in parallel, VMs of one host one at a time.
    const rows: Row[] = [];
    await Promise.all(
      configs.map(async (config) => {
        for (const record of await listVmRecords(config.runtimeDir)) {
          const counterBefore = await readCounter(record.qmpSocket);
          const handle = await client.workflow.start('upgradeVm', {
            taskQueue: orchestratorTaskQueue,
            workflowId: upgradeWorkflowId(config.hostId, record.id),
            workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
            args: [{ hostId: config.hostId, vmId: record.id, target: '10.0.2' }],
            typedSearchAttributes: [
              { key: hostKey, value: config.hostId },
              { key: vmKey, value: record.id },
              { key: targetKey, value: '10.0.2' },
            ],
          });
          const result = (await handle.result()) as UpgradeVmResult;
          const now = await readVmRecord(config.runtimeDir, record.id);
          const counterAfter = now ? await readCounter(now.qmpSocket) : -1;
          rows.push({ host: config.hostId, vm: record.id, result, counterBefore, counterAfter });
          say(
            `${config.hostId}/${record.id}: ${result.outcome} ${result.from?.label} → ${result.to?.label} ` +
              `(${result.strategy}, guest pause ${result.migration?.guestPauseMs?.toFixed(1) ?? '?'} ms)`,
          );
        }
      }),
    );
    rows.sort((a, b) => `${a.host}/${a.vm}`.localeCompare(`${b.host}/${b.vm}`));
    const table = rows.map((r) => ({
      vm: `${r.host}/${r.vm}`,
      outcome: r.result.outcome,
      strategy: r.result.strategy ?? '-',
      totalMs: r.result.migration?.totalTimeMs ?? null,
      downtimeMs: r.result.migration?.downtimeMs ?? null,
      guestPauseMs: round(r.result.migration?.guestPauseMs),
      switchoverGapMs: round(r.result.migration?.switchoverGapMs),
      counter: `${r.counterBefore} → ${r.counterAfter}`,
    }));
    if (!o.json) console.table(table);
    if (server) say(`Web UI: ${server.uiAddress}/namespaces/${settings.namespace}/workflows`);
    const count = (outcome: string) => rows.filter((r) => r.result.outcome === outcome).length;
    const strategies: Record<string, number> = {};
    for (const r of rows)
      if (r.result.strategy) strategies[r.result.strategy] = (strategies[r.result.strategy] ?? 0) + 1;
    const upgraded = count('upgraded');
    const summary = {
      state: upgraded === rows.length ? 'completed' : 'failed',
      vms: rows.length,
      upgraded,
      rolledBack: count('rolled-back'),
      failed: rows.length - upgraded - count('rolled-back'),
      strategies,
      durationMs: Date.now() - started,
    };
    return { summary, ok: upgraded === rows.length && rows.every((r) => r.counterAfter > r.counterBefore) };
  } finally {
    await connection?.close();
    for (const { worker } of workers) worker.shutdown();
    await Promise.allSettled(workers.map((w) => w.done));
    if (!o.keep) {
      for (const config of configs) {
        for (const r of await listVmRecords(config.runtimeDir).catch(() => [])) {
          await killQemu(r.pid, { graceMs: 1000, expectArg: r.qmpSocket });
        }
      }
    }
    await server?.stop();
    if (!o.keep && !o.runtimeDir) rmSync(base, { recursive: true, force: true });
  }
}

function round(ms: number | null | undefined): number | null {
  return ms === null || ms === undefined ? null : Math.round(ms * 10) / 10;
}
