// The fleet bench's floor: as many empty upgrades (floor-workflow.ts: the saga's workflow with activities that
// do nothing) through a dev server started as the fleet bench starts its own, the same number at once, hosts
// interleaved. Its CPU per workflow is what the Temporal service and the SDK's workers cost one upgrade of this
// shape on this machine, whatever the upgrade does: the fleet's upgrades/s can go no higher than the cores
// over it. Then the same number again in the on-host shape (its steps local activities of the host's worker),
// through the same server: what that shape would cost instead.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { searchAttributeTypes } from '../../workflows/search-attributes';
import { startDevServer, type DevServer } from '../devserver';
import { createFloorWorkers, startEmptyUpgrade, type FloorShape } from './floor-workers';
import { procCpuSec } from './fleet';
import { silent } from './real-qemu';

export interface FloorFleetFigures {
  shape: FloorShape;
  hosts: number;
  vmsPerHost: number;
  concurrency: number;
  wallSec: number;
  workflowsPerSec: number;
  /** History events of one empty upgrade. */
  eventsPerWorkflow: number;
  /** CPU seconds per workflow: the dev server, and this process (workers and client). */
  devServerCpuMsPerWorkflow: number;
  workersCpuMsPerWorkflow: number;
  /** The rate the CPU allows: cores / CPU seconds per workflow. */
  cpuBoundPerSec: number;
}

export async function runFloorFleet(o: {
  hosts: number;
  vmsPerHost: number;
  concurrency: number;
  say?: (s: string) => void;
}): Promise<FloorFleetFigures[]> {
  const dir = mkdtempSync(path.join('/tmp', 'fu-floor-'));
  const dbDir = process.env.FLEET_BENCH_DB_DIR ?? (existsSync('/dev/shm') ? '/dev/shm' : dir);
  const dbFile = path.join(dbDir, `fu-floor-${process.pid}.db`);
  let server: DevServer | undefined;
  let connection: Connection | undefined;
  let native: NativeConnection | undefined;
  const workers: { w: Worker; done: Promise<void> }[] = [];
  try {
    server = await startDevServer({
      headless: true,
      searchAttributes: searchAttributeTypes,
      dbFile,
      logFile: path.join(dir, 'temporal-dev.log'),
    });
    native = await NativeConnection.connect({ address: server.address });
    for (const w of await createFloorWorkers(native, server.namespace, o.hosts, silent)) {
      workers.push({ w, done: w.run() });
    }
    connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection, namespace: server.namespace });
    const out: FloorFleetFigures[] = [];
    for (const shape of ['orchestrator', 'on-host'] as const) out.push(await emptyFleet(client, server.pid, shape, o));
    return out;
  } finally {
    for (const { w } of workers) w.shutdown();
    await Promise.allSettled(workers.map((x) => x.done));
    await connection?.close().catch(() => undefined);
    await native?.close().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(dbFile + suffix, { force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

/** As many empty upgrades of one shape as the fleet run, as many at once, hosts interleaved. */
async function emptyFleet(
  client: Client,
  serverPid: number,
  shape: FloorShape,
  o: { hosts: number; vmsPerHost: number; concurrency: number; say?: (s: string) => void },
): Promise<FloorFleetFigures> {
  const jobs = Array.from({ length: o.vmsPerHost }, (_, v) =>
    Array.from({ length: o.hosts }, (_, h) => ({ h, id: `floor/${shape}/h${h}-vm${v}` })),
  ).flat();
  const cpu0 = { dev: procCpuSec(serverPid), self: process.cpuUsage() };
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: o.concurrency }, async () => {
      while (next < jobs.length) {
        const { h, id } = jobs[next++]!;
        await (await startEmptyUpgrade(client, id, h, shape)).result();
      }
    }),
  );
  const wallSec = (performance.now() - t0) / 1000;
  const self = process.cpuUsage(cpu0.self);
  const n = jobs.length;
  const devMs = ((procCpuSec(serverPid) - cpu0.dev) * 1000) / n;
  const selfMs = (self.user + self.system) / 1000 / n;
  const history = await client.workflow.getHandle(jobs[0]!.id).fetchHistory();
  const figures: FloorFleetFigures = {
    shape,
    hosts: o.hosts,
    vmsPerHost: o.vmsPerHost,
    concurrency: o.concurrency,
    wallSec,
    workflowsPerSec: n / wallSec,
    eventsPerWorkflow: history.events?.length ?? 0,
    devServerCpuMsPerWorkflow: devMs,
    workersCpuMsPerWorkflow: selfMs,
    cpuBoundPerSec: (os.cpus().length * 1000) / (devMs + selfMs),
  };
  o.say?.(
    `  floor ${o.hosts}×${o.vmsPerHost}, ${shape}: ${figures.workflowsPerSec.toFixed(1)} empty upgrades/s, ` +
      `dev server ${devMs.toFixed(1)} ms + workers and client ${selfMs.toFixed(1)} ms CPU each`,
  );
  return figures;
}
