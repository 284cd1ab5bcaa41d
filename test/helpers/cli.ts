// The `fleet-upgrade` command as an operator runs it: a process of its own, its exit status and output.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from '../../infra/real-parts';

export const fleetUpgradeBin = path.join(projectRoot, 'bin', 'fleet-upgrade.js');

/** Runs `fleet-upgrade <args>` to its end. */
export function fleetUpgrade(...args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [fleetUpgradeBin, ...args], { encoding: 'utf8' });
}
