// Step 3 of the saga: decide how one VM moves. Pure: the same facts always give the same plan.
// The rule for backends: ask both sides what they can transfer, take the intersection, subtract what is
// deliberately changed, and pass exactly that list to the migration.
import type { DialectName } from '../../activities/capabilities/dialects';
import type { Strategy } from '../../activities/capabilities/features';
import type { MigrationPolicy } from './policy';

/** A network backend of the source VM, as the host worker found it. */
export interface SourceBackend {
  /** The netdev id. */
  id: string;
  type: 'tap' | 'user' | 'vhost-user';
  /** The device that uses it, if any: policies may name a backend by its device id. */
  device?: string;
  /** tap: the host interface. */
  ifname?: string;
  /** tap: queues the VM spec asks for (1 unless multiqueue). */
  queues?: number;
  /** tap: the bridge a re-created tap joins; without one a tap cannot be re-created. */
  bridge?: string;
  /** tap: queue fds of this interface the source process holds now. */
  heldFds?: number;
}

/** The source's guest RAM, as QEMU reports its backend. */
export interface SourceRam {
  backend: 'memfd' | 'file' | 'ram';
  shared: boolean;
  /** With `x-ignore-shared` on, the source build leaves this RAM out of the stream (see decideRam). */
  skippedWhenShared: boolean;
}

/** Whether the host worker can take file descriptors from the source process. */
export interface HandoverAbility {
  possible: boolean;
  /** Why not, in one line, when it is not possible. */
  reason?: string;
}

/** What inspecting the source found. */
export interface SourceFacts {
  qemuVersion: string;
  /** Concrete machine type, e.g. `pc-i440fx-7.2`. */
  machine: string;
  ramMiB: number;
  /** Strategies the source VM can use (its build and its RAM), in preference order. */
  strategies: Strategy[];
  dialect: DialectName;
  /** Backends the source can hand over now. */
  transferable: string[];
  /** Network backends (absent in facts recorded before backend modes existed). */
  backends?: SourceBackend[];
  ram?: SourceRam;
  handover?: HandoverAbility;
}

/** What probing the target binary found. */
export interface TargetFacts {
  label: string;
  qemuVersion: string;
  dialect: DialectName;
  migrationModes: string[];
  machineTypes: string[];
  /** The tap option permitting local migration, in the `local` dialect. */
  tapPermitOption?: string;
  /** The `x-ignore-shared` migration capability exists. */
  ignoreShared?: boolean;
  /** The build has QEMU's seccomp sandbox (`-sandbox`). */
  sandbox?: boolean;
}

export type ImplementedStrategy = Exclude<Strategy, 'cpr-exec'>;

export interface MigrationPlan {
  strategy: ImplementedStrategy;
  /** The dialect both sides speak, `none` unless the strategy is backend-transfer. */
  dialect: DialectName;
  /** Backends to hand over; the destination re-creates every other one. */
  transferBackends: string[];
  /** The machine type the destination must be started with. */
  machine: string;
  /** How each network backend reaches the destination (absent in plans made before backend modes). */
  backends?: BackendPlan[];
  /** Whether guest RAM is copied through the stream or shared by both processes. */
  ram?: RamMode;
}

/**
 * How one backend reaches the destination: carried by QEMU's own backend transfer (`transfer`), its fds
 * taken from the live source by the host worker and given to the destination (`handover`), or opened
 * afresh by the destination (`recreate`: a new tap on the VM's bridge, slirp anew, vhost-user reconnects).
 */
export type BackendMode = 'transfer' | 'handover' | 'recreate';

export interface BackendPlan {
  id: string;
  mode: BackendMode;
  /** Why this mode, in words for operators. */
  why: string;
}

/** `shared`: both processes map the same RAM and the stream skips it; `copied`: it goes through the stream. */
export type RamMode = 'copied' | 'shared';

export type Decision = { kind: 'plan'; plan: MigrationPlan } | { kind: 'refused'; reason: string };

export function intersectMinus(a: readonly string[], b: readonly string[], minus: readonly string[]): string[] {
  const inB = new Set(b);
  const out = new Set(minus);
  return [...new Set(a)].filter((x) => inB.has(x) && !out.has(x)).sort();
}

/** Why a strategy cannot be used between these two builds, or undefined when it can. */
function unavailable(s: Strategy, source: SourceFacts, target: TargetFacts, candidates: string[]): string | undefined {
  switch (s) {
    case 'backend-transfer':
      if (source.dialect === 'none' || target.dialect === 'none') {
        return `backend transfer needs both builds to support it (source ${source.dialect}, target ${target.dialect})`;
      }
      if (source.dialect !== target.dialect) {
        return `the builds speak different backend-transfer dialects (source ${source.dialect}, target ${target.dialect})`;
      }
      if (candidates.length === 0) return 'no backend is transferable on both sides after exclusions';
      return undefined;
    case 'cpr-transfer':
      if (!source.strategies.includes('cpr-transfer')) {
        return 'cpr-transfer needs a source build with cpr-transfer and shared memfd/file RAM with aux-ram-share';
      }
      if (!target.migrationModes.includes('cpr-transfer')) return 'the target build has no cpr-transfer mode';
      return undefined;
    case 'cpr-exec':
      return 'cpr-exec is not implemented by this orchestrator';
    case 'plain':
      return undefined;
  }
}

export function decide(source: SourceFacts, target: TargetFacts, policy: MigrationPolicy): Decision {
  if (!target.machineTypes.includes(source.machine)) {
    return { kind: 'refused', reason: `target QEMU ${target.qemuVersion} has no machine type ${source.machine}` };
  }
  // Before the destination exists only the source can tell; the destination's own answer narrows it later.
  const candidates = intersectMinus(source.transferable, source.transferable, policy.excludeBackends);
  const allowed: Strategy[] = policy.requireBackendTransfer ? ['backend-transfer'] : policy.strategies;
  const reasons: string[] = [];
  for (const strategy of allowed) {
    const why = unavailable(strategy, source, target, candidates);
    if (why) {
      reasons.push(`${strategy}: ${why}`);
      continue;
    }
    if (policy.transport !== 'unix') {
      const detail =
        strategy === 'plain'
          ? 'a local migration runs over a UNIX socket'
          : `${strategy} passes file descriptors (SCM_RIGHTS), so the channel must be a UNIX socket`;
      return { kind: 'refused', reason: `transport ${policy.transport} refused: ${detail}` };
    }
    const transferBackends = strategy === 'backend-transfer' ? candidates : [];
    const plan: MigrationPlan = {
      strategy: strategy as ImplementedStrategy,
      dialect: strategy === 'backend-transfer' ? source.dialect : 'none',
      transferBackends,
      machine: source.machine,
    };
    if (source.backends === undefined) return { kind: 'plan', plan };
    const backends = decideBackends(source, transferBackends, policy.excludeBackends);
    if (backends.kind === 'refused') return backends;
    const ram = decideRam(plan.strategy, source, target);
    if (ram.kind === 'refused') return ram;
    return { kind: 'plan', plan: { ...plan, backends: backends.backends, ram: ram.mode } };
  }
  const detail = reasons.length ? reasons.join('; ') : 'the policy lists no strategy';
  return {
    kind: 'refused',
    reason: policy.requireBackendTransfer ? `requireBackendTransfer cannot be met: ${detail}` : detail,
  };
}

/** A transfer-list or policy entry (netdev id, device id, or QOM path `/machine/peripheral/<device>/…`) names this backend. */
export function namesBackend(entry: string, b: SourceBackend): boolean {
  const id = entry.replace(/^\/machine\/peripheral\//, '').split('/')[0] ?? entry;
  return id === b.id || (b.device !== undefined && id === b.device);
}

/**
 * The QEMU builds this orchestrator knows a multiqueue tap cannot be handed to: a released destination
 * detaches the queues the guest has not enabled yet when it starts, which fails on a queue the source
 * already detached (QEMU aborts) or cuts the running source off its queues.
 */
export const MULTIQUEUE_HANDOVER =
  'a multiqueue tap cannot be handed over: the destination QEMU detaches its queues when it starts, ' +
  'which aborts it or cuts the running source off those queues';

/** Pure: how each network backend reaches the destination, or why the VM cannot move at all. */
export function decideBackends(
  source: SourceFacts,
  transferList: readonly string[],
  exclude: readonly string[],
): { kind: 'ok'; backends: BackendPlan[] } | { kind: 'refused'; reason: string } {
  const out: BackendPlan[] = [];
  for (const b of source.backends ?? []) {
    if (transferList.some((e) => namesBackend(e, b))) {
      out.push({ id: b.id, mode: 'transfer', why: `QEMU's backend transfer (${source.dialect}) carries it` });
      continue;
    }
    if (b.type === 'user') {
      out.push({ id: b.id, mode: 'recreate', why: 'user networking is started anew by the destination' });
      continue;
    }
    if (b.type === 'vhost-user') {
      out.push({ id: b.id, mode: 'recreate', why: 'the destination connects to the vhost-user socket anew' });
      continue;
    }
    const name = b.ifname ? `tap ${b.id} (${b.ifname})` : `tap ${b.id}`;
    const excluded = exclude.some((e) => namesBackend(e, b));
    const notHanded = excluded
      ? 'excluded by policy'
      : source.handover?.possible !== true
        ? (source.handover?.reason ?? 'the host worker cannot take fds from the source')
        : (b.queues ?? 1) > 1
          ? MULTIQUEUE_HANDOVER
          : !b.heldFds
            ? 'the source process holds no fd of this interface'
            : undefined;
    if (notHanded === undefined) {
      out.push({ id: b.id, mode: 'handover', why: "the host worker gives the source's tap fd to the destination" });
    } else if (b.bridge) {
      out.push({ id: b.id, mode: 'recreate', why: `${notHanded}; a new tap on bridge ${b.bridge}` });
    } else {
      return {
        kind: 'refused',
        reason: `${name} can be neither handed over (${notHanded}) nor re-created (its VM spec names no bridge)`,
      };
    }
  }
  return { kind: 'ok', backends: out };
}

/**
 * Pure: whether guest RAM is shared by both processes (the stream skips it: an upgrade costs the same for
 * 64 MiB and 16 GiB) or copied. Two processes mapping one RAM while the stream writes into it would corrupt
 * the running source, so shared RAM is only ever used with `x-ignore-shared` on both sides.
 */
export function decideRam(
  strategy: ImplementedStrategy,
  source: SourceFacts,
  target: TargetFacts,
): { kind: 'ok'; mode: RamMode } | { kind: 'refused'; reason: string } {
  if (strategy === 'cpr-transfer') return { kind: 'ok', mode: 'shared' };
  const ram = source.ram;
  if (!ram || ram.backend === 'ram' || !ram.shared) return { kind: 'ok', mode: 'copied' };
  const why = !target.ignoreShared
    ? `the target build has no x-ignore-shared`
    : !ram.skippedWhenShared
      ? `the source build streams its ${ram.backend} RAM even with x-ignore-shared`
      : ram.backend === 'memfd' && source.handover?.possible !== true
        ? `the source's memfd is reachable only by a worker that may take its fds (${source.handover?.reason ?? 'not possible'})`
        : undefined;
  if (why === undefined) return { kind: 'ok', mode: 'shared' };
  // A file both processes map cannot be copied into: the stream would overwrite the running source's pages.
  if (ram.backend === 'file') return { kind: 'refused', reason: `file-backed RAM cannot be shared: ${why}` };
  return { kind: 'ok', mode: 'copied' };
}

/** After the destination answered: the list both sides agree on. Empty when the destination can take none. */
export function agreedTransferList(plan: MigrationPlan, destinationTransferable: readonly string[]): string[] {
  return intersectMinus(plan.transferBackends, destinationTransferable, []);
}
