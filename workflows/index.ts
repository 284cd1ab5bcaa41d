// Every workflow the orchestrator worker runs (its workflow bundle's entry).
export { upgradeVm } from './upgrade-vm';
