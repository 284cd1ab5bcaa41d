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
} as const;

export type FailureType = (typeof failureTypes)[keyof typeof failureTypes];
