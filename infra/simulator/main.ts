// The simulator as a process, exec'd like QEMU (see qemu-sim.js): parse, start, serve until quit, a
// signal, a failed incoming migration or a simulated crash. Startup errors go to stderr as QEMU's do,
// exit status 1. -daemonize forks a detached child and returns once it is up, as QEMU does.
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { CommandLineError, errorLine, parseArgs, wantsMsgTimestamp } from './args';
import { SimulatedQemu } from './vm';

const DAEMON_ENV = 'QEMU_SIM_DAEMON_CHILD';

let timestamps = false;

function die(message: string): never {
  process.stderr.write(errorLine(message, timestamps));
  process.exit(1);
}

/** Parent side of -daemonize: start the detached child, relay its startup errors, exit when it is up. */
function daemonize(argv: string[]): void {
  const child = spawn(process.execPath, [process.argv[1], ...argv], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    env: { ...process.env, [DAEMON_ENV]: '1' },
  });
  child.stderr?.pipe(process.stderr);
  const status = child.stdio[3] as NodeJS.ReadableStream;
  status.on('data', () => {
    child.stderr?.unpipe(process.stderr);
    child.unref();
    process.exit(0);
  });
  child.on('exit', (code) => process.exit(code ?? 1));
}

export async function main(argv: string[]): Promise<void> {
  const daemonChild = process.env[DAEMON_ENV] === '1';
  timestamps = wantsMsgTimestamp(argv);
  let quiet = false;
  let vm: SimulatedQemu;
  try {
    const help = parseArgs(argv).help;
    if (help !== undefined) {
      process.stdout.write(help);
      process.exit(0);
    }
    vm = new SimulatedQemu(argv, { processMode: true, stderr: (t) => void (quiet || process.stderr.write(t)) });
  } catch (e) {
    if (e instanceof CommandLineError) die(e.message);
    throw e;
  }
  if (vm.cfg.daemonize && !daemonChild) return daemonize(argv);
  try {
    await vm.start();
  } catch (e) {
    die((e as Error).message);
  }
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      vm.stderr(`terminating on signal ${sig === 'SIGTERM' ? 15 : sig === 'SIGINT' ? 2 : 1}`);
      void vm.stop();
    });
  }
  void vm.exited.then((code) => process.exit(code));
  if (daemonChild) {
    // Tell the parent we are up; from now on stdio goes nowhere, as QEMU redirects it to /dev/null.
    const status = createWriteStream('', { fd: 3 });
    status.on('error', () => undefined);
    status.end('ok\n');
    quiet = true;
    process.stderr.on('error', () => undefined);
  }
}

if (require.main === module) void main(process.argv.slice(2));
