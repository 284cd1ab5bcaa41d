// The launcher against stand-in executables (a tiny QMP-socket listener, a crashing one, a hanging one):
// detachment, readiness, early exit with the log tail, timeout, SIGTERM → SIGKILL escalation; a `path`
// binary's config entry picks the process launcher, whose environment is the entry's.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { socketPath } from '../../activities/host/paths';
import {
  isProcessAlive,
  killQemu,
  launcherFor,
  launcherOfProcess,
  launchQemu,
  processLauncher,
  QemuLaunchError,
} from '../../activities/host/qemu-launcher';
import { killProcessesNaming } from '../helpers/cleanup';
import { useTmpDir } from '../helpers/tmp';

const tmp = useTmpDir('qfl');
// The launcher starts its stand-ins detached: a test that fails before its killQemu leaves them to this.
afterAll(() => killProcessesNaming(tmp()));

function script(name: string, body: string, interpreter = '/bin/sh'): string {
  const file = path.join(tmp(), name);
  writeFileSync(file, `#!${interpreter}\n${body}\n`, { mode: 0o755 });
  return file;
}

/** Listens on the -qmp socket like QEMU (greets, answers commands); `ignoreTerm` makes it survive SIGTERM. */
function fakeQemu(ignoreTerm = false): string {
  return script(
    `fake-qemu${ignoreTerm ? '-stubborn' : ''}.js`,
    `const a = process.argv; const spec = a[a.indexOf('-qmp') + 1];
const sock = /^unix:([^,]+),/.exec(spec)[1];
${ignoreTerm ? "process.on('SIGTERM', () => console.log('ignoring SIGTERM'));" : ''}
// Greets like QEMU, then answers every command (qmp_capabilities, query-status) with its id.
const greeting = '{"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": ""}, "capabilities": []}}';
require('net').createServer((c) => {
  c.on('error', () => {});
  c.write(greeting + '\\n');
  let buf = '';
  c.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\\n'); i >= 0; i = buf.indexOf('\\n')) {
      const m = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      c.write(JSON.stringify({ return: {status: 'running', running: true}, id: m.id }) + '\\n');
    }
  });
}).listen(sock, () => console.log('fake qemu listening'));`,
    process.execPath,
  );
}

const opts = (binary: string, rt: string, vmId = 'vm1', generation = 1) => ({
  binary,
  args: ['-qmp', `unix:${socketPath(rt, vmId, generation, 'qmp')},server=on,wait=off`],
  runtimeDir: rt,
  vmId,
  role: 'source' as const,
  generation,
});

describe('launchQemu / killQemu', () => {
  it('spawns detached in its own session, waits for the QMP socket, logs, and terminates', async () => {
    const rt = path.join(tmp(), 'rt1');
    const q = await launchQemu(opts(fakeQemu(), rt));
    expect(q.qmpSocket).toBe(`${rt}/run/vm1.1.qmp`);
    expect(q.logFile).toBe(`${rt}/log/vm1.1.source.log`);
    expect(isProcessAlive(q.pid, q.qmpSocket)).toBe(true);
    expect(isProcessAlive(q.pid, '/some/other.qmp')).toBe(false);
    const stat = readFileSync(`/proc/${q.pid}/stat`, 'utf8');
    const [, , , session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    expect(Number(session)).toBe(q.pid); // setsid: its own session
    const envNames = readFileSync(`/proc/${q.pid}/environ`, 'utf8')
      .split('\0')
      .filter(Boolean)
      .map((kv) => kv.split('=')[0]);
    expect(envNames).toEqual(['PATH']); // nothing of the worker's environment (e.g. API keys) leaks
    expect(await killQemu(q.pid, { graceMs: 2000 })).toBe('terminated');
    expect(isProcessAlive(q.pid)).toBe(false);
    expect(await killQemu(q.pid, { graceMs: 2000 })).toBe('not-running');
    const log = readFileSync(q.logFile, 'utf8');
    expect(log).toMatch(/^--- .* launching source of vm1 \(generation 1\): /);
    expect(log).toContain('fake qemu listening');
  });

  it('throws with the log tail and exit code when the process dies before it is ready', async () => {
    const rt = path.join(tmp(), 'rt2');
    const err = await launchQemu(
      opts(script('crash.sh', 'echo "qemu: -drive: could not open disk" >&2; exit 3'), rt),
    ).catch((e) => e);
    expect(err).toBeInstanceOf(QemuLaunchError);
    expect(err.message).toMatch(/exited before it was ready \(code 3, signal null\); log tail:\n/);
    expect(err.logTail).toContain('could not open disk');
    expect(err.exitCode).toBe(3);
  });

  it('kills a process that never becomes ready within the timeout', async () => {
    const rt = path.join(tmp(), 'rt3');
    const hang = script('hang.sh', 'echo "$$" > "$(dirname "$0")/hang.pid"; exec sleep 30');
    const err = await launchQemu({ ...opts(hang, rt), timeoutMs: 300 }).catch((e) => e);
    expect(err.message).toMatch(/not ready after 300 ms; killed it/);
    const pid = Number(readFileSync(path.join(tmp(), 'hang.pid'), 'utf8'));
    expect(isProcessAlive(pid)).toBe(false);
  });

  it('escalates to SIGKILL after the grace period', async () => {
    const rt = path.join(tmp(), 'rt4');
    const q = await launchQemu(opts(fakeQemu(true), rt));
    const t0 = Date.now();
    expect(await killQemu(q.pid, { graceMs: 300, expectArg: q.qmpSocket })).toBe('killed');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(readFileSync(q.logFile, 'utf8')).toContain('ignoring SIGTERM');
  });

  it('clears a stale socket file, refuses one in use, and checks its arguments and binary', async () => {
    const rt = path.join(tmp(), 'rt5');
    const first = await launchQemu(opts(fakeQemu(), rt));
    await expect(launchQemu(opts(fakeQemu(), rt))).rejects.toThrow(/socket .*vm1\.1\.qmp is in use/);
    await killQemu(first.pid, { graceMs: 0 }); // SIGKILL: the socket file stays behind
    const again = await launchQemu(opts(fakeQemu(), rt));
    await killQemu(again.pid, { graceMs: 1000 });

    await expect(launchQemu({ ...opts(fakeQemu(), rt), args: [] })).rejects.toThrow(
      /args must carry -qmp unix:.*vm1\.1\.qmp,server=on,wait=off/,
    );
    await expect(launchQemu(opts('/nonexistent/qemu', rt))).rejects.toThrow(
      /QEMU binary \/nonexistent\/qemu is missing or not executable/,
    );
  });

  it('launches a path binary given as its config entry with the process launcher, in its environment', async () => {
    const rt = path.join(tmp(), 'rt-entry');
    const binary = { path: fakeQemu(), dataDirs: [], env: { FLEET_TEST: '1' } };
    expect(launcherFor(binary)).toBe(processLauncher);
    const q = await launchQemu({ ...opts('', rt), binary });
    expect(launcherOfProcess(q.pid)).toBe(processLauncher);
    const env = readFileSync(`/proc/${q.pid}/environ`, 'utf8').split('\0').filter(Boolean);
    expect(env).toContain('FLEET_TEST=1');
    expect(await killQemu(q.pid, { graceMs: 2000, expectArg: q.qmpSocket })).toBe('terminated');
  });

  it('reports a dead or bogus pid as not alive', () => {
    expect(isProcessAlive(0)).toBe(false);
    expect(isProcessAlive(-5)).toBe(false);
    expect(isProcessAlive(2 ** 22 + 1)).toBe(false);
    expect(isProcessAlive(process.pid)).toBe(true);
  });
});
