// The shapes of QMP messages the client relies on, validated with zod. Anything else is a protocol error.
import { z } from 'zod';

export const greetingSchema = z.object({
  QMP: z.object({
    version: z.object({
      qemu: z.object({ major: z.number().int(), minor: z.number().int(), micro: z.number().int() }),
      package: z.string(),
    }),
    capabilities: z.array(z.string()),
  }),
});
export type QmpGreeting = z.infer<typeof greetingSchema>['QMP'];

const id = z.union([z.string(), z.number()]).optional();

export const successSchema = z.object({ return: z.unknown(), id });
export const failureSchema = z.object({
  error: z.object({ class: z.string(), desc: z.string() }),
  id,
});
export const eventSchema = z.object({
  event: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
  timestamp: z.object({ seconds: z.number(), microseconds: z.number() }),
});

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** QEMU's own timestamp of the event, in milliseconds since the epoch (microsecond precision). */
  timestampMs: number;
}

export type QmpMessage =
  | { kind: 'greeting'; greeting: QmpGreeting }
  | { kind: 'return'; id: string | number | undefined; value: unknown }
  | { kind: 'error'; id: string | number | undefined; errorClass: string; desc: string }
  | { kind: 'event'; event: QmpEvent };

/** Classifies one parsed JSON value; returns undefined when it has no QMP shape. */
export function classifyMessage(value: unknown): QmpMessage | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  if ('return' in value) {
    const r = successSchema.safeParse(value);
    return r.success ? { kind: 'return', id: r.data.id, value: r.data.return } : undefined;
  }
  if ('error' in value) {
    const r = failureSchema.safeParse(value);
    return r.success
      ? { kind: 'error', id: r.data.id, errorClass: r.data.error.class, desc: r.data.error.desc }
      : undefined;
  }
  if ('event' in value) {
    const r = eventSchema.safeParse(value);
    if (!r.success) return undefined;
    const { seconds, microseconds } = r.data.timestamp;
    return {
      kind: 'event',
      event: { event: r.data.event, data: r.data.data ?? {}, timestampMs: seconds * 1000 + microseconds / 1000 },
    };
  }
  if ('QMP' in value) {
    const r = greetingSchema.safeParse(value);
    return r.success ? { kind: 'greeting', greeting: r.data.QMP } : undefined;
  }
  return undefined;
}
