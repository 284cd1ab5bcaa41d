// `fleet-upgrade probe` as an operator runs it: the real CLI process (node bin/fleet-upgrade.js) against
// misbehaving fake peers on real UNIX sockets and against real QEMU 7.2 and 10.0.2. Every failure ends with
// exit code 3 (a peer failure) within 20 s and exactly one line on stderr naming the socket and what went
// wrong, never a stack trace. Bad usage ends with exit code 2.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { projectRoot, qemu10, qemu72 } from '../../infra/real-parts';
import { main } from '../../workers/cli';
import { writeCounterGuest } from '../../infra/guest/counter-guest';
import { event, FakeQmpPeer, greeting, type ConnectionScript } from '../helpers/fake-qmp-peer';
import { counterGuestArgs, killAllVms, launchQemu } from '../helpers/real-vm';
import { useTmpDir } from '../helpers/tmp';

jest.setTimeout(60_000);

const tmp = useTmpDir('qfpc');
const bin = path.join(projectRoot, 'bin', 'fleet-upgrade.js');
const peers: FakeQmpPeer[] = [];
let counter = 0;

/** The sources the compiled CLI is made of: their dist/ outputs must be at least as new. */
const cliSources = [
  'workers/cli.ts',
  'workers/cli-errors.ts',
  'workers/commands/probe.ts',
  'activities/qmp/client.ts',
  'activities/qmp/line-framer.ts',
  'activities/qmp/messages.ts',
  'activities/qmp/errors.ts',
  'activities/capabilities/qapi-schema.ts',
  'activities/capabilities/dialects.ts',
  'activities/capabilities/features.ts',
  'activities/capabilities/probe.ts',
];

/** `npm run build` (tsc -p tsconfig.build.json), then checks that the CLI's own outputs are fresh. */
function buildCli(): void {
  const tsc = path.join(projectRoot, 'node_modules', '.bin', 'tsc');
  const r = spawnSync(tsc, ['-p', 'tsconfig.build.json'], { cwd: projectRoot, encoding: 'utf8', timeout: 120_000 });
  // tsc emits even when a file elsewhere in the project has a type error; what matters here is that the
  // files the CLI is made of compiled without error and are fresh.
  const output = `${r.stdout}${r.stderr}`;
  const ours = output.split('\n').filter((l) => cliSources.some((s) => l.startsWith(s)));
  if (ours.length) throw new Error(`the CLI does not compile:\n${ours.join('\n')}`);
  for (const src of cliSources) {
    const out = path.join(projectRoot, 'dist', src.replace(/\.ts$/, '.js'));
    if (!existsSync(out) || statSync(out).mtimeMs < statSync(path.join(projectRoot, src)).mtimeMs) {
      throw new Error(`${out} is missing or older than ${src} after the build:\n${output}`);
    }
  }
}

interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  endedAt: number;
}

/** Runs the real CLI process; kills it after killAfterMs (a hung CLI then fails the assertions). */
function runCli(args: string[], killAfterMs = 25_000): Promise<CliRun> {
  const started = Date.now();
  const child = spawn(process.execPath, [bin, ...args], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  return new Promise((resolve) =>
    child.once('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, endedAt: Date.now() });
    }),
  );
}

async function startPeer(script: ConnectionScript): Promise<FakeQmpPeer> {
  const peer = await FakeQmpPeer.start(path.join(tmp(), `p${counter++}.sock`), script);
  peers.push(peer);
  return peer;
}

/**
 * The contract of every failure: exit 3 within 20 s, one line on stderr naming the socket, no stack. The 20 s
 * count from the spawn, or from `since` (when the peer accepted the CLI's connection) where node's own
 * start-up time on a loaded machine must not count against the CLI.
 */
function expectPeerFailure(run: CliRun, socket: string, what: RegExp, since?: number): void {
  const context = JSON.stringify(run);
  expect({ code: run.code, context }).toEqual({ code: 3, context });
  expect(since === undefined ? run.ms : run.endedAt - since).toBeLessThan(20_000);
  expect(run.stdout).toBe('');
  expect(run.stderr.endsWith('\n')).toBe(true);
  const lines = run.stderr.slice(0, -1).split('\n');
  expect(lines).toHaveLength(1);
  const line = lines[0]!;
  expect(line.startsWith('fleet-upgrade: ')).toBe(true);
  expect(line).toContain(socket);
  expect(line).toMatch(what);
  expect(line).not.toMatch(/\bat .*\.js:\d+/);
  expect(line).not.toMatch(/internal error/);
}

/** Scripts of peers that misbehave. */
const negotiated =
  (then: ConnectionScript): ConnectionScript =>
  async (c) => {
    await c.negotiate();
    await then(c);
  };
const silent: ConnectionScript = () => undefined;

beforeAll(() => buildCli(), 120_000);
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => p.close()));
  await killAllVms();
});

describe('fleet-upgrade probe against misbehaving peers (real CLI process)', () => {
  it('a peer that closes at once', async () => {
    const peer = await startPeer((c) => c.destroy());
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '3000']);
    expectPeerFailure(run, peer.socketPath, /connection lost: the peer closed the connection/);
  });

  it('a peer that never greets (hangs)', async () => {
    const peer = await startPeer(silent);
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '2000']);
    expectPeerFailure(run, peer.socketPath, /no answer to the connection and greeting within 2000 ms/);
    expect(run.ms).toBeGreaterThanOrEqual(1_900);
  });

  it('a peer that sends garbage (a banner of another protocol)', async () => {
    const peer = await startPeer((c) => c.writeRaw('SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n'));
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '3000']);
    expectPeerFailure(run, peer.socketPath, /protocol error: not JSON: SSH-2\.0-OpenSSH/);
  });

  it('a peer that sends garbage after negotiating (binary bytes)', async () => {
    const peer = await startPeer(negotiated((c) => c.writeRaw(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x7b, 0x0a]))));
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '3000']);
    expectPeerFailure(run, peer.socketPath, /protocol error: not JSON/);
  });

  // BUG (activities/qmp/client.ts truncate(), or workers/cli-errors.ts): the peer's bytes are quoted raw in
  // the message, so a garbage line's control characters (CR, ESC sequences, BEL) reach the operator's
  // terminal: a CR overwrites the start of the line, ESC[2J clears the screen.
  it('a peer that sends garbage with control characters: they are escaped, not printed raw', async () => {
    const peer = await startPeer((c) => c.writeRaw('HTTP/1.1 400\rBad \u001b[2J\u001b[31mRequest\u0007\n'));
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '3000']);
    expectPeerFailure(run, peer.socketPath, /protocol error: not JSON: HTTP\/1\.1 400/);
    const controls = [...run.stderr.slice(0, -1)].filter((ch) => ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f);
    expect(controls).toEqual([]);
  });

  it('a peer that greets, then never answers qmp_capabilities', async () => {
    const peer = await startPeer((c) => c.send(greeting()));
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '2000']);
    expectPeerFailure(run, peer.socketPath, /no answer to .* within 2000 ms/);
  });

  it('a peer that negotiates, then stops answering', async () => {
    const peer = await startPeer(negotiated(silent));
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '2000']);
    expectPeerFailure(run, peer.socketPath, /no answer to .* within 2000 ms/);
  });

  it('a peer that sends an oversized line (over the 16 MiB bound, never ending)', async () => {
    const peer = await startPeer(
      negotiated(async (c) => {
        await c.nextCommand();
        c.writeRaw(`{"return": "${'x'.repeat(17 * 1024 * 1024)}`);
      }),
    );
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '5000']);
    expectPeerFailure(run, peer.socketPath, /protocol error: a message longer than 16777216 bytes/);
  });

  it('a socket path that does not exist', async () => {
    const missing = path.join(tmp(), 'nothing-here.sock');
    const run = await runCli(['probe', '--qmp', missing, '--timeout', '3000']);
    expectPeerFailure(run, missing, /cannot connect: .*ENOENT/);
  });

  it('a peer that closes in the middle of the probe', async () => {
    const peer = await startPeer(
      negotiated(async (c) => {
        await c.nextCommand();
        c.send(event('SHUTDOWN', { guest: false }));
        c.destroy();
      }),
    );
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '3000']);
    expectPeerFailure(run, peer.socketPath, /connection lost/);
  });

  it('a peer that answers with the wrong shape', async () => {
    const peer = await startPeer(
      negotiated(async (c) => {
        for (;;) {
          const cmd = await c.nextCommand(10_000);
          c.send({ return: cmd.execute === 'query-version' ? { qemu: 'ten' } : {}, id: cmd.id });
        }
      }),
    );
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '3000']);
    expectPeerFailure(run, peer.socketPath, /unexpected reply/);
  });

  it('a peer that refuses the commands of the probe', async () => {
    const peer = await startPeer(
      negotiated(async (c) => {
        for (;;) {
          const cmd = await c.nextCommand(10_000);
          c.send({
            error: { class: 'CommandNotFound', desc: `The command ${cmd.execute} has not been found` },
            id: cmd.id,
          });
        }
      }),
    );
    const run = await runCli(['probe', '--qmp', peer.socketPath, '--timeout', '3000']);
    expectPeerFailure(run, peer.socketPath, /failed: CommandNotFound: The command .* has not been found/);
  });

  it('with the default timeout, hanging peers end the CLI with exit 3 within 20 s', async () => {
    const neverGreets = await startPeer(silent);
    const stopsAnswering = await startPeer(negotiated(silent));
    const [a, b] = await Promise.all([
      runCli(['probe', '--qmp', neverGreets.socketPath], 60_000),
      runCli(['probe', '--qmp', stopsAnswering.socketPath, '--json'], 60_000),
    ]);
    const [connA, connB] = await Promise.all([neverGreets.nextConnection(), stopsAnswering.nextConnection()]);
    expectPeerFailure(
      a!,
      neverGreets.socketPath,
      /no answer to the connection and greeting within 15000 ms/,
      connA.acceptedAt,
    );
    expectPeerFailure(b!, stopsAnswering.socketPath, /no answer to .* within 15000 ms/, connB.acceptedAt);
    // Wall clock with node's start-up included (seconds on a loaded machine): reported, not asserted.
    console.log(
      `default-timeout hang cases: ${a!.ms} ms and ${b!.ms} ms from spawn to exit; ` +
        `${a!.endedAt - connA.acceptedAt} ms and ${b!.endedAt - connB.acceptedAt} ms from connection to exit`,
    );
  }, 90_000);
});

describe('fleet-upgrade probe: bad usage ends with exit 2', () => {
  it('real process: no --qmp', async () => {
    const run = await runCli(['probe']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--qmp/);
    expect(run.stderr).not.toMatch(/\bat .*\.js:\d+/);
  });

  it.each([
    [['probe', '--qmp'], /argument missing/],
    [['probe', '--qmp', '/tmp/x.sock', '--timeout', '0'], /positive integer/],
    [['probe', '--qmp', '/tmp/x.sock', '--timeout', 'soon'], /positive integer/],
    [['probe', '--qmp', '/tmp/x.sock', '--frobnicate'], /unknown option/],
    [['no-such-command'], /unknown command/],
  ])('in process: %j', async (argv, message) => {
    const written: string[] = [];
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    try {
      await expect(main(argv)).resolves.toBe(2);
    } finally {
      spy.mockRestore();
    }
    expect(written.join('')).toMatch(message);
  });
});

describe('fleet-upgrade probe against real QEMU', () => {
  it('7.2 (pc alias): the concrete machine type, dialect none, plain only; exit 0 with one JSON object', async () => {
    const disk = writeCounterGuest(path.join(tmp(), 'p72.img'));
    const vm = await launchQemu(qemu72, { dir: tmp(), name: 'p72', args: counterGuestArgs('pc', disk) });
    const run = await runCli(['probe', '--qmp', vm.qmpSocket, '--json']);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.stdout.trim().split('\n')).toHaveLength(1);
    const out = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({
      qemuVersion: expect.stringMatching(/^7\.2\.\d+$/),
      status: 'running',
      machine: 'pc-i440fx-7.2',
      strategies: ['plain'],
      backendTransfer: { dialect: 'none', transferable: [] },
    });
  });

  it('10.0.2 on shared memfd RAM with aux-ram-share: cpr-transfer before plain; text output', async () => {
    const disk = writeCounterGuest(path.join(tmp(), 'p10.img'));
    const vm = await launchQemu(qemu10, {
      dir: tmp(),
      name: 'p10',
      args: counterGuestArgs('pc-i440fx-10.0,memory-backend=ram0,aux-ram-share=on', disk, [
        '-object',
        'memory-backend-memfd,id=ram0,size=64M,share=on',
      ]),
    });
    const json = await runCli(['probe', '--qmp', vm.qmpSocket, '--json']);
    expect({ code: json.code, stderr: json.stderr }).toEqual({ code: 0, stderr: '' });
    expect(JSON.parse(json.stdout)).toMatchObject({
      qemuVersion: '10.0.2',
      status: 'running',
      machine: 'pc-i440fx-10.0',
      strategies: ['cpr-transfer', 'plain'],
      backendTransfer: { dialect: 'none', transferable: [] },
    });
    const text = await runCli(['probe', '--qmp', vm.qmpSocket]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^QEMU\s+10\.0\.2/m);
    expect(text.stdout).toMatch(/^memory\s+memory-backend-memfd, shared, aux-ram-share$/m);
    expect(text.stdout).toMatch(/^strategies\s+cpr-transfer, plain$/m);
    expect(text.stdout).toMatch(/^dialect\s+none$/m);
  });
});
