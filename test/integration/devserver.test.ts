// The real Temporal CLI dev server: start, connect, namespace, custom search attribute, restart on the same
// SQLite file with a workflow (no worker) and its visibility record surviving, stop.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { devServerTuning, startDevServer, type DevServer } from '../../infra/devserver';
import { makeTmpDir, type TmpDir } from '../helpers/tmp';

jest.setTimeout(120_000);

const FleetHost = defineSearchAttributeKey('FleetHost', SearchAttributeType.KEYWORD);

describe('temporal dev server', () => {
  let tmp: TmpDir;
  let server: DevServer | undefined;

  beforeAll(() => {
    tmp = makeTmpDir('qfds');
  });
  afterAll(async () => {
    await server?.stop();
    tmp.cleanup();
  });

  async function client(s: DevServer): Promise<{ client: Client; close: () => Promise<void> }> {
    const connection = await Connection.connect({ address: s.address, connectTimeout: 5_000 });
    return { client: new Client({ connection, namespace: s.namespace }), close: () => connection.close() };
  }

  it('starts, keeps workflows and visibility across a restart on the same file, and stops', async () => {
    const dbFile = path.join(tmp.path, 'dev.db');
    server = await startDevServer({
      dbFile,
      namespace: 'fleet-test',
      headless: true,
      searchAttributes: { FleetHost: 'Keyword' },
    });
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(server.uiAddress).toBeUndefined();
    expect(server.dbFile).toBe(dbFile);
    const firstPid = server.pid;
    // Started with the queue readers' poll rate raised (infra/devserver.ts devServerTuning).
    const argv = readFileSync(`/proc/${firstPid}/cmdline`, 'utf8').split('\0');
    for (const [key, value] of Object.entries(devServerTuning)) expect(argv).toContain(`${key}=${value}`);

    let c = await client(server);
    const ns = await c.client.workflowService.describeNamespace({ namespace: 'fleet-test' });
    expect(ns.namespaceInfo?.name).toBe('fleet-test');
    const sa = await c.client.connection.operatorService.listSearchAttributes({ namespace: 'fleet-test' });
    expect(Object.keys(sa.customAttributes ?? {})).toContain('FleetHost');

    const workflowId = `survivor-${Date.now()}`;
    await c.client.workflow.start('noSuchWorkflow', {
      taskQueue: 'nobody-polls-this',
      workflowId,
      typedSearchAttributes: [{ key: FleetHost, value: 'host-a' }],
    });
    await c.close();

    await server.restart();
    expect(server.pid).not.toBe(firstPid);
    c = await client(server);
    const desc = await c.client.workflow.getHandle(workflowId).describe();
    expect(desc.status.name).toBe('RUNNING');
    expect(desc.typedSearchAttributes.get(FleetHost)).toBe('host-a');

    // Visibility survives too (SQLite visibility store), queried by the custom search attribute.
    let listed: string[] = [];
    for (let i = 0; i < 50 && listed.length === 0; i++) {
      listed = [];
      for await (const wf of c.client.workflow.list({ query: `FleetHost = 'host-a'` })) listed.push(wf.workflowId);
      if (!listed.length) await new Promise((r) => setTimeout(r, 200));
    }
    expect(listed).toEqual([workflowId]);
    await c.client.workflow.getHandle(workflowId).terminate('test done');
    await c.close();

    const pid = server.pid;
    await server.stop();
    server = undefined;
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it('serves the Web UI unless headless, and removes its own temporary database on stop', async () => {
    const s = await startDevServer();
    try {
      expect(s.uiAddress).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const res = await fetch(s.uiAddress!);
      expect(res.status).toBe(200);
      expect(s.namespace).toBe('default');
    } finally {
      await s.stop();
    }
    const { existsSync } = await import('node:fs');
    expect(existsSync(s.dbFile)).toBe(false);
  });

  it('fails clearly when the binary is missing', async () => {
    await expect(startDevServer({ binary: '/nonexistent/temporal' })).rejects.toThrow(
      /Temporal CLI not found at \/nonexistent\/temporal: run infra\/install.sh/,
    );
  });
});
