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
  return {
    inspectSource: (input) => inspectSource(config, input),
    probeTarget: (input) => probeTarget(config, input),
    startDestination: (input) => startDestination(config, input),
    migrate: (input) => {
      const ctx = Context.current();
      const workflowId = input.progressWorkflowId;
      return migrate(config, input, {
        heartbeat: (progress) => ctx.heartbeat(progress),
        cancelled: ctx.cancelled,
        ...(workflowId
          ? {
              signalProgress: (progress: MigrationProgress) =>
                ctx.client.workflow.getHandle(workflowId).signal('migrationProgress', progress),
            }
          : {}),
      });
    },
    verify: (input) => verify(config, input),
    finalize: (input) => finalize(config, input),
    rollback: (input) => rollback(config, input),
    listVms: () => listVms(config),
    describeHost: async () => describeHost(config),
    inventoryVms: () => inventoryVms(config),
  };
}
