// The backend-transfer interface as it moved on qemu-devel (see docs/DESIGN.md, "Backend-transfer dialects").
// One entry per stage. Everything the simulator does differently per dialect is read from this table:
// the schema patch (schema.ts), the accepted command-line options (args.ts), which backends migrate
// (migration.ts). The next API change is one more entry here.

export type { DialectName } from '../../activities/capabilities/dialects';
import type { DialectName } from '../../activities/capabilities/dialects';

/** Kinds of host backends the simulator models; each has one owner at a time (ledger.ts). */
export type BackendKind = 'tap' | 'vhost-user';

/**
 * How the backends to hand over are chosen at migration time:
 * - `device-property`: a global bool parameter, and per device a bool property (v8).
 * - `device-list`: the parameter is a list of device IDs / QOM paths (the RFC that followed review).
 * - `tap-option`: a global bool parameter on both sides, and a tap netdev option that permits it (v10+).
 */
export type SelectionStyle = 'device-property' | 'device-list' | 'tap-option';

export interface DialectSpec {
  name: DialectName;
  stage: string;
  /** Member added to MigrationParameters and MigrateSetParameters (unstable feature). */
  parameter?: { name: string; type: 'bool' | '[str]' };
  selection?: SelectionStyle;
  /** Per-device property on NICs (virtio-net-pci), device-property style. */
  deviceProperty?: {
    name: string;
    /** Default is on for machine types of at least this version; older ones get the hw_compat `false`. */
    defaultOnSinceMachine: string;
  };
  /** Option added to NetdevTapOptions, tap-option style. */
  tapOption?: string;
  /** Query command returning `[{"path": str}]`: devices whose backend can be transferred now. */
  supportQuery?: string;
  /** Backend kinds whose file descriptors this dialect can pass. */
  transferable: BackendKind[];
  /**
   * On an incoming (-incoming) process, backends are not opened at creation: they either arrive in the
   * stream or are opened when the incoming migration completes (tests of the v8 dialect rely on this).
   */
  deferOpenOnIncoming: boolean;
}

export const DIALECTS: Record<DialectName, DialectSpec> = {
  none: {
    name: 'none',
    stage: 'upstream QEMU: no backend transfer, backends are re-created on the destination',
    transferable: [],
    deferOpenOnIncoming: false,
  },
  'backend-transfer-bool': {
    name: 'backend-transfer-bool',
    stage: 'v8, Oct 2025',
    parameter: { name: 'backend-transfer', type: 'bool' },
    selection: 'device-property',
    deviceProperty: { name: 'backend-transfer', defaultOnSinceMachine: '10.2' },
    transferable: ['tap', 'vhost-user'],
    deferOpenOnIncoming: true,
  },
  'backend-transfer-list': {
    name: 'backend-transfer-list',
    stage: 'RFC, Oct 2025',
    parameter: { name: 'backend-transfer', type: '[str]' },
    selection: 'device-list',
    supportQuery: 'query-backend-transfer-support',
    transferable: ['tap', 'vhost-user'],
    deferOpenOnIncoming: true,
  },
  local: {
    name: 'local',
    stage: 'v10-v17 and the 2026 test',
    parameter: { name: 'local', type: 'bool' },
    selection: 'tap-option',
    tapOption: 'x-permit-local-migration',
    transferable: ['tap'],
    deferOpenOnIncoming: true,
  },
};

export function dialectByName(name: string): DialectSpec | undefined {
  return Object.prototype.hasOwnProperty.call(DIALECTS, name) ? DIALECTS[name as DialectName] : undefined;
}

/** Compare dotted versions numerically: -1, 0, 1. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((x) => Number(x) || 0);
  const pb = b.split('.').map((x) => Number(x) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}
