// How every process of the project reaches Temporal: the dev server by default, or any cluster or
// Temporal Cloud by address and namespace, with TLS, mTLS or an API key. Flags win over the environment
// (the Temporal CLI's variable names), which wins over a host config's `temporal` section.
import { readFileSync } from 'node:fs';
// The SDK is loaded when a connection is made, not with this module: the CLI's client commands never load
// @temporalio/worker, and `--help` loads neither.
import type { Connection, ConnectionOptions } from '@temporalio/client';
import type { NativeConnection, NativeConnectionOptions } from '@temporalio/worker';
import { PeerError } from './cli-errors';

export interface TemporalSettings {
  address: string;
  namespace: string;
  apiKey?: string;
  tls?: { serverName?: string; serverRootCACertFile?: string; clientCertFile?: string; clientKeyFile?: string };
}

export function settingsFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  base?: Partial<TemporalSettings>,
): TemporalSettings {
  const tlsFromEnv =
    env.TEMPORAL_TLS_CERT || env.TEMPORAL_TLS_CA || env.TEMPORAL_TLS === 'true'
      ? {
          ...(env.TEMPORAL_TLS_SERVER_NAME ? { serverName: env.TEMPORAL_TLS_SERVER_NAME } : {}),
          ...(env.TEMPORAL_TLS_CA ? { serverRootCACertFile: env.TEMPORAL_TLS_CA } : {}),
          ...(env.TEMPORAL_TLS_CERT ? { clientCertFile: env.TEMPORAL_TLS_CERT } : {}),
          ...(env.TEMPORAL_TLS_KEY ? { clientKeyFile: env.TEMPORAL_TLS_KEY } : {}),
        }
      : undefined;
  const tls = tlsFromEnv ?? base?.tls;
  const apiKey = env.TEMPORAL_API_KEY ?? base?.apiKey;
  return {
    address: env.TEMPORAL_ADDRESS ?? base?.address ?? '127.0.0.1:7233',
    namespace: env.TEMPORAL_NAMESPACE ?? base?.namespace ?? 'default',
    ...(apiKey ? { apiKey } : {}),
    ...(tls ? { tls } : {}),
  };
}

function tlsOptions(s: TemporalSettings): ConnectionOptions['tls'] {
  if (!s.tls && !s.apiKey) return undefined;
  if (!s.tls) return true; // an API key always travels over TLS
  const t = s.tls;
  return {
    ...(t.serverName ? { serverNameOverride: t.serverName } : {}),
    ...(t.serverRootCACertFile ? { serverRootCACertificate: readFileSync(t.serverRootCACertFile) } : {}),
    ...(t.clientCertFile && t.clientKeyFile
      ? { clientCertPair: { crt: readFileSync(t.clientCertFile), key: readFileSync(t.clientKeyFile) } }
      : {}),
  };
}

export async function connectClient(s: TemporalSettings): Promise<Connection> {
  const { Connection } = await import('@temporalio/client');
  return Connection.connect({
    address: s.address,
    tls: tlsOptions(s),
    ...(s.apiKey ? { apiKey: s.apiKey } : {}),
    connectTimeout: '5s',
  });
}

export async function connectWorker(s: TemporalSettings): Promise<NativeConnection> {
  const options: NativeConnectionOptions = {
    address: s.address,
    tls: tlsOptions(s) as NativeConnectionOptions['tls'],
    ...(s.apiKey ? { apiKey: s.apiKey } : {}),
  };
  const { NativeConnection } = await import('@temporalio/worker');
  try {
    return await NativeConnection.connect(options);
  } catch (err) {
    // One line (exit 3), e.g. a TLS handshake the cluster refused: the native error spans several lines.
    const why = String((err as Error)?.message ?? err)
      .replace(/\s+/g, ' ')
      .trim();
    throw new PeerError(`cannot reach Temporal at ${s.address}: ${why}`);
  }
}
