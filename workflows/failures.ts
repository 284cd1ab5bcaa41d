// Failure types the workflow handles itself; host workers raise them non-retryable.
import { ApplicationFailure } from '@temporalio/common';
export const failureTypes = {
  vmNotFound: 'VmNotFound',
  notAllowed: 'NotAllowed',
  migrationFailed: 'MigrationFailed',
  progressStalled: 'ProgressStalled',
  completionTimeout: 'CompletionTimeout',
  processLost: 'ProcessLost',
  staleSource: 'StaleSource',
  verificationFailed: 'VerificationFailed',
  /** A destination QEMU exited by itself before it was ready: the same launch would fail the same way. */
  launchFailed: 'LaunchFailed',
  /**
   * The source's monitor did not answer in time where a retry of the whole step would only wait again: the
   * rollback that follows reconciles; if the source is silent there too, the VM is left to an operator.
   */
  monitorUnresponsive: 'MonitorUnresponsive',
  /** Which process holds the guest cannot be told: every candidate was kept and an operator must decide. */
  needsOperator: 'NeedsOperator',
} as const;

/**
 * Failure types the workflow tells apart that are not in the non-retryable list above: a failure of such a
 * type is retried unless the failure it wraps (its cause) is final.
 */
export const retryableFailureTypes = {
  /** The finalize part of verifyAndFinalize failed, after the destination verified. */
  finalizeFailed: 'FinalizeFailed',
} as const;

export type FailureType = (typeof failureTypes)[keyof typeof failureTypes];

/** What a failure says, read once through Temporal's wrapping (activity, child workflow, application). */
export interface FailureFacts {
  /** The failure's own words: the innermost message of its cause chain. */
  reason: string;
  /** The handled failure types anywhere in the chain. */
  types: ReadonlySet<string>;
  /** A migrate failure's details say that the destination may have run the guest. */
  destinationRan: boolean;
}

/** Reads a failure's cause chain once, for every decision the workflows take on it. */
export function failureOf(err: unknown): FailureFacts {
  const types = new Set<string>();
  let destinationRan = false;
  let innermost: unknown = err;
  for (let e: unknown = err; e instanceof Error; e = 'cause' in e ? e.cause : undefined) {
    innermost = e;
    if (e instanceof ApplicationFailure) {
      if (e.type) types.add(e.type);
      if ((e.details?.[0] as { destinationRan?: boolean } | undefined)?.destinationRan) destinationRan = true;
    }
  }
  const reason = innermost instanceof Error ? innermost.message : String(innermost);
  return { reason, types, destinationRan };
}

/** The failure's own words, through Temporal's wrapping. */
export const reasonOf = (err: unknown): string => failureOf(err).reason;

/** The host worker refused the request (unknown VM, label not allow-listed): nothing was touched. */
export function isRefusal(err: unknown): boolean {
  const { types } = failureOf(err);
  return types.has(failureTypes.vmNotFound) || types.has(failureTypes.notAllowed);
}
