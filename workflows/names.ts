// The names that workflows, workers, the CLI and the benchmarks must spell alike, in one module. Workflows
// import it, so it stays pure (no I/O, no Node APIs); every other side imports it too, and the compiler
// checks that they agree.

/** The orchestrator's task queue: every workflow, and the fleet's own activities. */
export const orchestratorTaskQueue = 'fleet-upgrade';

const HOST_QUEUE_PREFIX = 'qemu-host.';

/** The task queue of one hypervisor's host worker: only that worker runs activities that touch its QEMUs. */
export function hostTaskQueue(hostId: string): string {
  return `${HOST_QUEUE_PREFIX}${hostId}`;
}

/** The host a task queue serves, or undefined for any other queue. */
export function hostOfTaskQueue(queue: string): string | undefined {
  return queue.startsWith(HOST_QUEUE_PREFIX) ? queue.slice(HOST_QUEUE_PREFIX.length) : undefined;
}

/** The queue every host worker also polls, so the fleet's host workers can be listed from its pollers. */
export const hostsQueue = 'fleet-upgrade.hosts';

/** A host worker's identity, as Temporal shows it (Web UI, task queue pollers). */
export function hostWorkerIdentity(hostId: string, pid: number): string {
  return `host-worker/${hostId}/${pid}`;
}

/** The host of a host worker's identity, or undefined for any other identity. */
export function hostOfIdentity(identity: string): string | undefined {
  const m = /^host-worker\/([a-z0-9][a-z0-9._-]{0,62})\/\d+$/.exec(identity);
  return m?.[1];
}

/**
 * A worker counts as live when Temporal saw it poll within this long. Temporal keeps a poller listed for
 * about two minutes after its last poll; a worker that polls is seen at least every minute.
 */
export const LIVE_POLLER_MS = 90_000;

/** Workflow ids: one upgrade of a VM, one host's upgrade in a rollout, one rollout. */
export const workflowIds = {
  upgradeVm: (hostId: string, vmId: string) => `upgrade-vm/${hostId}/${vmId}`,
  rollout: (name: string) => `rollout/${name}`,
  /** Prefixes of one-off workflows the CLI starts (a random suffix follows). */
  fleetHostsPrefix: 'fleet-hosts/',
  inventoryPrefix: 'fleet-inventory/',
} as const;

/** Signal, query and update names (the workflows define them from these). */
export const messageNames = {
  progressQuery: 'progress',
  migrationProgressSignal: 'migrationProgress',
  hostControlSignal: 'hostControl',
  hostReportSignal: 'hostReport',
  pauseUpdate: 'pause',
  resumeUpdate: 'resume',
  abortUpdate: 'abort',
  approveUpdate: 'approve',
  retryUpdate: 'retry',
} as const;

/** Host and VM ids: what may appear in file names, task queues and workflow ids. */
export const SAFE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** Version labels of a host's QEMU builds ("old", "new", "10.0.2"). */
export const SAFE_LABEL = /^[a-z0-9][a-z0-9._-]{0,31}$/;
/** One VM of the fleet: `host/vm`. */
export const VM_REF = /^[a-z0-9][a-z0-9._-]{0,62}\/[a-z0-9][a-z0-9._-]{0,62}$/;
/** A host, or one VM of a host. */
export const HOST_OR_VM_REF = /^[a-z0-9][a-z0-9._-]{0,62}(\/[a-z0-9][a-z0-9._-]{0,62})?$/;
