import fc from 'fast-check';
import {
  agreedTransferList,
  decide,
  intersectMinus,
  type SourceFacts,
  type TargetFacts,
} from '../../workflows/decisions/plan';
import { completionTimeoutSec, defaultPolicy, withDefaults } from '../../workflows/decisions/policy';

const source = (over: Partial<SourceFacts> = {}): SourceFacts => ({
  qemuVersion: '10.0.2',
  machine: 'pc-i440fx-7.2',
  ramMiB: 1024,
  strategies: ['cpr-transfer', 'plain'],
  dialect: 'none',
  transferable: [],
  ...over,
});
const target = (over: Partial<TargetFacts> = {}): TargetFacts => ({
  label: '10.0.2',
  qemuVersion: '10.0.2',
  dialect: 'none',
  migrationModes: ['normal', 'cpr-reboot', 'cpr-transfer'],
  machineTypes: ['pc-i440fx-7.2', 'pc-i440fx-10.0'],
  ...over,
});

describe('decide', () => {
  test('upstream builds: cpr-transfer when the RAM allows it, else plain', () => {
    expect(decide(source(), target(), defaultPolicy)).toEqual({
      kind: 'plan',
      plan: { strategy: 'cpr-transfer', dialect: 'none', transferBackends: [], machine: 'pc-i440fx-7.2' },
    });
    const plain = decide(source({ strategies: ['plain'] }), target(), defaultPolicy);
    expect(plain).toMatchObject({ kind: 'plan', plan: { strategy: 'plain' } });
  });

  test('backend transfer: the source list minus exclusions, in the dialect both speak', () => {
    const s = source({
      dialect: 'backend-transfer-list',
      transferable: ['net1', 'net0', 'vhost0'],
      strategies: ['backend-transfer', 'plain'],
    });
    const d = decide(s, target({ dialect: 'backend-transfer-list' }), withDefaults({ excludeBackends: ['vhost0'] }));
    expect(d).toEqual({
      kind: 'plan',
      plan: {
        strategy: 'backend-transfer',
        dialect: 'backend-transfer-list',
        transferBackends: ['net0', 'net1'],
        machine: 'pc-i440fx-7.2',
      },
    });
  });

  test('different dialects on the two sides fall through to the next strategy', () => {
    const s = source({ dialect: 'local', transferable: ['net0'], strategies: ['backend-transfer', 'plain'] });
    expect(decide(s, target({ dialect: 'backend-transfer-bool' }), defaultPolicy)).toMatchObject({
      plan: { strategy: 'plain' },
    });
  });

  test('requireBackendTransfer refuses with the reason when it cannot be met', () => {
    const d = decide(source(), target(), withDefaults({ requireBackendTransfer: true }));
    expect(d.kind).toBe('refused');
    expect(d.kind === 'refused' && d.reason).toMatch(
      /^requireBackendTransfer cannot be met: backend-transfer: .*source none, target none/,
    );
  });

  test('a channel other than a UNIX socket is refused, naming SCM_RIGHTS for fd passing', () => {
    const d = decide(source(), target(), withDefaults({ transport: 'tcp' }));
    expect(d).toEqual({ kind: 'refused', reason: expect.stringContaining('SCM_RIGHTS') });
  });

  test('a target without the source machine type is refused', () => {
    const d = decide(source({ machine: 'pc-i440fx-2.0' }), target(), defaultPolicy);
    expect(d).toEqual({ kind: 'refused', reason: 'target QEMU 10.0.2 has no machine type pc-i440fx-2.0' });
  });

  test('cpr-exec is never chosen', () => {
    const d = decide(
      source({ strategies: ['cpr-exec', 'plain'] }),
      target(),
      withDefaults({ strategies: ['cpr-exec', 'plain'] }),
    );
    expect(d).toMatchObject({ plan: { strategy: 'plain' } });
  });
});

describe('lists', () => {
  test('intersectMinus is the sorted set intersection minus exclusions (property)', () => {
    const id = fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f');
    fc.assert(
      fc.property(fc.array(id), fc.array(id), fc.array(id), (a, b, minus) => {
        const got = intersectMinus(a, b, minus);
        const want = [...new Set(a)].filter((x) => b.includes(x) && !minus.includes(x)).sort();
        expect(got).toEqual(want);
      }),
    );
  });

  test('the destination narrows the list to what it can take', () => {
    const plan = {
      strategy: 'backend-transfer' as const,
      dialect: 'backend-transfer-list' as const,
      transferBackends: ['a', 'b'],
      machine: 'm',
    };
    expect(agreedTransferList(plan, ['b', 'c'])).toEqual(['b']);
  });
});

test('completion timeout scales with RAM, at least a minute', () => {
  expect(completionTimeoutSec(defaultPolicy, 64)).toBe(60);
  expect(completionTimeoutSec(defaultPolicy, 4096)).toBe(600);
});
