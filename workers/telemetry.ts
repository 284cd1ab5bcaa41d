// Metrics (Prometheus, prom-client) and structured JSON logs (pino) of both workers.
//
// Host worker: an activity interceptor times every host activity and, for those that migrate, counts
// migrations by strategy and outcome and observes their duration and the guest's downtime; `listVms` results give the
// VMs by QEMU label and state. Orchestrator worker: the `fleet` sink of the fleet workflows reports each
// VM's outcome and each rollout's VMs by state. Logs carry host, VM, workflow and run ids.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Context } from '@temporalio/activity';
import type { LogLevel, LogMetadata, Logger } from '@temporalio/common';
import type { ActivityInterceptorsFactory, InjectedSinks } from '@temporalio/worker';
import pino from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MigrationOutcome, StartedAndMigrated } from '../activities/upgrade/api';
import type { HostInventory } from '../activities/upgrade/inventory';
import type { FleetSinks } from '../workflows/upgrade-host';

export const registry = new Registry();
let defaultsCollected = false;

const seconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const downtimeSeconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

// Host worker
const hostMigrations = new Counter({
  name: 'fleet_host_migrations_total',
  help: 'Local live migrations run by this host worker, by strategy and outcome',
  labelNames: ['host', 'strategy', 'outcome'] as const,
  registers: [registry],
});
const hostMigrationDuration = new Histogram({
  name: 'fleet_host_migration_duration_seconds',
  help: 'Total time of completed migrations (QEMU setup to completion)',
  labelNames: ['host', 'strategy'] as const,
  buckets: seconds,
  registers: [registry],
});
const hostMigrationDowntime = new Histogram({
  name: 'fleet_host_migration_downtime_seconds',
  help: 'Guest downtime of completed migrations as the source QEMU reports it',
  labelNames: ['host', 'strategy'] as const,
  buckets: downtimeSeconds,
  registers: [registry],
});
const hostActivities = new Histogram({
  name: 'fleet_host_activity_duration_seconds',
  help: 'Host activities by type and outcome',
  labelNames: ['host', 'activity', 'outcome'] as const,
  buckets: seconds,
  registers: [registry],
});
const hostInFlight = new Gauge({
  name: 'fleet_host_activities_in_flight',
  help: 'Host activities running now',
  labelNames: ['host', 'activity'] as const,
  registers: [registry],
});
const hostVms = new Gauge({
  name: 'fleet_host_vms',
  help: 'VMs of this host by QEMU version label and state (running or stopped), as of the last inventory',
  labelNames: ['host', 'label', 'state'] as const,
  registers: [registry],
});

// Orchestrator worker
const vmUpgrades = new Counter({
  name: 'fleet_vm_upgrades_total',
  help: 'VM upgrades finished under rollouts, by strategy and outcome',
  labelNames: ['rollout', 'strategy', 'outcome'] as const,
  registers: [registry],
});
const vmUpgradeDuration = new Histogram({
  name: 'fleet_vm_migration_duration_seconds',
  help: 'Migration time of upgraded VMs under rollouts',
  labelNames: ['strategy'] as const,
  buckets: seconds,
  registers: [registry],
});
const vmUpgradeDowntime = new Histogram({
  name: 'fleet_vm_migration_downtime_seconds',
  help: 'Guest downtime of upgraded VMs under rollouts',
  labelNames: ['strategy'] as const,
  buckets: downtimeSeconds,
  registers: [registry],
});
const rolloutVms = new Gauge({
  name: 'fleet_rollout_vms',
  help: 'VMs of a rollout by state (pending, in-flight, upgraded, failed, ...)',
  labelNames: ['rollout', 'state'] as const,
  registers: [registry],
});

// ---------------------------------------------------------------------------------------------------------
// Logs

/**
 * JSON lines on stderr (stdout carries a command's answer: with --json, one JSON document, which a log line
 * in front of would break); level from FLEET_LOG_LEVEL (default info; silent under Jest unless set).
 */
export const logger = pino(
  {
    level: process.env.FLEET_LOG_LEVEL ?? (process.env.JEST_WORKER_ID ? 'silent' : 'info'),
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  pino.destination({ dest: 2, sync: false }),
);

/** The Temporal SDK's logger on top of pino (Runtime.install({ logger })), so SDK and workflow logs are JSON. */
export class PinoTemporalLogger implements Logger {
  constructor(private readonly base: pino.Logger = logger) {}
  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const m = (meta ?? {}) as Record<string, unknown>;
    switch (level) {
      case 'TRACE':
        return this.base.trace(m, message);
      case 'DEBUG':
        return this.base.debug(m, message);
      case 'INFO':
        return this.base.info(m, message);
      case 'WARN':
        return this.base.warn(m, message);
      default:
        return this.base.error(m, message);
    }
  }
  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Host worker: activity interceptor

function vmOf(args: unknown[]): string | undefined {
  const a = args[0] as { vmId?: unknown } | undefined;
  return typeof a?.vmId === 'string' ? a.vmId : undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The activities that migrate: `startAndMigrate` (the saga's grouped step), and `migrate` alone. */
const migratingActivities: ReadonlySet<string> = new Set(['migrate', 'startAndMigrate']);

/** The migration an activity's result reports, if it migrated (a narrowed `startAndMigrate` did not). */
function migrationOf(activity: string, out: unknown): MigrationOutcome | undefined {
  if (activity === 'migrate') return out as MigrationOutcome;
  if (activity !== 'startAndMigrate') return undefined;
  const done = out as StartedAndMigrated;
  return done.kind === 'migrated' ? done.migration : undefined;
}

/** Times host activities, counts migrations and logs each activity with host, VM, workflow and run ids. */
export function hostTelemetry(hostId: string, log: pino.Logger = logger): ActivityInterceptorsFactory {
  return (ctx: Context) => ({
    inbound: {
      async execute(input, next) {
        const info = ctx.info;
        const activity = info.activityType;
        const vmId = vmOf(input.args);
        const fields = {
          hostId,
          ...(vmId ? { vmId } : {}),
          workflowId: info.workflowExecution?.workflowId,
          runId: info.workflowExecution?.runId,
          activity,
          attempt: info.attempt,
        };
        const started = performance.now();
        hostInFlight.inc({ host: hostId, activity });
        try {
          const out = await next(input);
          const ms = performance.now() - started;
          hostActivities.observe({ host: hostId, activity, outcome: 'ok' }, ms / 1000);
          const m = migrationOf(activity, out);
          if (m) {
            hostMigrations.inc({ host: hostId, strategy: m.strategy, outcome: 'completed' });
            hostMigrationDuration.observe({ host: hostId, strategy: m.strategy }, m.totalTimeMs / 1000);
            if (m.downtimeMs !== null) {
              hostMigrationDowntime.observe({ host: hostId, strategy: m.strategy }, m.downtimeMs / 1000);
            }
            log.info(
              {
                ...fields,
                ms: Math.round(ms),
                strategy: m.strategy,
                downtimeMs: m.downtimeMs,
                totalTimeMs: m.totalTimeMs,
              },
              'migration completed',
            );
          } else {
            if (activity === 'listVms') observeInventory(hostId, out as HostInventory);
            log.info({ ...fields, ms: Math.round(ms) }, 'activity completed');
          }
          return out;
        } catch (err) {
          const ms = performance.now() - started;
          const cancelled = ctx.cancellationSignal.aborted;
          hostActivities.observe({ host: hostId, activity, outcome: cancelled ? 'cancelled' : 'failed' }, ms / 1000);
          if (migratingActivities.has(activity)) {
            const strategy =
              (input.args[0] as { plan?: { strategy?: string } } | undefined)?.plan?.strategy ?? 'unknown';
            hostMigrations.inc({ host: hostId, strategy, outcome: cancelled ? 'cancelled' : 'failed' });
          }
          log.warn(
            { ...fields, ms: Math.round(ms), error: errorMessage(err) },
            `activity ${cancelled ? 'cancelled' : 'failed'}`,
          );
          throw err;
        } finally {
          hostInFlight.dec({ host: hostId, activity });
        }
      },
    },
  });
}

function observeInventory(hostId: string, inv: HostInventory): void {
  hostVms.reset();
  const by = new Map<string, number>();
  for (const vm of inv.vms) {
    const k = `${vm.label}\0${vm.running ? 'running' : 'stopped'}`;
    by.set(k, (by.get(k) ?? 0) + 1);
  }
  for (const [k, n] of by) {
    const [label, state] = k.split('\0') as [string, string];
    hostVms.set({ host: hostId, label, state }, n);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Orchestrator worker: the fleet sink

export function fleetSinks(log: pino.Logger = logger): InjectedSinks<FleetSinks> {
  return {
    fleet: {
      vmFinished: {
        fn(info, f) {
          const strategy = f.strategy ?? 'none';
          vmUpgrades.inc({ rollout: f.rolloutId, strategy, outcome: f.outcome });
          if (f.outcome === 'upgraded' && f.totalTimeMs !== undefined) {
            vmUpgradeDuration.observe({ strategy }, f.totalTimeMs / 1000);
            if (f.downtimeMs !== undefined && f.downtimeMs !== null) {
              vmUpgradeDowntime.observe({ strategy }, f.downtimeMs / 1000);
            }
          }
          log.info(
            {
              rolloutId: f.rolloutId,
              hostId: f.hostId,
              vmId: f.vmId,
              workflowId: info.workflowId,
              runId: info.runId,
              outcome: f.outcome,
              strategy: f.strategy,
              reason: f.reason,
              totalTimeMs: f.totalTimeMs,
              downtimeMs: f.downtimeMs,
            },
            'vm upgrade finished',
          );
        },
        callDuringReplay: false,
      },
      rolloutVms: {
        fn(_info, rolloutId, byState) {
          for (const [state, n] of Object.entries(byState)) rolloutVms.set({ rollout: rolloutId, state }, n);
        },
        callDuringReplay: false,
      },
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// The /metrics endpoint

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** Serves `GET /metrics` (Prometheus text format) on 127.0.0.1 or the given host. */
export async function startMetricsServer(port: number, host = '0.0.0.0'): Promise<MetricsServer> {
  if (!defaultsCollected) {
    collectDefaultMetrics({ register: registry });
    defaultsCollected = true;
  }
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end('not found\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err) => res.writeHead(500).end(`${errorMessage(err)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/**
 * For `fleet-upgrade host-worker|orchestrator-worker`: JSON logs through pino for the SDK and the workflows
 * (Runtime logger), and `/metrics` on `metricsPort` when given (0: any free port).
 */
export async function startWorkerTelemetry(metricsPort: number | undefined): Promise<MetricsServer | undefined> {
  const { Runtime } = await import('@temporalio/worker');
  try {
    Runtime.install({ logger: new PinoTemporalLogger() });
  } catch {
    // a Runtime exists already (tests install their own)
  }
  if (metricsPort === undefined) return undefined;
  const server = await startMetricsServer(metricsPort);
  process.stderr.write(`metrics on http://0.0.0.0:${server.port}/metrics\n`);
  return server;
}
