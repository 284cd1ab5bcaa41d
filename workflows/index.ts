// Every workflow the orchestrator worker runs (its workflow bundle's entry).
export { upgradeVm } from './upgrade-vm';
// Fleet rollouts: rollout → upgradeHost → upgradeVm; the fleet's read-only views.
export { rollout } from './rollout';
export { fleetHosts } from './fleet-hosts';
export { upgradeHost } from './upgrade-host';
export { fleetInventory } from './fleet-inventory';
