// Step 2 of the saga: what the target build can do, from its binary probe (cached per build; only reads).
import path from 'node:path';
import type { TargetFacts } from '../../workflows/decisions/plan';
import { probeBinary } from '../capabilities/binary-probe';
import type { HostConfig } from '../host/config';
import { allowedBinary } from './processes';

export async function probeTarget(config: HostConfig, input: { label: string }): Promise<TargetFacts> {
  const binary = allowedBinary(config, input.label);
  try {
    return await probeBinary(binary, path.join(config.runtimeDir, 'cache'), config.limits.launchTimeoutMs);
  } catch (err) {
    // The probe's own errors name a temporary socket; say which build could not be probed.
    throw new Error(`probing QEMU ${input.label} (${binary.path}) failed: ${(err as Error).message}`);
  }
}
