// vmStrategies: the strategies a VM can use, in preference order backend-transfer > cpr-transfer >
// cpr-exec > plain; and memoryAllowsCpr: RAM that survives into a new process by fd.
import fc from 'fast-check';
import { dialectNames } from '../../activities/capabilities/dialects';
import {
  memoryAllowsCpr,
  strategyNames,
  vmStrategies,
  type BuildFeatures,
  type GuestMemory,
} from '../../activities/capabilities/features';

const memoryArb = fc.record<GuestMemory>({
  backend: fc.constantFrom(
    null,
    'memory-backend-ram',
    'memory-backend-memfd',
    'memory-backend-file',
    'memory-backend-epc',
  ),
  shared: fc.boolean(),
  auxRamShare: fc.constantFrom(null, true, false),
});
const featuresArb = fc.record<BuildFeatures>({
  dialect: fc.constantFrom(...dialectNames),
  migrationModes: fc.subarray(['normal', 'cpr-reboot', 'cpr-transfer', 'cpr-exec']),
  ignoreShared: fc.boolean(),
});

const cprMemory: GuestMemory = { backend: 'memory-backend-memfd', shared: true, auxRamShare: true };
const anonymous: GuestMemory = { backend: null, shared: false, auxRamShare: false };

describe('memoryAllowsCpr', () => {
  it.each<[GuestMemory, boolean]>([
    [{ backend: 'memory-backend-memfd', shared: true, auxRamShare: true }, true],
    [{ backend: 'memory-backend-file', shared: true, auxRamShare: true }, true],
    [{ backend: 'memory-backend-memfd', shared: false, auxRamShare: true }, false],
    [{ backend: 'memory-backend-memfd', shared: true, auxRamShare: false }, false],
    [{ backend: 'memory-backend-memfd', shared: true, auxRamShare: null }, false],
    [{ backend: 'memory-backend-ram', shared: true, auxRamShare: true }, false],
    [{ backend: 'memory-backend-epc', shared: true, auxRamShare: true }, false],
    [{ backend: null, shared: true, auxRamShare: true }, false],
  ])('%j → %s', (memory, expected) => {
    expect(memoryAllowsCpr(memory)).toBe(expected);
  });
});

describe('vmStrategies', () => {
  it('real QEMU 7.2 (no modes): plain only', () => {
    expect(vmStrategies({ dialect: 'none', migrationModes: [], ignoreShared: true }, cprMemory)).toEqual(['plain']);
  });

  it('real QEMU 10.0.2: cpr-transfer then plain with memfd RAM shared, plain alone otherwise', () => {
    const f: BuildFeatures = {
      dialect: 'none',
      migrationModes: ['normal', 'cpr-reboot', 'cpr-transfer'],
      ignoreShared: true,
    };
    expect(vmStrategies(f, cprMemory)).toEqual(['cpr-transfer', 'plain']);
    expect(vmStrategies(f, anonymous)).toEqual(['plain']);
    expect(vmStrategies(f, { ...cprMemory, auxRamShare: false })).toEqual(['plain']);
  });

  it('a build with every mode in a backend-transfer dialect: all four, in preference order', () => {
    for (const dialect of ['backend-transfer-bool', 'backend-transfer-list', 'local'] as const) {
      const f: BuildFeatures = { dialect, migrationModes: ['normal', 'cpr-transfer', 'cpr-exec'], ignoreShared: true };
      expect(vmStrategies(f, cprMemory)).toEqual(['backend-transfer', 'cpr-transfer', 'cpr-exec', 'plain']);
      expect(vmStrategies(f, anonymous)).toEqual(['backend-transfer', 'plain']);
    }
  });

  it('cpr-exec without cpr-transfer (a build that has only the exec mode)', () => {
    const f: BuildFeatures = { dialect: 'none', migrationModes: ['normal', 'cpr-exec'], ignoreShared: true };
    expect(vmStrategies(f, cprMemory)).toEqual(['cpr-exec', 'plain']);
  });

  it('is always a subsequence of the preference order ending with plain, each strategy present exactly when allowed (property)', () => {
    fc.assert(
      fc.property(featuresArb, memoryArb, (features, memory) => {
        const out = vmStrategies(features, memory);
        // In preference order, no duplicates.
        const ranks = out.map((s) => strategyNames.indexOf(s));
        expect(ranks.every((r, i) => r >= 0 && (i === 0 || r > ranks[i - 1]!))).toBe(true);
        expect(out[out.length - 1]).toBe('plain');
        const cpr = memoryAllowsCpr(memory);
        expect(out.includes('backend-transfer')).toBe(features.dialect !== 'none');
        expect(out.includes('cpr-transfer')).toBe(cpr && features.migrationModes.includes('cpr-transfer'));
        expect(out.includes('cpr-exec')).toBe(cpr && features.migrationModes.includes('cpr-exec'));
        // The x-ignore-shared capability is no strategy of its own.
        expect(vmStrategies({ ...features, ignoreShared: !features.ignoreShared }, memory)).toEqual(out);
      }),
      { numRuns: 1000 },
    );
  });
});
