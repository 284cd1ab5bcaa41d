import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  hostTaskQueue,
  loadHostConfig,
  parseHostConfig,
  parseHostConfigYaml,
  resolveBinary,
  temporalApiKey,
} from '../../activities/host/config';
import { ConfigError } from '../../activities/host/validate';
import { projectRoot } from '../../infra/real-parts';
import { makeTmpDir } from '../helpers/tmp';

const base = {
  hostId: 'hv-01',
  runtimeDir: '/var/lib/qf',
  binaries: { '7.2': { path: '/usr/bin/qemu-system-x86_64' } },
};

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).not.toContain('\n');
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('host config', () => {
  it('loads the annotated example with defaults', async () => {
    const c = await loadHostConfig(path.join(projectRoot, 'infra/examples/host.yaml'));
    expect(c.hostId).toBe('hv-01');
    expect(Object.keys(c.binaries)).toEqual(['7.2', '10.0.2']);
    expect(c.binaries['10.0.2']!.dataDirs).toHaveLength(2);
    expect(c.binaries['7.2']).toEqual({ path: '/usr/bin/qemu-system-x86_64', dataDirs: [], env: {} });
    expect(c.limits).toEqual({
      maxConcurrentMigrations: 1,
      qmpTimeoutMs: 10000,
      launchTimeoutMs: 30000,
      killGraceMs: 5000,
      shutdownGraceMs: 120000,
    });
    expect(c.temporal).toEqual({ address: '127.0.0.1:7233', namespace: 'default' });
    expect(hostTaskQueue(c)).toBe('qemu-host.hv-01');
  });

  it('applies defaults when limits and temporal are absent', () => {
    const c = parseHostConfig(base);
    expect(c.limits.maxConcurrentMigrations).toBe(1);
    expect(c.limits.qmpTimeoutMs).toBe(10000);
    expect(c.temporal.namespace).toBe('default');
  });

  it.each([
    [/^hostId: must match/, { ...base, hostId: 'HV 01' }],
    [/^hostId: is required$/, { ...base, hostId: undefined }],
    [/^runtimeDir: must be an absolute path/, { ...base, runtimeDir: 'var/lib' }],
    [/^binaries\.10\.0\.2\.path: must be an absolute path/, { ...base, binaries: { '10.0.2': { path: 'qemu' } } }],
    [/^binaries\.Bad Label: /, { ...base, binaries: { 'Bad Label': { path: '/q' } } }],
    [/^binaries: must allow at least one/, { ...base, binaries: {} }],
    [/^binaries\.7\.2\.extra: unknown field/, { ...base, binaries: { '7.2': { path: '/q', extra: 1 } } }],
    [/^limits\.maxConcurentMigrations: unknown field/, { ...base, limits: { maxConcurentMigrations: 2 } }],
    [/^limits\.maxConcurrentMigrations: /, { ...base, limits: { maxConcurrentMigrations: 0 } }],
    [/^temporal\.address: must be host:port/, { ...base, temporal: { address: 'no-port' } }],
    [
      /^temporal\.tls\.clientCertFile: clientCertFile and clientKeyFile/,
      { ...base, temporal: { tls: { clientCertFile: '/c.pem' } } },
    ],
    [/^temporal\.apiKey: give apiKey or apiKeyEnv/, { ...base, temporal: { apiKey: 'k', apiKeyEnv: 'K' } }],
    [/^extraArgs: unknown field/, { ...base, extraArgs: ['-S'] }],
  ])('rejects with a one-line error naming the field: %s', (re, data) => {
    expect(errorOf(() => parseHostConfig(data)).message).toMatch(re);
  });

  it('keeps version labels as written in YAML (7.20 is not 7.2) and rejects duplicate keys', () => {
    const yaml = 'hostId: h\nruntimeDir: /r\nbinaries:\n  7.20: {path: /a}\n  10.0.2: {path: /b}\n';
    expect(Object.keys(parseHostConfigYaml(yaml).binaries)).toEqual(['7.20', '10.0.2']);
    const dup = 'hostId: h\nruntimeDir: /r\nbinaries:\n  7.20: {path: /a}\n  "7.20": {path: /b}\n';
    expect(errorOf(() => parseHostConfigYaml(dup)).message).toMatch(/7\.20: duplicate/);
    expect(errorOf(() => parseHostConfigYaml('hostId: [unclosed')).message).toMatch(/^invalid YAML: /);
  });

  it('names the file when loading, and fails clearly on a missing file', async () => {
    const dir = makeTmpDir('qfc');
    try {
      const f = path.join(dir.path, 'host.yaml');
      writeFileSync(f, 'hostId: h\nruntimeDir: /r\nbinaries:\n  "10.0.2": {path: rel/qemu}\n');
      await expect(loadHostConfig(f)).rejects.toThrow(`${f}: binaries.10.0.2.path: must be an absolute path`);
      await expect(loadHostConfig(path.join(dir.path, 'nope.yaml'))).rejects.toThrow(/cannot read host config: ENOENT/);
    } finally {
      dir.cleanup();
    }
  });

  it('resolves only allow-listed labels', () => {
    const c = parseHostConfig(base);
    expect(resolveBinary(c, '7.2')).toMatchObject({ label: '7.2', path: '/usr/bin/qemu-system-x86_64' });
    for (const label of ['10.0.2', '__proto__', 'constructor', '/usr/bin/qemu-system-x86_64']) {
      const e = errorOf(() => resolveBinary(c, label));
      expect(e.field).toBe('binary');
      expect(e.message).toMatch(/^binary: version label .* is not allowed on host hv-01 \(allowed: 7\.2\)$/);
    }
  });

  it('reads the API key from the named environment variable', () => {
    const c = parseHostConfig({ ...base, temporal: { apiKeyEnv: 'QF_KEY' } });
    expect(temporalApiKey(c, { QF_KEY: 'secret' })).toBe('secret');
    expect(() => temporalApiKey(c, {})).toThrow(/temporal\.apiKeyEnv: environment variable QF_KEY is not set/);
    expect(temporalApiKey(parseHostConfig(base), {})).toBeUndefined();
  });
});
