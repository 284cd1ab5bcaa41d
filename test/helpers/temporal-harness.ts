// A real Temporal dev server, the orchestrator worker and host workers, all in the test process.
import { Client } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import type { HostConfig } from '../../activities/host/config';
import { startDevServer, type DevServer } from '../../infra/devserver';
import { createHostWorker } from '../../workers/host-worker';
import { createOrchestratorWorker, workflowsPath } from '../../workers/orchestrator-worker';
import { connectClient, type TemporalSettings } from '../../workers/temporal-connection';
import { searchAttributeTypes } from '../../workflows/search-attributes';

export interface Harness {
  server: DevServer;
  settings: TemporalSettings;
  client: Client;
  orchestrator: Worker;
  hosts: Map<string, Worker>;
  startHost(config: HostConfig): Promise<Worker>;
  stopHost(hostId: string): Promise<void>;
  stop(): Promise<void>;
}

let bundle: Awaited<ReturnType<typeof bundleWorkflowCode>> | undefined;

let runtimeInstalled = false;

export async function startHarness(): Promise<Harness> {
  if (!runtimeInstalled) {
    Runtime.install({ logger: new DefaultLogger('WARN') });
    runtimeInstalled = true;
  }
  const server = await startDevServer({ headless: true, searchAttributes: searchAttributeTypes });
  const settings: TemporalSettings = { address: server.address, namespace: server.namespace };
  const running = new Map<Worker, Promise<void>>();
  let orchestrator: Worker | undefined;
  let client: Client;
  try {
    bundle ??= await bundleWorkflowCode({ workflowsPath: workflowsPath(), logger: quietLogger });
    orchestrator = await createOrchestratorWorker(settings, bundle);
    running.set(orchestrator, orchestrator.run());
    client = new Client({ connection: await connectClient(settings), namespace: settings.namespace });
  } catch (err) {
    // No harness reaches the caller, so nothing else would stop what was started.
    orchestrator?.shutdown();
    await Promise.allSettled(running.values());
    await server.stop();
    throw err;
  }
  const hosts = new Map<string, Worker>();
  const h: Harness = {
    server,
    settings,
    client,
    orchestrator,
    hosts,
    async startHost(config) {
      const w = await createHostWorker(config, settings);
      running.set(w, w.run());
      hosts.set(config.hostId, w);
      return w;
    },
    async stopHost(hostId) {
      const w = hosts.get(hostId);
      if (!w) return;
      hosts.delete(hostId);
      w.shutdown();
      await running.get(w);
    },
    async stop() {
      for (const id of [...hosts.keys()]) await h.stopHost(id);
      orchestrator.shutdown();
      await running.get(orchestrator);
      await client.connection.close();
      await server.stop();
    },
  };
  return h;
}

const quietLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: (m: string) => console.error(m),
};
