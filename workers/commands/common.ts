// What every command's registration and the client-only commands share, kept light: no Temporal SDK, no zod,
// no koffi at load, so `fleet-upgrade --help` and `vm status` load only what they use (workers/cli.ts imports
// each command's module when that command runs). The shared names come from workflows/names.ts, which is
// pure and loads nothing.
import { createRequire } from 'node:module';
import type { Command } from 'commander';
import type * as Protobuf from 'protobufjs/light';
import type { Client } from '@temporalio/client';
import { PeerError } from '../cli-errors';
import { connectClient, settingsFromEnv, type TemporalSettings } from '../temporal-connection';

export { orchestratorTaskQueue, SAFE_ID, SAFE_LABEL } from '../../workflows/names';

/** workers/commands/schedule.ts: the ids of the rollout schedules. */
export const SCHEDULE_PREFIX = 'rollout-schedule.';

export interface TemporalFlags {
  address?: string;
  namespace?: string;
}

export function temporalFlags(c: Command): Command {
  return c
    .option('--address <host:port>', 'Temporal frontend (env TEMPORAL_ADDRESS; default 127.0.0.1:7233)')
    .option('--namespace <name>', 'Temporal namespace (env TEMPORAL_NAMESPACE; default "default")');
}

/** The flags that override the environment's Temporal settings (a host config's `temporal` comes last). */
export function flagOverrides(f: TemporalFlags): Partial<TemporalSettings> {
  return { ...(f.address ? { address: f.address } : {}), ...(f.namespace ? { namespace: f.namespace } : {}) };
}

export function settingsOf(f: TemporalFlags): TemporalSettings {
  return { ...settingsFromEnv(), ...flagOverrides(f) };
}

/** Runs `use` with a client of the Temporal the flags and environment name; a service that cannot be reached is the peer's failure. */
export async function withClient<T>(flags: TemporalFlags, use: (client: Client) => Promise<T>): Promise<T> {
  const settings = settingsOf(flags);
  const { Client } = await import('@temporalio/client');
  lazyServiceMethods();
  let connection;
  try {
    connection = await connectClient(settings);
  } catch (err) {
    throw new PeerError(`cannot reach Temporal at ${settings.address}: ${(err as Error).message}`);
  }
  try {
    return await use(new Client({ connection, namespace: settings.namespace }));
  } finally {
    await connection.close();
  }
}

/**
 * A Connection builds a function for each of the ~120 methods of the services it reaches, and protobufjs,
 * building one, makes the classes of its request and its reply then and there: ~10 ms of CPU for a `vm
 * status` that calls three of them. In the CLI's process they are made on a method's first call instead; the
 * call is the same. Only over the protobufjs this was written for (8.x, whose Service.create is the loop
 * below with the classes made up front); any other stays as it is.
 */
function lazyServiceMethods(): void {
  try {
    const pb = createRequire(require.resolve('@temporalio/proto'))('protobufjs/light') as typeof Protobuf;
    const service = pb.Service.prototype;
    const rpcCall = pb.rpc.Service.prototype.rpcCall as (this: unknown, ...args: unknown[]) => unknown;
    const original = service.create as typeof service.create & { lazy?: true };
    if (original.lazy || original.length !== 3 || !/resolvedRequestType\.ctor/.test(String(original))) return;
    if (typeof rpcCall !== 'function' || typeof pb.util.lcFirst !== 'function') return;
    service.create = Object.assign(
      function create(
        this: Protobuf.Service,
        rpcImpl: Protobuf.RPCImpl,
        requestDelimited = false,
        responseDelimited = false,
      ) {
        const rpc = new pb.rpc.Service(rpcImpl, requestDelimited, responseDelimited);
        const methods = rpc as unknown as Record<string, unknown>;
        for (const method of this.methodsArray) {
          const name = pb.util.lcFirst(method.resolve().name).replace(/[^$\w_]/g, '');
          methods[name] = function rpcMethod(this: Protobuf.rpc.Service, request: object, callback: unknown) {
            const [requestType, responseType] = [method.resolvedRequestType, method.resolvedResponseType];
            return rpcCall.call(this, method, requestType!.ctor, responseType!.ctor, request, callback);
          };
        }
        return rpc;
      },
      { lazy: true as const },
    );
  } catch {
    // protobufjs as it is
  }
}
