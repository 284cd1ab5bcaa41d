// Host presence: besides its own queue `qemu-host.<hostId>`, every host worker polls the shared queue
// `fleet-upgrade.hosts` with the same identity (`host-worker/<hostId>/<pid>`), so `fleet-upgrade hosts`
// can list the live host workers from that queue's pollers, as Temporal reports them — no registry of ours.
// Its only activity answers which host it is and which version labels it allows.
import { Worker, type NativeConnection } from '@temporalio/worker';
import type { HostConfig } from '../activities/host/config';
import { describeHost } from '../activities/upgrade/inventory';
import { hostOfIdentity, hostsQueue } from '../workflows/names';

export { hostOfIdentity, hostsQueue };

/**
 * Starts a presence worker alongside `main` (same connection and identity) and ties its life to main's:
 * it runs while `main.run()` runs and shuts down when that returns.
 */
export async function withPresence(
  main: Worker,
  config: HostConfig,
  connection: NativeConnection,
  namespace: string,
  identity: string,
): Promise<Worker> {
  const presence = await Worker.create({
    connection,
    namespace,
    taskQueue: hostsQueue,
    activities: { describeHost: async () => describeHost(config) },
    identity,
    maxConcurrentActivityTaskExecutions: 2,
  });
  const runMain = main.run.bind(main);
  main.run = async () => {
    const running = presence.run().catch(() => undefined);
    try {
      await runMain();
    } finally {
      if (presence.getState() === 'RUNNING') presence.shutdown();
      await running;
    }
  };
  return main;
}
