// The `fleet-upgrade` command line: a Temporal client and the entry of every worker.
//
// Loading it loads commander and the commands' registration only: each action imports its command's module
// when it runs (`await import(...)`), so `--help` loads no Temporal SDK, the client commands (`vm status`, …)
// load @temporalio/client without @temporalio/worker, and only the workers and the demo load the worker SDK
// and the workflow bundler. Keep new imports here light (test/integration/json-output.test.ts checks it).
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import type { ZodError } from 'zod';
import { BadInputError, describeFailure, ExitCode, PeerError } from './cli-errors';
import { dialectNames } from '../activities/capabilities/dialects';
import type { PolicyFlags } from './commands/vm';
import { flagOverrides, settingsOf, temporalFlags, withClient, type TemporalFlags } from './commands/common';
import { registerFleetCommands, registerInventoryCommand } from './commands/fleet-commands';

function portNumber(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a TCP port (0-65535)');
  return n;
}

interface DemoFlags {
  qemu?: string;
  hosts: number;
  vmsPerHost?: number;
  vms?: number;
  dialect: string;
  injectFailures: number;
  failureBudget?: number;
  keep?: boolean;
  stop?: string;
  runtimeDir?: string;
  json?: boolean;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number');
  return n;
}

function collect(value: string, prev: string[] = []): string[] {
  return [...prev, value];
}

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
      const { runProbe } = await import('./commands/probe');
      try {
        process.stdout.write(`${await runProbe({ qmp: opts.qmp, json: opts.json, timeoutMs: opts.timeout })}\n`);
      } catch (err) {
        const { ZodError } = await import('zod');
        if (err instanceof ZodError) throw new PeerError(`${opts.qmp}: unexpected reply: ${zodIssue(err)}`);
        throw err;
      }
    });

  temporalFlags(
    program
      .command('host-worker')
      .description('run the activities of one hypervisor (task queue qemu-host.<hostId>)')
      .requiredOption('--config <file>', 'the host config (YAML)')
      .option('--metrics-port <port>', 'serve Prometheus metrics on this port (/metrics)', portNumber),
  ).action(async (opts: TemporalFlags & { config: string; metricsPort?: number }) => {
    const [{ startWorkerTelemetry }, { runHostWorker }] = await Promise.all([
      import('./telemetry'),
      import('./commands/run-worker'),
    ]);
    await startWorkerTelemetry(opts.metricsPort);
    await runHostWorker(opts.config, flagOverrides(opts));
  });

  temporalFlags(
    program
      .command('orchestrator-worker')
      .description('run the workflows (task queue fleet-upgrade)')
      .option('--metrics-port <port>', 'serve Prometheus metrics on this port (/metrics)', portNumber),
  ).action(async (opts: TemporalFlags & { metricsPort?: number }) => {
    const [{ startWorkerTelemetry }, { runOrchestratorWorker }] = await Promise.all([
      import('./telemetry'),
      import('./commands/run-worker'),
    ]);
    await startWorkerTelemetry(opts.metricsPort);
    await runOrchestratorWorker(settingsOf(opts));
  });

  program
    .command('host')
    .description('this host')
    .command('init')
    .description(
      'write a host config allow-listing the QEMU builds of this checkout, and two VM specs (counter, Linux)',
    )
    .requiredOption('--host-id <id>', 'the host id (task queue qemu-host.<id>)')
    .requiredOption('--runtime-dir <dir>', 'where the host keeps records, sockets and logs (keep it short)')
    .option('--netns <name>', "as root: a network namespace with a bridge and a tap for the Linux guest's NIC")
    .action(async (opts: { hostId: string; runtimeDir: string; netns?: string }) => {
      const { hostInit } = await import('./commands/host-init');
      process.stdout.write(`${hostInit(opts.hostId, opts.runtimeDir, opts.netns)}\n`);
    });

  const vm = program.command('vm').description('one VM, by hand');
  vm.command('launch')
    .description('start a VM from a spec on this host and record it')
    .requiredOption('--config <file>', 'the host config (YAML)')
    .requiredOption('--spec <file>', 'the VM spec (YAML)')
    .action(async (opts: { config: string; spec: string }) => {
      const { vmLaunch } = await import('./commands/vm');
      process.stdout.write(`${await vmLaunch(opts.config, opts.spec)}\n`);
    });
  vm.command('resolve')
    .description('after an upgrade that needs an operator: keep the process that holds the guest, stop the others')
    .requiredOption('--config <file>', 'the host config (YAML)')
    .requiredOption('--vm <id>', 'VM id')
    .requiredOption('--keep <generation>', 'the generation to keep (the upgrade names those it kept)', positiveInt)
    .option('--resume', 'resume the kept process if it is paused')
    .option('--json', 'one JSON object on stdout')
    .action(async (opts: { config: string; vm: string; keep: number; resume?: boolean; json?: boolean }) => {
      const { vmResolve } = await import('./commands/vm');
      const r = await vmResolve(opts.config, opts.vm, opts.keep, opts.resume === true);
      process.stdout.write(
        opts.json
          ? `${JSON.stringify(r)}\n`
          : `${r.vmId}: kept generation ${r.kept.generation} (QEMU ${r.kept.label}, pid ${r.kept.pid}), ${r.status}${r.resumed ? ' (resumed)' : ''}; stopped ${r.stopped.length ? `pid ${r.stopped.join(', ')}` : 'nothing'}\n`,
      );
    });
  temporalFlags(
    vm
      .command('upgrade')
      .description('upgrade the QEMU under one VM (workflow upgradeVm)')
      .requiredOption('--host <id>', 'host id')
      .requiredOption('--vm <id>', 'VM id')
      .requiredOption('--to <label>', 'target QEMU version label, allow-listed by the host worker')
      .option('--wait', 'wait for the result; exit 1 unless upgraded')
      .option('--json', 'print one JSON object (with --wait: the result)')
      .option('--strategies <list>', 'preference order, comma-separated (backend-transfer,cpr-transfer,plain)')
      .option('--exclude-backend <id>', 're-create this backend on the destination (repeatable)', collect)
      .option('--require-backend-transfer', 'refuse, touching nothing, unless backends can be handed over')
      .option('--downtime-limit <ms>', 'QEMU downtime-limit (default 300)')
      .option('--bandwidth <MiB/s>', 'QEMU max-bandwidth; 0 unlimited (the default)')
      .option('--completion-timeout-per-gib <sec>', 'cancel and roll back past this per GiB of RAM (default 150)')
      .option('--progress-timeout <sec>', 'cancel and roll back when no byte moved for this long (default 150)')
      .option('--auto-converge', 'QEMU auto-converge'),
  ).action(
    async (
      opts: TemporalFlags & PolicyFlags & { host: string; vm: string; to: string; wait?: boolean; json?: boolean },
    ) => {
      const { checkIds, policyFromFlags, vmUpgrade } = await import('./commands/vm');
      checkIds(opts.host, opts.vm, opts.to);
      const policy = await policyFromFlags(opts);
      const input = {
        hostId: opts.host,
        vmId: opts.vm,
        target: opts.to,
        ...(Object.keys(policy).length ? { policy } : {}),
      };
      const out = await withClient(opts, (client) => vmUpgrade(client, input, opts.wait === true, opts.json === true));
      process.stdout.write(`${out.text}\n`);
      process.exitCode = out.exitCode;
    },
  );
  temporalFlags(
    vm
      .command('cancel')
      .description('cancel the upgrade of one VM: before the switchover it rolls back, after it the upgrade finishes')
      .requiredOption('--host <id>', 'host id')
      .requiredOption('--vm <id>', 'VM id')
      .option(
        '--wait',
        'wait for the end of the upgrade and say how it ended; exit 1 unless the VM stayed on its source',
      )
      .option('--json', 'print one JSON object'),
  ).action(async (opts: TemporalFlags & { host: string; vm: string; wait?: boolean; json?: boolean }) => {
    const { checkIds, vmCancel } = await import('./commands/vm');
    checkIds(opts.host, opts.vm);
    const out = await withClient(opts, (c) => vmCancel(c, opts.host, opts.vm, opts.wait === true, opts.json === true));
    process.stdout.write(`${out.text}\n`);
    process.exitCode = out.exitCode;
  });
  temporalFlags(
    vm
      .command('status')
      .description('phase, progress and result of the upgrade of one VM')
      .requiredOption('--host <id>', 'host id')
      .requiredOption('--vm <id>', 'VM id')
      .option('--json', 'print one JSON object'),
  ).action(async (opts: TemporalFlags & { host: string; vm: string; json?: boolean }) => {
    const { checkIds, vmStatus } = await import('./commands/vm');
    checkIds(opts.host, opts.vm);
    process.stdout.write(`${await withClient(opts, (c) => vmStatus(c, opts.host, opts.vm, opts.json === true))}\n`);
  });
  temporalFlags(
    vm
      .command('retry')
      .description('a new run of the same upgrade after a failure or rollback')
      .requiredOption('--host <id>', 'host id')
      .requiredOption('--vm <id>', 'VM id')
      .option('--wait', 'wait for the result'),
  ).action(async (opts: TemporalFlags & { host: string; vm: string; wait?: boolean }) => {
    const { checkIds, vmRetry } = await import('./commands/vm');
    checkIds(opts.host, opts.vm);
    const out = await withClient(opts, (c) => vmRetry(c, opts.host, opts.vm, opts.wait === true));
    process.stdout.write(`${out.text}\n`);
    process.exitCode = out.exitCode;
  });

  program
    .command('demo')
    .description(
      'the whole product on an embedded default: dev server, workers, VMs (real Linux guests, pinged, writing their disks), a rollout with progress, a table per VM; Ctrl-C stops it all',
    )
    .option('--qemu <kind>', 'real (QEMU 7.2 → 10.0.2, the default when installed) or sim (the simulator)')
    .option('--hosts <n>', 'local hosts, a host worker each', positiveInt, 2)
    .option('--vms-per-host <n>', 'VMs on each host (default: 2 real, 10 sim)', positiveInt)
    .option('--vms <n>', 'VMs in all, spread over the hosts', positiveInt)
    .option('--dialect <name>', 'backend-transfer dialect of the simulator', 'local')
    .option('--inject-failures <n>', 'make n migrations fail (sim), to show rollback and the budget', nonNegativeInt, 0)
    .option('--failure-budget <n>', 'failed VMs before the rollout pauses itself', positiveInt)
    .option('--keep', 'leave the VMs, their networks and the dev server running; says what, and how to stop them')
    .option('--stop <dir>', 'stop what a `demo --keep` left running in <dir> (the folder it printed)')
    .option('--runtime-dir <dir>', 'where the hosts keep records, sockets and logs (default: a temporary folder)')
    .option('--json', 'end with one JSON object')
    .action(async (opts: DemoFlags) => {
      const { runDemo, stopKeptDemo } = await import('./commands/demo');
      if (opts.stop !== undefined) {
        const { stopped } = await stopKeptDemo(opts.stop);
        process.stdout.write(`${opts.json ? JSON.stringify({ stopped }) : stopped.join('\n')}\n`);
        return;
      }
      if (opts.qemu !== undefined && opts.qemu !== 'real' && opts.qemu !== 'sim') {
        throw new BadInputError(`--qemu: ${JSON.stringify(opts.qemu)} is not real or sim`);
      }
      if (!(dialectNames as readonly string[]).includes(opts.dialect)) {
        throw new BadInputError(`--dialect: ${JSON.stringify(opts.dialect)} is not one of ${dialectNames.join(', ')}`);
      }
      const say = (line: string) => process.stderr.write(`${line}\n`);
      const { summary, ok } = await runDemo(
        {
          ...(opts.qemu ? { qemu: opts.qemu as 'real' | 'sim' } : {}),
          hosts: opts.hosts,
          ...(opts.vmsPerHost ? { vmsPerHost: opts.vmsPerHost } : {}),
          ...(opts.vms ? { vms: opts.vms } : {}),
          dialect: opts.dialect,
          injectFailures: opts.injectFailures,
          ...(opts.failureBudget ? { failureBudget: opts.failureBudget } : {}),
          keep: opts.keep === true,
          ...(opts.runtimeDir ? { runtimeDir: opts.runtimeDir } : {}),
          json: opts.json === true,
        },
        say,
      );
      process.stdout.write(`${opts.json ? JSON.stringify(summary) : `done: ${JSON.stringify(summary)}`}\n`);
      process.exitCode = ok ? ExitCode.ok : ExitCode.failed;
    });

  registerFleetCommands(program);
  registerInventoryCommand(program);

  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed its own one-line message already.
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.badInput;
    }
    const failure = await describeFailure(err);
    process.stderr.write(`fleet-upgrade: ${failure.line}\n`);
    if (failure.stack) process.stderr.write(`${failure.stack}\n`);
    return failure.exitCode;
  }
}

function zodIssue(err: ZodError): string {
  const issue = err.issues[0];
  return issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : err.message;
}
