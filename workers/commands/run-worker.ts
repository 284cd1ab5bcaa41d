// `fleet-upgrade host-worker` and `fleet-upgrade orchestrator-worker`: long-running processes that stop
// cleanly on SIGINT/SIGTERM (in-flight activities get the shutdown grace, VMs keep running regardless).
import type { Worker } from '@temporalio/worker';
import { loadHostConfig } from '../../activities/host/config';
import { handoverAbility } from '../../activities/host/fd-handover';
import { stopSimulatedQemus } from '../../activities/host/sim-launcher';
import { launchAtStart } from '../../activities/host/vm-launch';
import { createHostWorker, hostTemporalSettings } from '../host-worker';
import { createOrchestratorWorker } from '../orchestrator-worker';
import type { TemporalSettings } from '../temporal-connection';
import { hostTaskQueue } from '../../workflows/names';

async function runUntilSignalled(worker: Worker, what: string): Promise<void> {
  const stop = () => worker.shutdown();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.stderr.write(`${what} polling\n`);
  await worker.run();
}

export async function runHostWorker(configFile: string, overrides: Partial<TemporalSettings>): Promise<void> {
  const config = await loadHostConfig(configFile);
  const settings = { ...hostTemporalSettings(config), ...overrides };
  const worker = await createHostWorker(config, settings);
  const handover = handoverAbility();
  if (!handover.possible) {
    // Upgrades still run: taps are re-created where the VM names a bridge (else refused), RAM is copied.
    process.stderr.write(
      `host worker ${config.hostId}: cannot hand taps and RAM over (${handover.reason}); re-creating taps on their bridge and copying RAM instead\n`,
    );
  }
  if (config.launchAtStart?.length) {
    const { launched, alreadyRunning } = await launchAtStart(config);
    process.stderr.write(
      `host worker ${config.hostId}: launched ${launched} VMs (${alreadyRunning} already running)\n`,
    );
  }
  await runUntilSignalled(
    worker,
    `host worker ${config.hostId} on ${settings.address} (queue ${hostTaskQueue(config.hostId)})`,
  );
  // In-process simulated VMs end with the worker (real QEMUs keep running).
  await stopSimulatedQemus();
}

export async function runOrchestratorWorker(settings: TemporalSettings): Promise<void> {
  const worker = await createOrchestratorWorker(settings);
  await runUntilSignalled(worker, `orchestrator worker on ${settings.address} (queue fleet-upgrade)`);
}
