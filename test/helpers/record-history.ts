// Recording workflow histories for the replay test (test/unit/replay.test.ts): with RECORD_HISTORIES=1, an
// e2e test writes the history of a workflow it ran to test/fixtures/histories/<file>, in the Temporal CLI's
// JSON form plus a top-level `workflowId`. Keep the files of earlier workflow shapes: they are what
// `patched` must still replay.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { temporalCli } from '../../infra/real-parts';
import type { Harness } from './temporal-harness';

export function recordHistory(harness: Harness, workflowId: string, file: string): void {
  if (!process.env.RECORD_HISTORIES) return;
  const json = execFileSync(temporalCli, [
    ...['workflow', 'show', '--workflow-id', workflowId, '--output', 'json'],
    ...['--address', harness.server.address, '--namespace', harness.server.namespace],
  ]);
  // The workflow id goes along: a workflow that derives ids from its own (child workflows) replays only under it.
  const history = JSON.parse(json.toString()) as Record<string, unknown>;
  writeFileSync(
    path.join(__dirname, '..', 'fixtures', 'histories', file),
    JSON.stringify({ workflowId, ...history }, null, 2) + '\n',
  );
}
