// The rollout plan: what an operator writes (YAML, validated here with zod) and the normalized plan the
// `rollout` workflow receives. Pure: no I/O. Workflows import only its types (zod stays out of the bundle).
import { z } from 'zod';
import type { MigrationPolicy } from './policy';
import { CronError, isKnownTimeZone, nextStart, parseCron, parseDuration, type MaintenanceWindow } from './windows';
import { resolveWaves, WaveError, type Approvals, type Wave, type WaveSpec } from './waves';
import { SAFE_ID, SAFE_LABEL, VM_REF, workflowIds } from '../names';

export interface RolloutPlan {
  /** The rollout's id; its workflow id is `rollout/<name>`. */
  name: string;
  /** Version label of the target QEMU, allow-listed by every host worker. */
  target: string;
  /** Hosts in plan order, after exclusions. */
  hosts: string[];
  /** VMs left alone, as `host/vm`. */
  excludeVms: string[];
  waves: Wave[];
  concurrency: { hosts: number; vmsPerHost: number };
  /** The rollout pauses itself once this many VMs failed since it started or was last resumed. */
  failureBudget: number;
  approvals: Approvals;
  /** Empty: always open. */
  windows: MaintenanceWindow[];
  preflight: { onFailure: 'fail' | 'skip'; timeoutSec: number };
  /** Migration policy of every VM (the defaults of workflows/decisions/policy.ts fill the rest). */
  policy: Partial<MigrationPolicy>;
  /** Continue-as-new past this many history events (rollout and upgradeHost). */
  limits: { historyEvents: number };
}

export class PlanError extends Error {
  override name = 'PlanError';
  constructor(
    /** `windows[0].timezone` */
    readonly field: string,
    readonly detail: string,
  ) {
    super(field ? `${field}: ${detail}` : detail);
  }
}

const ID = SAFE_ID;
const LABEL = SAFE_LABEL;
const hostId = z.string().regex(ID, 'must be a host id matching ^[a-z0-9][a-z0-9._-]{0,62}$');
const vmRef = z.string().regex(VM_REF, 'must be host/vm (two ids joined by /)');

const unique = <T extends z.ZodType<string>>(item: T) =>
  z.array(item).superRefine((xs, ctx) => {
    const seen = new Set<string>();
    xs.forEach((x, i) => {
      if (seen.has(x)) ctx.addIssue({ code: 'custom', path: [i], message: `duplicate ${JSON.stringify(x)}` });
      seen.add(x);
    });
  });

const WAVE_SIZE_HINT = 'must be a count, a percent such as "25%", "rest", or a list of host ids';
const waveSize = z.union([
  z.int().min(1),
  z.string().superRefine((v, ctx) => {
    const pct = /^\d+(\.\d+)?%$/.test(v) ? Number(v.slice(0, -1)) : undefined;
    if (v !== 'rest' && !(pct !== undefined && pct > 0 && pct <= 100))
      ctx.addIssue({ code: 'custom', message: WAVE_SIZE_HINT });
  }),
  z.array(hostId).min(1),
]);

const durationField = z.union([z.int().min(1), z.string()]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? v * 1000 : parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a duration (e.g. 90s, 4h, 1h30m)` });
    return z.NEVER;
  }
  if (ms < 1000 || ms > 31 * 86_400_000) {
    ctx.addIssue({ code: 'custom', message: 'must be between 1s and 31d' });
    return z.NEVER;
  }
  return ms;
});

const windowSchema = z
  .strictObject({
    start: z.string().superRefine((s, ctx) => {
      try {
        parseCron(s);
      } catch (err) {
        if (!(err instanceof CronError)) throw err;
        ctx.addIssue({ code: 'custom', message: `invalid cron ${JSON.stringify(s)}: ${err.message}` });
      }
    }),
    duration: durationField,
    timezone: z.string().superRefine((tz, ctx) => {
      if (!isKnownTimeZone(tz)) ctx.addIssue({ code: 'custom', message: `unknown time zone ${JSON.stringify(tz)}` });
    }),
  })
  .superRefine((w, ctx) => {
    let spec;
    try {
      spec = parseCron(w.start);
    } catch {
      return; // reported on `start`
    }
    if (!isKnownTimeZone(w.timezone)) return;
    if (nextStart(spec, w.timezone, Date.UTC(2024, 0, 1)) === undefined) {
      ctx.addIssue({ code: 'custom', path: ['start'], message: `${JSON.stringify(w.start)} never matches a date` });
    }
  });

const strategy = z.enum(['backend-transfer', 'cpr-transfer', 'cpr-exec', 'plain']);

const policySchema = z.strictObject({
  strategies: unique(strategy).min(1).optional(),
  excludeBackends: z.array(z.string().min(1).max(256)).optional(),
  requireBackendTransfer: z.boolean().optional(),
  transport: z.literal('unix', 'must be unix: backend transfer and CPR pass file descriptors').optional(),
  downtimeLimitMs: z.int().min(1).max(600_000).optional(),
  bandwidthLimitMiBps: z.int().min(0).optional(),
  completionTimeoutPerGiBSec: z.int().min(1).max(86_400).optional(),
  progressTimeoutSec: z.int().min(1).max(86_400).optional(),
  autoConverge: z.boolean().optional(),
});

export const PlanFileSchema = z.strictObject({
  name: z.string().regex(ID, 'must match ^[a-z0-9][a-z0-9._-]{0,62}$'),
  target: z.string().regex(LABEL, 'must be a version label matching ^[a-z0-9][a-z0-9._-]{0,31}$'),
  hosts: unique(hostId).min(1, 'must name at least one host'),
  exclude: z.strictObject({ hosts: unique(hostId).default([]), vms: unique(vmRef).default([]) }).prefault({}),
  waves: z
    .array(
      z.strictObject({
        name: z.string().regex(ID, 'must match ^[a-z0-9][a-z0-9._-]{0,62}$').optional(),
        hosts: waveSize,
      }),
    )
    .min(1)
    .default([
      { name: 'canary', hosts: 1 },
      { name: 'rest', hosts: 'rest' },
    ]),
  concurrency: z
    .strictObject({ hosts: z.int().min(1).max(10_000).default(1), vmsPerHost: z.int().min(1).max(64).default(1) })
    .prefault({}),
  failureBudget: z.int().min(1).default(1),
  approvals: z.enum(['none', 'after-canary', 'between-waves']).default('none'),
  windows: z.array(windowSchema).default([]),
  preflight: z
    .strictObject({
      onFailure: z.enum(['fail', 'skip']).default('fail'),
      timeoutSec: z.int().min(1).max(600).default(20),
    })
    .prefault({}),
  policy: policySchema.default({}),
  limits: z.strictObject({ historyEvents: z.int().min(200).max(50_000).default(10_000) }).prefault({}),
});

export type PlanFile = z.input<typeof PlanFileSchema>;

/** `['windows', 0, 'timezone']` → `windows[0].timezone`. */
export function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out;
}

function firstIssue(err: z.ZodError): PlanError {
  const issue = err.issues[0]!;
  const more = err.issues.length > 1 ? ` (and ${err.issues.length - 1} more)` : '';
  if (issue.code === 'unrecognized_keys') {
    return new PlanError(fieldPath([...issue.path, issue.keys[0]!]), `unknown field${more}`);
  }
  if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) {
    return new PlanError(fieldPath(issue.path), `is required${more}`);
  }
  if (issue.code === 'invalid_union') {
    // Name what each alternative wanted instead of zod's "Invalid input".
    return new PlanError(
      fieldPath(issue.path),
      `must be a count, a percent such as "25%", "rest", or a list of host ids${more}`,
    );
  }
  return new PlanError(fieldPath(issue.path), `${issue.message}${more}`);
}

function sizeOf(v: number | string | string[]): WaveSpec['size'] {
  if (typeof v === 'number') return { count: v };
  if (Array.isArray(v)) return { hosts: v };
  if (v === 'rest') return { rest: true };
  return { percent: Number(v.slice(0, -1)) };
}

/** Validates parsed YAML and normalizes it; throws PlanError naming the first field at fault. */
export function parsePlan(data: unknown): RolloutPlan {
  const r = PlanFileSchema.safeParse(data);
  if (!r.success) throw firstIssue(r.error);
  const p = r.data;
  p.exclude.hosts.forEach((h, i) => {
    if (!p.hosts.includes(h)) throw new PlanError(`exclude.hosts[${i}]`, `host ${JSON.stringify(h)} is not in hosts`);
  });
  p.exclude.vms.forEach((v, i) => {
    const h = v.split('/')[0]!;
    if (!p.hosts.includes(h)) throw new PlanError(`exclude.vms[${i}]`, `host ${JSON.stringify(h)} is not in hosts`);
  });
  const hosts = p.hosts.filter((h) => !p.exclude.hosts.includes(h));
  if (hosts.length === 0) throw new PlanError('exclude.hosts', 'excludes every host');
  let waves: Wave[];
  try {
    waves = resolveWaves(
      hosts,
      p.waves.map((w) => ({ ...(w.name ? { name: w.name } : {}), size: sizeOf(w.hosts) })),
    );
  } catch (err) {
    if (!(err instanceof WaveError)) throw err;
    throw new PlanError(err.index === undefined ? 'waves' : `waves[${err.index}].hosts`, err.message);
  }
  const policy: Partial<MigrationPolicy> = {};
  for (const [k, v] of Object.entries(p.policy)) if (v !== undefined) Object.assign(policy, { [k]: v });
  return {
    name: p.name,
    target: p.target,
    hosts,
    excludeVms: p.exclude.vms,
    waves,
    concurrency: p.concurrency,
    failureBudget: p.failureBudget,
    approvals: p.approvals,
    windows: p.windows.map((w) => ({ start: w.start.trim(), durationMs: w.duration, timezone: w.timezone })),
    preflight: p.preflight,
    policy,
    limits: p.limits,
  };
}

/** The workflow id of a rollout. */
export function rolloutWorkflowId(name: string): string {
  return workflowIds.rollout(name);
}
