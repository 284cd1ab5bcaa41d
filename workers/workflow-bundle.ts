// The orchestrator worker's workflow bundle entry: every workflow of workflows/, and fleetInventory.
export * from '../workflows';
export { fleetInventory } from './inventory-workflow';
