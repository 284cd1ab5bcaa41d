// Custom search attributes, so the Temporal Web UI and `temporal workflow list --query` can filter upgrades.
// A cluster other than the dev server must have them registered (README: "Search attributes").
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const hostKey = defineSearchAttributeKey('FleetHost', SearchAttributeType.KEYWORD);
export const vmKey = defineSearchAttributeKey('FleetVm', SearchAttributeType.KEYWORD);
export const phaseKey = defineSearchAttributeKey('FleetPhase', SearchAttributeType.KEYWORD);
export const targetKey = defineSearchAttributeKey('FleetTarget', SearchAttributeType.KEYWORD);
export const rolloutKey = defineSearchAttributeKey('FleetRollout', SearchAttributeType.KEYWORD);

/** Name → type, for `temporal server start-dev --search-attribute` and `temporal operator search-attribute create`. */
export const searchAttributeTypes: Record<string, 'Keyword'> = {
  FleetHost: 'Keyword',
  FleetVm: 'Keyword',
  FleetPhase: 'Keyword',
  FleetTarget: 'Keyword',
  FleetRollout: 'Keyword',
};

/**
 * The search attributes an upgradeVm starts with: its host, VM and target, the rollout that started it if
 * any, and FleetPhase=inspect (so the workflow need not upsert its first phase).
 */
export function upgradeVmSearchAttributes(o: { hostId: string; vmId: string; target: string; rolloutId?: string }) {
  return [
    { key: hostKey, value: o.hostId },
    { key: vmKey, value: o.vmId },
    { key: targetKey, value: o.target },
    ...(o.rolloutId !== undefined ? [{ key: rolloutKey, value: o.rolloutId }] : []),
    { key: phaseKey, value: 'inspect' },
  ];
}
