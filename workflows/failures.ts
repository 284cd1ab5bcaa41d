// Failure types the workflow handles itself; host workers raise them non-retryable.
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
  /** Which process holds the guest cannot be told: every candidate was kept and an operator must decide. */
  needsOperator: 'NeedsOperator',
} as const;

export type FailureType = (typeof failureTypes)[keyof typeof failureTypes];
