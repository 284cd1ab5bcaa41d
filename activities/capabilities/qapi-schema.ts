// Reads the answer of `query-qmp-schema` (QAPI introspection). Pure: no I/O.
// Type names in introspection are opaque (often numbers); only member, command and enum names are stable,
// so every question here starts from a command and walks the types from there.
import { z } from 'zod';

// Object and enum members have a name; alternate members only a type.
const member = z.object({ name: z.string().optional(), type: z.string().optional() }).passthrough();
export const schemaInfoSchema = z
  .object({
    name: z.string(),
    'meta-type': z.string(),
    members: z.array(member).optional(),
    values: z.array(z.string()).optional(),
    'arg-type': z.string().optional(),
    'ret-type': z.string().optional(),
    'element-type': z.string().optional(),
    variants: z.array(z.object({ case: z.string(), type: z.string() })).optional(),
    tag: z.string().optional(),
  })
  .passthrough();
export const schemaSchema = z.array(schemaInfoSchema);
export type SchemaInfo = z.infer<typeof schemaInfoSchema>;

export class QapiSchema {
  private readonly byName = new Map<string, SchemaInfo>();

  constructor(entries: SchemaInfo[]) {
    for (const e of entries) this.byName.set(e.name, e);
  }

  static parse(raw: unknown): QapiSchema {
    return new QapiSchema(schemaSchema.parse(raw));
  }

  hasCommand(name: string): boolean {
    return this.byName.get(name)?.['meta-type'] === 'command';
  }

  /** The type name of one argument of a command, or undefined. */
  commandArgType(command: string, memberName: string): string | undefined {
    const cmd = this.byName.get(command);
    if (cmd?.['meta-type'] !== 'command' || !cmd['arg-type']) return undefined;
    return this.memberType(cmd['arg-type'], memberName);
  }

  /** The type name of a member of an object type (its own members, then its variants' members). */
  memberType(objectType: string, memberName: string): string | undefined {
    const obj = this.byName.get(objectType);
    if (!obj || obj['meta-type'] !== 'object') return undefined;
    const own = obj.members?.find((m) => m.name === memberName);
    return own?.type;
  }

  /** The type of one case of a (flat) union, e.g. the `tap` options of `netdev_add`'s argument. */
  variantOfCommandArg(command: string, caseName: string): string | undefined {
    const cmd = this.byName.get(command);
    const arg = cmd?.['arg-type'] ? this.byName.get(cmd['arg-type']) : undefined;
    return arg?.variants?.find((v) => v.case === caseName)?.type;
  }

  /** A readable form of a type: `bool`, `str`, `[str]`, `enum`, `object`. */
  describe(typeName: string | undefined): string | undefined {
    if (typeName === undefined) return undefined;
    const t = this.byName.get(typeName);
    if (!t) return typeName;
    switch (t['meta-type']) {
      case 'builtin':
        return t.name;
      case 'array':
        return `[${this.describe(t['element-type']) ?? '?'}]`;
      default:
        return t['meta-type'];
    }
  }

  elementType(arrayType: string): string | undefined {
    const t = this.byName.get(arrayType);
    return t?.['meta-type'] === 'array' ? t['element-type'] : undefined;
  }

  enumValues(typeName: string | undefined): string[] {
    const t = typeName === undefined ? undefined : this.byName.get(typeName);
    if (t?.['meta-type'] !== 'enum') return [];
    return t.values ?? (t.members ?? []).flatMap((m) => (m.name === undefined ? [] : [m.name]));
  }
}
