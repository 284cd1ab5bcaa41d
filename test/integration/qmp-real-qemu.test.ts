// Real QEMU, driven only by the QmpClient: a plain local live migration 7.2 → 10.0.2 over a UNIX socket, and
// cpr-transfer 10.0.2 → 10.0.2 (main channel on the command line, and -incoming defer + migrate-incoming),
// each with the counter guest of docs/DESIGN.md proving the guest survived and keeps running on the destination.
// Prints the measured figures (total time, downtime, observed pause).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { socketPath } from '../../activities/host/paths';
import { killQemu, launchQemu as hostLaunchQemu, QemuLaunchError } from '../../activities/host/qemu-launcher';
import type { QmpClient } from '../../activities/qmp/client';
import type { QmpEvent } from '../../activities/qmp/messages';
import { qemu10, qemu72, requireQemu } from '../../infra/real-parts';
import { COUNTER_ADDRESS, parseCounter, writeCounterGuest } from '../../infra/guest/counter-guest';
import { counterGuestArgs, killAllVms, launchQemu, sleep } from '../helpers/real-vm';
import { useTmpDir } from '../helpers/tmp';

jest.setTimeout(60_000);

const tmp = useTmpDir('qfrq');
const clients: QmpClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await killAllVms();
});

async function track(p: Promise<QmpClient>): Promise<QmpClient> {
  const c = await p;
  clients.push(c);
  return c;
}

async function readCounter(qmp: QmpClient): Promise<number> {
  const out = await qmp.execute<string>('human-monitor-command', {
    'command-line': `x /1wx 0x${COUNTER_ADDRESS.toString(16)}`,
  });
  return parseCounter(out);
}

/** Waits until the guest has booted and its counter rises; returns the last value read. */
async function counterRising(qmp: QmpClient, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = await readCounter(qmp);
  for (;;) {
    await sleep(50);
    const now = await readCounter(qmp);
    if (now > last && last > 0) return now;
    if (Date.now() > deadline) throw new Error(`${qmp.peer}: the counter does not rise (${last} → ${now})`);
    last = now;
  }
}

/** Records every event of a connection (subscribe before acting). */
function recordEvents(qmp: QmpClient): QmpEvent[] {
  const seen: QmpEvent[] = [];
  qmp.onEvent((e) => seen.push(e));
  return seen;
}

const migrationEnded = (qmp: QmpClient) =>
  qmp.waitForEvent(
    (e) => e.event === 'MIGRATION' && ['completed', 'failed', 'cancelled'].includes(String(e.data.status)),
    {
      timeoutMs: 15_000,
      description: 'the end of the migration',
    },
  );

async function waitForPath(file: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${timeoutMs} ms`);
    await sleep(10);
  }
}

interface QueryMigrate {
  status: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
}

/** The guest's observed pause: the source's STOP to the destination's RESUME (QEMU's own timestamps). */
function observedPause(sourceEvents: QmpEvent[], destinationEvents: QmpEvent[]): number | undefined {
  const stop = sourceEvents.find((e) => e.event === 'STOP');
  const resume = destinationEvents.find((e) => e.event === 'RESUME');
  return stop && resume ? Math.round((resume.timestampMs - stop.timestampMs) * 10) / 10 : undefined;
}

/** The source's STOP to its MIGRATION completed (the guest is paused at least this long). */
function stopToCompleted(sourceEvents: QmpEvent[]): number | undefined {
  const stop = sourceEvents.find((e) => e.event === 'STOP');
  const done = sourceEvents.find((e) => e.event === 'MIGRATION' && e.data.status === 'completed');
  return stop && done ? Math.round((done.timestampMs - stop.timestampMs) * 10) / 10 : undefined;
}

const cprMemory = ['-object', 'memory-backend-memfd,id=ram0,size=64M,share=on'];
const cprMachine = 'pc-i440fx-10.0,memory-backend=ram0,aux-ram-share=on';
const unixAddr = (file: string) => ({ transport: 'socket', type: 'unix', path: file });

/** The source's status once it left `finish-migrate` (it reaches `postmigrate` just after `completed`). */
async function settledStatus(q: { execute(cmd: string): Promise<unknown> }): Promise<{ status?: string }> {
  for (let i = 0; ; i++) {
    const st = (await q.execute('query-status')) as { status?: string };
    if (st.status !== 'finish-migrate' || i >= 100) return st;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('real parts', () => {
  it('requireQemu accepts both installed builds (binaries and data folders)', () => {
    expect(() => requireQemu(qemu72)).not.toThrow();
    expect(() => requireQemu(qemu10)).not.toThrow();
  });

  it('a QEMU that exits during start-up fails the launch with its own message (no false readiness)', async () => {
    const dir = tmp();
    const disk = writeCounterGuest(path.join(dir, 'locked.img'));
    await launchQemu(qemu72, { dir, name: 'lock-a', args: counterGuestArgs('pc-i440fx-7.2', disk) });
    // The second QEMU creates its QMP socket, then exits on the image lock.
    await expect(
      launchQemu(qemu10, { dir, name: 'lock-b', args: counterGuestArgs('pc-i440fx-7.2', disk) }),
    ).rejects.toThrow(/exited \(code 1.*write" lock/s);
  });
});

describe('plain local live migration 7.2 → 10.0.2 over a UNIX socket', () => {
  it('moves the running counter guest into 10.0.2; the source ends postmigrate', async () => {
    const dir = tmp();
    const disk = writeCounterGuest(path.join(dir, 'plain.img'));
    const migrationSocket = path.join(dir, 'plain.mig');
    const src = await launchQemu(qemu72, { dir, name: 'p-src', args: counterGuestArgs('pc-i440fx-7.2', disk) });
    const dst = await launchQemu(qemu10, {
      dir,
      name: 'p-dst',
      args: counterGuestArgs('pc-i440fx-7.2', disk, ['-S', '-incoming', 'defer']),
    });
    const s = await track(src.qmp());
    const d = await track(dst.qmp());
    expect(s.qmpGreeting.version.qemu).toMatchObject({ major: 7, minor: 2 });
    expect(d.qmpGreeting.version.qemu).toEqual({ major: 10, minor: 0, micro: 2 });
    for (const q of [s, d]) {
      await expect(q.execute('qom-get', { path: '/machine', property: 'type' })).resolves.toBe('pc-i440fx-7.2-machine');
    }
    await expect(d.execute('query-status')).resolves.toMatchObject({ status: 'inmigrate', running: false });

    const lastOnSource = await counterRising(s);

    const events = { capabilities: [{ capability: 'events', state: true }] };
    await s.execute('migrate-set-capabilities', events);
    await d.execute('migrate-set-capabilities', events);
    const srcEvents = recordEvents(s);
    const dstEvents = recordEvents(d);
    await d.execute('migrate-incoming', { uri: `unix:${migrationSocket}` });
    const srcEnded = migrationEnded(s);
    const dstEnded = migrationEnded(d);
    const started = Date.now();
    await s.execute('migrate', { uri: `unix:${migrationSocket}` });
    const [srcEnd, dstEnd] = await Promise.all([srcEnded, dstEnded]);
    const wallMs = Date.now() - started;
    expect(srcEnd.data.status).toBe('completed');
    expect(dstEnd.data.status).toBe('completed');

    const info = await s.execute<QueryMigrate>('query-migrate');
    expect(info.status).toBe('completed');
    await expect(settledStatus(s)).resolves.toMatchObject({ status: 'postmigrate', running: false });
    // The destination holds exactly the source's final state and has not run yet (-S).
    await expect(d.execute('query-status')).resolves.toMatchObject({ status: 'paused', running: false });
    const finalOnSource = await readCounter(s);
    expect(finalOnSource).toBeGreaterThanOrEqual(lastOnSource);
    expect(await readCounter(d)).toBe(finalOnSource);

    await d.execute('cont');
    await expect(d.execute('query-status')).resolves.toMatchObject({ status: 'running', running: true });
    const first = await readCounter(d);
    await sleep(100);
    const second = await readCounter(d);
    expect(first).toBeGreaterThanOrEqual(lastOnSource);
    expect(first).toBeGreaterThanOrEqual(finalOnSource);
    expect(second).toBeGreaterThan(first);
    // The source stays stopped: its RAM is its own, the counter there no longer moves.
    expect(await readCounter(s)).toBe(finalOnSource);

    expect(srcEvents.map((e) => e.event)).toContain('STOP');
    expect(dstEvents.some((e) => e.event === 'RESUME')).toBe(true);
    console.log(
      `7.2 → 10.0.2 plain: total-time ${info['total-time']} ms, downtime ${info.downtime} ms, setup ${info['setup-time']} ms, ` +
        `migrate→completed (wall) ${wallMs} ms, source STOP→completed ${stopToCompleted(srcEvents)} ms, ` +
        `STOP→RESUME incl. our cont ${observedPause(srcEvents, dstEvents)} ms; ` +
        `counter ${lastOnSource} (last read on 7.2) → ${finalOnSource} (final) → ${first}, ${second} on 10.0.2`,
    );
  });
});

describe('cpr-transfer 10.0.2 → 10.0.2 (memfd RAM shared, aux-ram-share)', () => {
  it('main channel on the command line: the destination answers only after migrate and resumes by itself', async () => {
    const dir = tmp();
    const disk = writeCounterGuest(path.join(dir, 'cpr1.img'));
    const mainSocket = path.join(dir, 'cpr1.main');
    const cprSocket = path.join(dir, 'cpr1.cpr');
    const src = await launchQemu(qemu10, { dir, name: 'c1-src', args: counterGuestArgs(cprMachine, disk, cprMemory) });
    const s = await track(src.qmp());
    const lastOnSource = await counterRising(s);

    const dst = await launchQemu(qemu10, {
      dir,
      name: 'c1-dst',
      waitForQmp: false,
      args: counterGuestArgs(cprMachine, disk, [
        ...cprMemory,
        '-incoming',
        JSON.stringify({ 'channel-type': 'main', addr: unixAddr(mainSocket) }),
        '-incoming',
        JSON.stringify({ 'channel-type': 'cpr', addr: unixAddr(cprSocket) }),
      ]),
    });
    await waitForPath(cprSocket);
    // The destination waits on its cpr channel: no monitor yet.
    await sleep(200);
    expect(dst.running).toBe(true);
    expect(existsSync(dst.qmpSocket)).toBe(false);

    await s.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await s.execute('migrate-set-parameters', { mode: 'cpr-transfer' });
    await expect(s.execute('query-migrate-parameters')).resolves.toMatchObject({ mode: 'cpr-transfer' });
    const srcEvents = recordEvents(s);
    const srcEnded = migrationEnded(s);
    const started = Date.now();
    await s.execute('migrate', {
      channels: [
        { 'channel-type': 'main', addr: unixAddr(mainSocket) },
        { 'channel-type': 'cpr', addr: unixAddr(cprSocket) },
      ],
    });
    expect((await srcEnded).data.status).toBe('completed');
    const wallMs = Date.now() - started;
    const info = await s.execute<QueryMigrate>('query-migrate');
    expect(info.status).toBe('completed');
    await expect(settledStatus(s)).resolves.toMatchObject({ status: 'postmigrate', running: false });

    await dst.waitForQmp();
    const d = await track(dst.qmp());
    await expect(d.execute('query-migrate')).resolves.toMatchObject({ status: 'completed' });
    await expect(d.execute('query-status')).resolves.toMatchObject({ status: 'running', running: true });
    const first = await readCounter(d);
    await sleep(100);
    const second = await readCounter(d);
    expect(first).toBeGreaterThanOrEqual(lastOnSource);
    expect(second).toBeGreaterThan(first);
    // The RAM is the same memfd: the stopped source sees the destination's counter move.
    expect(await readCounter(s)).toBeGreaterThan(first);

    console.log(
      `cpr-transfer (main on the command line): total-time ${info['total-time']} ms, downtime ${info.downtime} ms, ` +
        `setup ${info['setup-time']} ms, migrate→completed (wall) ${wallMs} ms, source STOP→completed ` +
        `${stopToCompleted(srcEvents)} ms (the destination resumes by itself after that); ` +
        `counter ${lastOnSource} → ${first}, ${second} on the destination`,
    );
  });

  it('-S -incoming defer: migrate first, then migrate-incoming on the destination, check it paused, cont', async () => {
    const dir = tmp();
    const disk = writeCounterGuest(path.join(dir, 'cpr2.img'));
    const mainSocket = path.join(dir, 'cpr2.main');
    const cprSocket = path.join(dir, 'cpr2.cpr');
    const src = await launchQemu(qemu10, { dir, name: 'c2-src', args: counterGuestArgs(cprMachine, disk, cprMemory) });
    const s = await track(src.qmp());
    const lastOnSource = await counterRising(s);

    const dst = await launchQemu(qemu10, {
      dir,
      name: 'c2-dst',
      waitForQmp: false,
      args: counterGuestArgs(cprMachine, disk, [
        ...cprMemory,
        '-S',
        '-incoming',
        'defer',
        '-incoming',
        JSON.stringify({ 'channel-type': 'cpr', addr: unixAddr(cprSocket) }),
      ]),
    });
    await waitForPath(cprSocket);

    await s.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await s.execute('migrate-set-parameters', { mode: 'cpr-transfer' });
    const srcEvents = recordEvents(s);
    const srcEnded = migrationEnded(s);
    const started = Date.now();
    await s.execute('migrate', {
      channels: [
        { 'channel-type': 'main', addr: unixAddr(mainSocket) },
        { 'channel-type': 'cpr', addr: unixAddr(cprSocket) },
      ],
    });
    // The source keeps the guest running until the destination opens the main channel.
    await dst.waitForQmp();
    const d = await track(dst.qmp());
    await expect(d.execute('query-status')).resolves.toMatchObject({ status: 'inmigrate', running: false });
    await d.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    const dstEvents = recordEvents(d);
    const dstEnded = migrationEnded(d);
    await d.execute('migrate-incoming', { channels: [{ 'channel-type': 'main', addr: unixAddr(mainSocket) }] });
    const [srcEnd, dstEnd] = await Promise.all([srcEnded, dstEnded]);
    const wallMs = Date.now() - started;
    expect(srcEnd.data.status).toBe('completed');
    expect(dstEnd.data.status).toBe('completed');
    const info = await s.execute<QueryMigrate>('query-migrate');
    expect(info.status).toBe('completed');
    await expect(settledStatus(s)).resolves.toMatchObject({ status: 'postmigrate', running: false });
    // Paused on the destination until we say so: the switch-over stays ours.
    await expect(d.execute('query-status')).resolves.toMatchObject({ status: 'paused', running: false });
    const paused = await readCounter(d);
    await sleep(50);
    expect(await readCounter(d)).toBe(paused);
    expect(paused).toBeGreaterThanOrEqual(lastOnSource);

    await d.execute('cont');
    const first = await readCounter(d);
    await sleep(100);
    const second = await readCounter(d);
    expect(first).toBeGreaterThanOrEqual(paused);
    expect(second).toBeGreaterThan(first);
    console.log(
      `cpr-transfer (-S -incoming defer): total-time ${info['total-time']} ms, downtime ${info.downtime} ms, ` +
        `setup ${info['setup-time']} ms, migrate→completed (wall, incl. connecting to the destination) ${wallMs} ms, ` +
        `source STOP→completed ${stopToCompleted(srcEvents)} ms, STOP→RESUME incl. our cont ${observedPause(srcEvents, dstEvents)} ms; counter ${lastOnSource} → ${paused} (paused) → ${first}, ${second}`,
    );
  });
});

describe('found while writing these tests: the host launcher (activities/host/qemu-launcher.ts)', () => {
  // BUG: launchQemu takes the QMP greeting as readiness ("greets only from its main loop"), but QEMU 7.2 and
  // 10.0.2 greet before they open their drives, so a QEMU that then exits on an image lock is reported
  // ready. Readiness should be a command answered (e.g. query-status), which runs in the main loop.
  it('rejects a QEMU that greets, then exits on an image lock (every one of 5 attempts)', async () => {
    const dir = tmp();
    const disk = writeCounterGuest(path.join(dir, 'held.img'));
    await launchQemu(qemu72, { dir, name: 'holder', args: counterGuestArgs('pc-i440fx-7.2', disk) });
    const runtimeDir = path.join(dir, 'rt');
    const outcomes: string[] = [];
    // The greeting races the exit: several attempts make the false readiness show whatever the timing.
    for (let generation = 1; generation <= 5; generation++) {
      const qmpSocket = socketPath(runtimeDir, 'vmx', generation, 'qmp');
      const args = [
        ...qemu10.dataDirs.flatMap((d) => ['-L', d]),
        ...['-nodefaults', '-display', 'none', '-accel', 'tcg'],
        ...['-qmp', `unix:${qmpSocket},server=on,wait=off`],
        ...counterGuestArgs('pc-i440fx-7.2', disk),
      ];
      const outcome = await hostLaunchQemu({
        binary: qemu10.binary,
        args,
        runtimeDir,
        vmId: 'vmx',
        role: 'destination',
        generation,
        timeoutMs: 10_000,
      }).catch((err: unknown) => err);
      if (outcome && typeof outcome === 'object' && 'pid' in outcome) {
        await killQemu((outcome as { pid: number }).pid, { graceMs: 0 });
        outcomes.push('reported ready');
      } else {
        outcomes.push(outcome instanceof QemuLaunchError ? 'QemuLaunchError' : String(outcome));
      }
    }
    expect(outcomes).toEqual(Array(5).fill('QemuLaunchError'));
  });
});
