// The host worker: one per hypervisor, activities only (no workflow bundle), task queue `qemu-host.<hostId>`.
import { Worker } from '@temporalio/worker';
import { createHostActivities } from '../activities/upgrade';
import { hostTaskQueue, temporalApiKey, type HostConfig } from '../activities/host/config';
import { connectWorker, settingsFromEnv, type TemporalSettings } from './temporal-connection';
import { withPresence } from './presence';
import { hostWorkerIdentity } from '../workflows/names';
import { hostTelemetry } from './telemetry';

export function hostTemporalSettings(config: HostConfig, env: NodeJS.ProcessEnv = process.env): TemporalSettings {
  const apiKey = temporalApiKey(config, env);
  return settingsFromEnv(env, {
    address: config.temporal.address,
    namespace: config.temporal.namespace,
    ...(apiKey ? { apiKey } : {}),
    ...(config.temporal.tls ? { tls: config.temporal.tls } : {}),
  });
}

export async function createHostWorker(config: HostConfig, settings = hostTemporalSettings(config)): Promise<Worker> {
  const connection = await connectWorker(settings);
  const worker = await Worker.create({
    connection,
    namespace: settings.namespace,
    taskQueue: hostTaskQueue(config),
    activities: createHostActivities(config),
    maxConcurrentActivityTaskExecutions: Math.max(8, config.limits.maxConcurrentMigrations * 6),
    // A routine restart (SIGTERM) takes no new task and lets running migrations finish, within this bound.
    shutdownGraceTime: config.limits.shutdownGraceMs,
    // The worker's identity shows in the Web UI and in `fleet-upgrade hosts`.
    identity: hostWorkerIdentity(config.hostId, process.pid),
    interceptors: { activity: [hostTelemetry(config.hostId)] }, // each activity's metrics and log lines
  });
  // Also poll the shared queue `fleet-upgrade.hosts`, so `fleet-upgrade hosts` lists this worker.
  return withPresence(worker, config, connection, settings.namespace, hostWorkerIdentity(config.hostId, process.pid));
}
