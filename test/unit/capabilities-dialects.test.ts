// Dialect detection from schema shapes alone: on the real schemas of QEMU 7.2 and 10.0.2 (read from the
// running binaries) and on synthetic schemas in each backend-transfer dialect, built by patching the real
// ones the way activities/capabilities/dialects.ts expects the series to look.
import {
  dialectByName,
  dialectNames,
  dialectTable,
  detectDialect,
  tapPermitOption,
  type DialectName,
} from '../../activities/capabilities/dialects';
import { buildFeatures } from '../../activities/capabilities/features';
import { QapiSchema } from '../../activities/capabilities/qapi-schema';
import { qemu10, qemu72 } from '../../infra/real-parts';
import { addCommandArgMember, addTapOption, schemaInDialect, type SchemaEntry } from '../helpers/fake-qmp-peer';
import { killAllVms, realSchema } from '../helpers/real-vm';
import { useTmpDir } from '../helpers/tmp';

jest.setTimeout(60_000);

const tmp = useTmpDir('qfcd');
let raw72: SchemaEntry[];
let raw10: SchemaEntry[];

beforeAll(async () => {
  raw72 = (await realSchema(qemu72, tmp())) as SchemaEntry[];
  raw10 = (await realSchema(qemu10, tmp())) as SchemaEntry[];
}, 60_000);
afterAll(() => killAllVms());

const parse = (raw: SchemaEntry[]) => QapiSchema.parse(raw);

describe('the real schemas', () => {
  it('QEMU 7.2: dialect none, no migration modes (no cpr-transfer), x-ignore-shared', () => {
    const schema = parse(raw72);
    expect(schema.hasCommand('migrate-set-parameters')).toBe(true);
    expect(detectDialect(schema).name).toBe('none');
    expect(buildFeatures(schema)).toEqual({ dialect: 'none', migrationModes: [], ignoreShared: true });
  });

  it('QEMU 10.0.2: dialect none, cpr-transfer among the migration modes (no cpr-exec), x-ignore-shared', () => {
    const schema = parse(raw10);
    expect(detectDialect(schema).name).toBe('none');
    const features = buildFeatures(schema);
    expect(features).toEqual({
      dialect: 'none',
      migrationModes: ['normal', 'cpr-reboot', 'cpr-transfer'],
      ignoreShared: true,
    });
    expect(features.tapPermitOption).toBeUndefined();
  });

  it('neither real build has a member the dialects look for', () => {
    for (const raw of [raw72, raw10]) {
      const schema = parse(raw);
      for (const d of dialectTable) {
        for (const shape of d.requires) expect(schema.commandArgType(shape.command, shape.member)).toBeUndefined();
      }
      const tap = schema.variantOfCommandArg('netdev_add', 'tap');
      expect(tap).toBeDefined();
      expect(schema.memberType(tap!, 'ifname')).toBeDefined();
      expect(schema.memberType(tap!, 'x-permit-local-migration')).toBeUndefined();
      expect(schema.memberType(tap!, 'local-migration-supported')).toBeUndefined();
    }
  });
});

describe('synthetic schemas in each dialect (patched real schemas)', () => {
  const bases = () =>
    [
      ['10.0.2', raw10],
      ['7.2', raw72],
    ] as const;

  it.each([
    ['backend-transfer-bool' as const, { dialect: 'backend-transfer-bool' as const }],
    ['backend-transfer-list' as const, { dialect: 'backend-transfer-list' as const }],
    ['backend-transfer-list' as const, { dialect: 'backend-transfer-list' as const, opaqueArrayName: true }],
    ['local' as const, { dialect: 'local' as const }],
    ['local' as const, { dialect: 'local' as const, tapOptions: ['local-migration-supported' as const] }],
  ])('%s (%j) is detected on both bases, whatever the version', (expected, patch) => {
    for (const [, base] of bases()) {
      const schema = parse(schemaInDialect(base, patch));
      expect(detectDialect(schema).name).toBe(expected);
      expect(buildFeatures(schema).dialect).toBe(expected);
    }
  });

  it('the patch leaves the base untouched and only adds', () => {
    const before = JSON.stringify(raw10);
    const patched = schemaInDialect(raw10, { dialect: 'local' });
    expect(JSON.stringify(raw10)).toBe(before);
    expect(patched.length).toBe(raw10.length);
  });

  it('backend-transfer-list describes the member as [str] even under an opaque type name', () => {
    const schema = parse(schemaInDialect(raw10, { dialect: 'backend-transfer-list', opaqueArrayName: true }));
    const type = schema.commandArgType('migrate-set-parameters', 'backend-transfer');
    expect(type).toBe('90001');
    expect(schema.describe(type)).toBe('[str]');
  });

  it('local: the tap permit option, newest name first', () => {
    const cases: Array<[Parameters<typeof schemaInDialect>[1]['tapOptions'], string | undefined]> = [
      [['x-permit-local-migration'], 'x-permit-local-migration'],
      [['local-migration-supported'], 'local-migration-supported'],
      [['local-migration-supported', 'x-permit-local-migration'], 'x-permit-local-migration'],
      [[], undefined],
    ];
    for (const [tapOptions, expected] of cases) {
      const schema = parse(schemaInDialect(raw10, { dialect: 'local', tapOptions }));
      const dialect = detectDialect(schema);
      expect(dialect.name).toBe('local');
      expect(tapPermitOption(schema, dialect)).toBe(expected);
      expect(buildFeatures(schema).tapPermitOption).toBe(expected);
    }
  });

  it('a tap permit option means nothing outside the local dialect', () => {
    const raw = structuredClone(raw10);
    addTapOption(raw, 'x-permit-local-migration');
    const schema = parse(raw);
    expect(detectDialect(schema).name).toBe('none');
    expect(tapPermitOption(schema, detectDialect(schema))).toBeUndefined();
    expect(buildFeatures(schema).tapPermitOption).toBeUndefined();
  });

  it('the most specific dialect wins when several shapes hold', () => {
    const both = schemaInDialect(raw10, { dialect: 'backend-transfer-bool' });
    addCommandArgMember(both, 'migrate-set-parameters', 'local', 'bool');
    expect(detectDialect(parse(both)).name).toBe('local');
  });

  it.each([
    ['backend-transfer', 'str'],
    ['backend-transfer', 'int'],
    ['backend-transfer', '[int]'],
    ['local', 'str'],
    ['local', '[str]'],
    ['x-backend-transfer', 'bool'],
    ['transfer-backends', '[str]'],
  ])('a member %s of type %s is no dialect (none)', (member, type) => {
    const raw = structuredClone(raw10);
    if (type === '[int]') raw.push({ name: '[int]', 'meta-type': 'array', 'element-type': 'int' });
    addCommandArgMember(raw, 'migrate-set-parameters', member, type);
    expect(detectDialect(parse(raw)).name).toBe('none');
  });

  it('the member must be on migrate-set-parameters: elsewhere it is no dialect', () => {
    const raw = structuredClone(raw10);
    addCommandArgMember(raw, 'migrate-incoming', 'local', 'bool');
    addCommandArgMember(raw, 'migrate', 'backend-transfer', 'bool');
    expect(detectDialect(parse(raw)).name).toBe('none');
  });

  it('a schema without migrate-set-parameters at all is none', () => {
    const raw = raw10.filter((e) => e.name !== 'migrate-set-parameters');
    expect(detectDialect(parse(raw)).name).toBe('none');
    expect(buildFeatures(parse(raw)).migrationModes).toEqual([]);
  });
});

describe('the dialect table', () => {
  it('names every dialect once, most specific first, none last', () => {
    expect(dialectTable.map((d) => d.name).sort()).toEqual([...dialectNames].sort());
    expect(dialectTable[dialectTable.length - 1]!.name).toBe('none');
    expect(dialectTable.find((d) => d.name === 'none')!.requires).toEqual([]);
  });

  it('speaks each dialect in migrate-set-parameters', () => {
    const p = (name: DialectName, backends: string[]) => dialectByName(name).migrationParameters(backends);
    expect(p('none', ['net0'])).toEqual({});
    expect(p('local', [])).toEqual({ local: true });
    expect(p('backend-transfer-bool', ['net0'])).toEqual({ 'backend-transfer': true });
    expect(p('backend-transfer-bool', [])).toEqual({ 'backend-transfer': false });
    expect(p('backend-transfer-list', ['net0', '/machine/peripheral/vu0'])).toEqual({
      'backend-transfer': ['net0', '/machine/peripheral/vu0'],
    });
    expect(p('backend-transfer-list', [])).toEqual({ 'backend-transfer': [] });
  });

  it('knows how each dialect tells the transferable backends', () => {
    expect(dialectByName('backend-transfer-list').transferableQuery).toBe('query-backend-transfer-support');
    expect(dialectByName('backend-transfer-bool').deviceProperty).toBe('backend-transfer');
    expect(dialectByName('local').tapPermitOptions).toEqual(['x-permit-local-migration', 'local-migration-supported']);
  });

  it('rejects an unknown dialect name', () => {
    expect(() => dialectByName('backend-transfer-v99' as DialectName)).toThrow(/unknown dialect/);
  });
});
