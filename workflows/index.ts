// Every workflow the orchestrator worker runs (its workflow bundle's entry).
export { upgradeVm } from './upgrade-vm';
// Fleet rollouts (issue 4): rollout → upgradeHost → upgradeVm.
export { fleetHosts, rollout } from './rollout';
export { upgradeHost } from './upgrade-host';
