// Every workflow the orchestrator worker runs (its workflow bundle's entry).
export { upgradeVm } from './upgrade-vm';
// Fleet rollouts (issue 4): rollout → upgradeHost → upgradeVm.
export { rollout } from './rollout';
export { fleetHosts } from './fleet-hosts';
export { upgradeHost } from './upgrade-host';
