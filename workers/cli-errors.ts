// How the CLI ends: one line on stderr and a distinct exit code for every failure an operator can cause
// or meet; a stack trace only for a bug of ours. Every command module imports this one, so it loads nothing
// heavy itself: describeFailure imports the modules of the errors it recognizes when a command failed.

export const ExitCode = {
  ok: 0,
  /** The operation ran and failed (an upgrade rolled back, a rollout failed). */
  failed: 1,
  /** Bad input: arguments, config, plan or spec. Nothing was started. */
  badInput: 2,
  /** A peer (a QEMU monitor, the Temporal service) could not be reached or misbehaved. */
  peer: 3,
  /** A bug of ours. */
  internal: 70,
} as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export class BadInputError extends CliError {
  constructor(message: string) {
    super(message, ExitCode.badInput);
  }
}

export class PeerError extends CliError {
  constructor(message: string) {
    super(message, ExitCode.peer);
  }
}

/** Maps any error to its one line and exit code. */
export async function describeFailure(err: unknown): Promise<{ line: string; exitCode: number; stack?: string }> {
  if (err instanceof CliError) return { line: err.message, exitCode: err.exitCode };
  const { isQmpFailure } = await import('../activities/qmp/errors');
  if (isQmpFailure(err)) return { line: err.message, exitCode: ExitCode.peer };
  const { ConfigError } = await import('../activities/host/validate');
  if (err instanceof ConfigError) return { line: err.message, exitCode: ExitCode.badInput };
  const { ServiceError, WorkflowFailedError } = await import('@temporalio/client');
  if (err instanceof WorkflowFailedError) {
    let cause: unknown = err.cause;
    while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
    const why = cause instanceof Error ? cause.message : err.message;
    return { line: `the workflow failed: ${why}`, exitCode: ExitCode.failed };
  }
  if (err instanceof ServiceError) {
    // A cluster whose namespace lacks the project's search attributes refuses every workflow start.
    const detail = (err.cause as { details?: string } | undefined)?.details ?? '';
    if (/search attribute/i.test(detail))
      return {
        line: `${err.message}: ${detail} (register the search attributes: README, Running against your Temporal cluster)`,
        exitCode: ExitCode.peer,
      };
  }
  const [{ VmAlreadyRunningError }, { QemuLaunchError }] = await Promise.all([
    import('../activities/host/vm-launch'),
    import('../activities/host/qemu-launcher'),
  ]);
  if (err instanceof VmAlreadyRunningError) return { line: err.message, exitCode: ExitCode.failed };
  if (err instanceof QemuLaunchError)
    return { line: err.message.split('\n')[0] ?? err.message, exitCode: ExitCode.failed };
  const e = err instanceof Error ? err : new Error(String(err));
  return { line: `internal error: ${e.message}`, exitCode: ExitCode.internal, stack: e.stack };
}
