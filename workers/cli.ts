// The `fleet-upgrade` command line: a Temporal client and the entry of every worker.
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { ZodError } from 'zod';
import { describeFailure, ExitCode, PeerError } from './cli-errors';
import { runProbe } from './commands/probe';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive integer');
  return n;
}

export function buildProgram(): Command {
  const program = new Command('fleet-upgrade')
    .description('Upgrade QEMU under running VMs, fleet-wide, by local live migration (Temporal)')
    .showHelpAfterError(false)
    .exitOverride();

  program
    .command('probe')
    .description('tell what the QEMU behind a QMP socket is and can do')
    .requiredOption('--qmp <socket>', 'the QMP UNIX socket of a running QEMU')
    .option('--json', 'print exactly one JSON object')
    .option('--timeout <ms>', 'bound on the whole probe', positiveInt, 15_000)
    .action(async (opts: { qmp: string; json?: boolean; timeout: number }) => {
      try {
        process.stdout.write(`${await runProbe({ qmp: opts.qmp, json: opts.json, timeoutMs: opts.timeout })}\n`);
      } catch (err) {
        if (err instanceof ZodError) throw new PeerError(`${opts.qmp}: unexpected reply: ${zodIssue(err)}`);
        throw err;
      }
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv, { from: 'user' });
    return ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed its own one-line message already.
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.badInput;
    }
    const failure = describeFailure(err);
    process.stderr.write(`fleet-upgrade: ${failure.line}\n`);
    if (failure.stack) process.stderr.write(`${failure.stack}\n`);
    return failure.exitCode;
  }
}

function zodIssue(err: ZodError): string {
  const issue = err.issues[0];
  return issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : err.message;
}
