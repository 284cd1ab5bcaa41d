// Reading a rollout plan file: YAML → validated, normalized plan. Errors are one-line ConfigErrors naming
// the file and the field (`windows[0].timezone: unknown time zone "Mars/Olympus"`), exit code 2 in the CLI.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, parseYamlText } from '../../activities/host/validate';
import { parsePlan, PlanError, type RolloutPlan } from '../../workflows/decisions/rollout-plan';

export function parsePlanYaml(text: string, source?: string): RolloutPlan {
  const data = parseYamlText(text, source);
  try {
    return parsePlan(data);
  } catch (err) {
    if (err instanceof PlanError) throw new ConfigError(err.field, err.detail, source);
    throw err;
  }
}

export async function loadPlan(file: string): Promise<RolloutPlan> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read plan: ${(err as Error).message}`, file);
  }
  return parsePlanYaml(text, file);
}
