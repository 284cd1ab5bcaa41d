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
