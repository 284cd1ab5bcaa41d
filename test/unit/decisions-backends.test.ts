// How each backend and the guest RAM reach the destination: pure decisions, every branch.
import {
  decide,
  decideBackends,
  decideRam,
  MULTIQUEUE_HANDOVER,
  type SourceBackend,
  type SourceFacts,
  type TargetFacts,
} from '../../workflows/decisions/plan';
import { withDefaults } from '../../workflows/decisions/policy';

const tap = (over: Partial<SourceBackend> = {}): SourceBackend => ({
  id: 'net0',
  type: 'tap',
  device: 'nic0',
  ifname: 'tap0',
  queues: 1,
  heldFds: 1,
  ...over,
});
const source = (over: Partial<SourceFacts> = {}): SourceFacts => ({
  qemuVersion: '7.2.22',
  machine: 'pc-i440fx-7.2',
  ramMiB: 4096,
  strategies: ['plain'],
  dialect: 'none',
  transferable: ['net0'],
  backends: [tap()],
  ram: { backend: 'memfd', shared: true, skippedWhenShared: true },
  handover: { possible: true },
  ...over,
});
const target = (over: Partial<TargetFacts> = {}): TargetFacts => ({
  label: '10.0.2',
  qemuVersion: '10.0.2',
  dialect: 'none',
  migrationModes: ['normal', 'cpr-transfer'],
  machineTypes: ['pc-i440fx-7.2'],
  ignoreShared: true,
  ...over,
});

describe('decide on released QEMU (no backend transfer in either build)', () => {
  test('7.2 → 10.0.2: plain migration, the tap handed over, RAM shared', () => {
    const d = decide(source(), target(), withDefaults({}));
    expect(d).toMatchObject({
      kind: 'plan',
      plan: { strategy: 'plain', ram: 'shared', backends: [{ id: 'net0', mode: 'handover' }] },
    });
  });

  test('facts from before backend modes give the plan they always gave', () => {
    const d = decide(source({ backends: undefined }), target(), withDefaults({}));
    expect(d).toEqual({
      kind: 'plan',
      plan: { strategy: 'plain', dialect: 'none', transferBackends: [], machine: 'pc-i440fx-7.2' },
    });
  });

  test('a tap that can be neither handed over nor re-created is refused up front, with the reason', () => {
    const d = decide(source({ handover: { possible: false, reason: 'not root' } }), target(), withDefaults({}));
    expect(d).toEqual({
      kind: 'refused',
      reason: 'tap net0 (tap0) can be neither handed over (not root) nor re-created (its VM spec names no bridge)',
    });
  });
});

describe('decideBackends', () => {
  const modes = (s: SourceFacts, transfer: string[] = [], exclude: string[] = []) => {
    const d = decideBackends(s, transfer, exclude);
    return d.kind === 'ok' ? d.backends.map((b) => `${b.id}:${b.mode}`) : d.reason;
  };

  test('QEMU transfer first, then handover, else re-create on the bridge', () => {
    const s = source({
      dialect: 'local',
      backends: [
        tap(),
        tap({ id: 'net1', device: 'nic1', ifname: 'tap1' }),
        tap({ id: 'net2', device: 'nic2', ifname: 'tap2', heldFds: 0, bridge: 'br0' }),
        { id: 'u', type: 'user' },
        { id: 'vu', type: 'vhost-user' },
      ],
    });
    expect(modes(s, ['/machine/peripheral/nic0/virtio-backend'])).toEqual([
      'net0:transfer',
      'net1:handover',
      'net2:recreate',
      'u:recreate',
      'vu:recreate',
    ]);
  });

  test('excluded by device id or netdev id: re-created on its bridge, refused without one', () => {
    expect(modes(source({ backends: [tap({ bridge: 'br0' })] }), [], ['nic0'])).toEqual(['net0:recreate']);
    expect(modes(source(), [], ['net0'])).toBe(
      'tap net0 (tap0) can be neither handed over (excluded by policy) nor re-created (its VM spec names no bridge)',
    );
  });

  test('a multiqueue tap is not handed over: re-created on its bridge, else refused saying why', () => {
    expect(modes(source({ backends: [tap({ queues: 4, heldFds: 4, bridge: 'br0' })] }))).toEqual(['net0:recreate']);
    expect(modes(source({ backends: [tap({ queues: 4, heldFds: 4 })] }))).toContain(MULTIQUEUE_HANDOVER);
  });

  test('a tap whose fd the source does not hold', () => {
    expect(modes(source({ backends: [tap({ heldFds: 0 })] }))).toContain('the source process holds no fd');
  });
});

describe('decideRam', () => {
  const ram = (s: Partial<SourceFacts>, t: Partial<TargetFacts> = {}, strategy: 'plain' | 'cpr-transfer' = 'plain') =>
    decideRam(strategy, source(s), target(t));

  test('shared where both builds skip it; cpr-transfer always shares', () => {
    expect(ram({})).toEqual({ kind: 'ok', mode: 'shared' });
    expect(ram({ ram: { backend: 'file', shared: true, skippedWhenShared: true } })).toEqual({
      kind: 'ok',
      mode: 'shared',
    });
    expect(ram({ ram: { backend: 'ram', shared: false, skippedWhenShared: false } }, {}, 'cpr-transfer')).toEqual({
      kind: 'ok',
      mode: 'shared',
    });
  });

  test('copied: private RAM, a target without x-ignore-shared, a memfd streamed anyway, a worker without fds', () => {
    expect(ram({ ram: { backend: 'ram', shared: false, skippedWhenShared: false } })).toEqual({
      kind: 'ok',
      mode: 'copied',
    });
    expect(ram({ ram: { backend: 'memfd', shared: false, skippedWhenShared: false } })).toEqual({
      kind: 'ok',
      mode: 'copied',
    });
    expect(ram({}, { ignoreShared: false })).toEqual({ kind: 'ok', mode: 'copied' });
    expect(ram({ ram: { backend: 'memfd', shared: true, skippedWhenShared: false } })).toEqual({
      kind: 'ok',
      mode: 'copied',
    });
    expect(ram({ handover: { possible: false, reason: 'not root' } })).toEqual({ kind: 'ok', mode: 'copied' });
  });

  test('file-backed RAM that cannot be shared is refused: copying into it would overwrite the running source', () => {
    expect(ram({ ram: { backend: 'file', shared: true, skippedWhenShared: true } }, { ignoreShared: false })).toEqual({
      kind: 'refused',
      reason: 'file-backed RAM cannot be shared: the target build has no x-ignore-shared',
    });
    expect(
      decide(source({ ram: { backend: 'file', shared: true, skippedWhenShared: false } }), target(), withDefaults({})),
    ).toMatchObject({
      kind: 'refused',
    });
  });
});
