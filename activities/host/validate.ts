// Shared validation for host-side YAML files (host config, VM spec, VM record): safe identifiers, a
// ConfigError whose message is one line naming the field path, and YAML parsing that keeps map keys as
// written (so a version label `7.20` stays "7.20", not the number 7.2) and rejects duplicate keys.
import path from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument, visit } from 'yaml';
import { z } from 'zod';
import { SAFE_ID, SAFE_LABEL } from '../../workflows/names';

/** Host ids and VM ids: used in file names, task queue names and QEMU `-name`. */
export { SAFE_ID, SAFE_LABEL };
/** QEMU version labels of the allow-list (`7.2`, `10.0.2`, `sim-local`). */
/** QEMU object ids (drives, netdevs, devices): letter first, as QEMU requires. */
export const QEMU_ID = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;

export const safeId = z.string().regex(SAFE_ID, `must match ${SAFE_ID.source}`);
export const safeLabel = z.string().regex(SAFE_LABEL, `must be a version label matching ${SAFE_LABEL.source}`);
export const qemuId = z.string().regex(QEMU_ID, 'must match ^[A-Za-z][A-Za-z0-9_-]{0,31}$');
export const absPath = z
  .string()
  .min(1)
  .refine((p) => path.isAbsolute(p), 'must be an absolute path')
  .refine((p) => !p.includes('\0') && !p.includes(','), 'must not contain NUL or commas')
  .transform((p) => path.normalize(p));

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    /** Dotted field path, e.g. `binaries.10.0.2.path`; empty for file-level errors. */
    readonly field: string,
    detail: string,
    /** The file (or other source) the value came from. */
    readonly source?: string,
  ) {
    super(`${source ? `${source}: ` : ''}${field ? `${field}: ` : ''}${detail}`.replace(/\s*\n\s*/g, ' '));
  }
}

export function assertSafeId(id: unknown, what = 'id'): string {
  if (typeof id !== 'string' || !SAFE_ID.test(id)) {
    throw new ConfigError(what, `invalid id ${JSON.stringify(id)}: must match ${SAFE_ID.source}`);
  }
  return id;
}

function issueMessage(issue: z.core.$ZodIssue): { field: string; detail: string } {
  const segs = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    return {
      field: [...segs, issue.keys[0]].join('.'),
      detail: `unknown field${issue.keys.length > 1 ? ` (also: ${issue.keys.slice(1).join(', ')})` : ''}`,
    };
  }
  if (issue.code === 'invalid_key' && issue.issues[0]) {
    // A map key (a version label under `binaries`) that fails its own rule: say the rule, not "Invalid key".
    return { field: segs.join('.'), detail: `invalid key: ${issue.issues[0].message}` };
  }
  if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) {
    return { field: segs.join('.'), detail: 'is required' };
  }
  return { field: segs.join('.'), detail: issue.message };
}

/** Validates plain data against a schema; the first issue becomes a one-line ConfigError. */
export function validate<S extends z.ZodType>(schema: S, data: unknown, source?: string): z.output<S> {
  const r = schema.safeParse(data);
  if (r.success) return r.data;
  const [first, ...rest] = r.error.issues;
  const { field, detail } = issueMessage(first!);
  throw new ConfigError(field, rest.length ? `${detail} (and ${rest.length} more)` : detail, source);
}

/** Parses YAML text into plain data; map keys stay as written; duplicate keys and syntax errors throw. */
export function parseYamlText(text: string, source?: string): unknown {
  const lines = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter: lines });
  const err = doc.errors[0];
  if (err) {
    // Where it is, and for a duplicate key which one: the parser's own message names neither.
    const at = lines.linePos(err.pos[0]);
    const keyAt = text
      .slice(err.pos[0])
      .split('\n')[0]!
      .replace(/:(\s.*)?$/, '')
      .trim();
    const key = err.code === 'DUPLICATE_KEY' && keyAt ? `${keyAt}, ` : '';
    const where = ` (${key}line ${at.line}, column ${at.col})`;
    throw new ConfigError('', `invalid YAML: ${err.message.split('\n')[0]}${where}`, source);
  }
  let dup: string | undefined;
  visit(doc, {
    Map(_, map) {
      const seen = new Set<string>();
      for (const pair of map.items) {
        if (isScalar(pair.key)) {
          const k = pair.key.source ?? String(pair.key.value);
          pair.key.value = k;
          if (seen.has(k)) dup ??= k;
          seen.add(k);
        } else if (isMap(pair.key)) {
          dup ??= '(complex key)';
        }
      }
    },
  });
  if (dup) throw new ConfigError(dup, 'duplicate or unsupported key', source);
  return doc.toJS({ maxAliasCount: 100 });
}
