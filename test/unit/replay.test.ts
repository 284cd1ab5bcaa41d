// Determinism guard: every recorded history under test/fixtures/histories replays against today's workflow
// code. A change of shape without `patched` fails here. Record new ones with RECORD_HISTORIES=1 npm test.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import { workflowsPath } from '../../workers/orchestrator-worker';
import { fleetSinks } from '../../workers/telemetry';

jest.setTimeout(120_000);

const dir = path.join(__dirname, '..', 'fixtures', 'histories');
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

test('there are recorded histories to replay', () => {
  expect(files.length).toBeGreaterThan(0);
});

test.each(files)('%s replays deterministically', async (file) => {
  const { workflowId, ...history } = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as {
    workflowId?: string;
  };
  await expect(
    Worker.runReplayHistory({ workflowsPath: workflowsPath(), sinks: fleetSinks() }, history, workflowId ?? file),
  ).resolves.toBeUndefined();
});
