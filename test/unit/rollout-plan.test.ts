// The rollout plan: the annotated example parses; each mistake is one line naming the field; the CLI exits
// 2 on a bad plan before it connects to Temporal, with no stack trace.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parse } from 'yaml';
import { loadPlan, parsePlanYaml } from '../../workers/commands/plan-file';
import { ConfigError } from '../../activities/host/validate';
import { projectRoot } from '../../infra/real-parts';
import { calendarsOf, scheduleSpecOf } from '../../workers/commands/schedule';
import { parsePlan, PlanError } from '../../workflows/decisions/rollout-plan';
import { parseCron } from '../../workflows/decisions/windows';
import { useTmpDir } from '../helpers/tmp';

const example = path.join(projectRoot, 'infra', 'examples', 'plan.yaml');
const minimal = { name: 'r1', target: '10.0.2', hosts: ['a', 'b', 'c'] };

function errorOf(data: unknown): string {
  try {
    parsePlan(data);
  } catch (e) {
    if (e instanceof PlanError) return e.message;
    throw e;
  }
  throw new Error('no error');
}

describe('rollout plan', () => {
  test('the annotated example parses into a normalized plan', async () => {
    const plan = await loadPlan(example);
    expect(plan.name).toBe('qemu-10-0-2-nov');
    expect(plan.target).toBe('10.0.2');
    expect(plan.waves.map((w) => w.name)).toEqual(['canary', 'early', 'rest']);
    expect(plan.waves[0]!.hosts).toEqual(['hv-01']);
    expect(plan.waves[1]!.hosts).toEqual(['hv-02', 'hv-03']); // 25% of 8
    expect(plan.waves.flatMap((w) => w.hosts).sort()).toEqual(plan.hosts.slice().sort());
    expect(plan.windows[0]).toEqual({ start: '0 1 * * TUE-THU', durationMs: 3 * 3_600_000, timezone: 'Europe/Berlin' });
    expect(plan.excludeVms).toEqual(['hv-03/db-primary']);
    expect(plan.concurrency).toEqual({ hosts: 2, vmsPerHost: 1 });
    expect(plan.approvals).toBe('after-canary');
    expect(plan.policy.strategies).toEqual(['backend-transfer', 'cpr-transfer', 'plain']);
  });

  test('defaults: a canary of one host then the rest, one host and one VM at once, budget 1, no windows', () => {
    const p = parsePlan(minimal);
    expect(p.waves).toEqual([
      { name: 'canary', hosts: ['a'] },
      { name: 'rest', hosts: ['b', 'c'] },
    ]);
    expect(p.concurrency).toEqual({ hosts: 1, vmsPerHost: 1 });
    expect(p.failureBudget).toBe(1);
    expect(p.approvals).toBe('none');
    expect(p.windows).toEqual([]);
    expect(p.preflight).toEqual({ onFailure: 'fail', timeoutSec: 20 });
    expect(p.policy).toEqual({});
    expect(p.limits.historyEvents).toBe(10_000);
  });

  test.each<[string, unknown, string]>([
    [
      'unknown time zone',
      { ...minimal, windows: [{ start: '0 1 * * *', duration: '1h', timezone: 'Mars/Olympus' }] },
      'windows[0].timezone: unknown time zone "Mars/Olympus"',
    ],
    [
      'bad cron',
      { ...minimal, windows: [{ start: '0 25 * * *', duration: '1h', timezone: 'UTC' }] },
      'windows[0].start: invalid cron "0 25 * * *": hour: 25 is out of range 0-23',
    ],
    [
      'cron that never fires',
      { ...minimal, windows: [{ start: '0 0 31 2 *', duration: '1h', timezone: 'UTC' }] },
      'windows[0].start: "0 0 31 2 *" never matches a date',
    ],
    [
      'bad duration',
      { ...minimal, windows: [{ start: '0 1 * * *', duration: 'forever', timezone: 'UTC' }] },
      'windows[0].duration: "forever" is not a duration (e.g. 90s, 4h, 1h30m)',
    ],
    ['missing target', { name: 'r', hosts: ['a'] }, 'target: is required'],
    ['unknown field', { ...minimal, hostz: [] }, 'hostz: unknown field'],
    [
      'bad host id',
      { ...minimal, hosts: ['a', 'B!'] },
      'hosts[1]: must be a host id matching ^[a-z0-9][a-z0-9._-]{0,62}$',
    ],
    ['duplicate host', { ...minimal, hosts: ['a', 'a'] }, 'hosts[1]: duplicate "a"'],
    [
      'zero concurrency',
      { ...minimal, concurrency: { hosts: 0 } },
      'concurrency.hosts: Too small: expected number to be >=1',
    ],
    ['budget', { ...minimal, failureBudget: 0 }, 'failureBudget: Too small: expected number to be >=1'],
    [
      'approvals',
      { ...minimal, approvals: 'sometimes' },
      'approvals: Invalid option: expected one of "none"|"after-canary"|"between-waves"',
    ],
    [
      'wave size',
      { ...minimal, waves: [{ hosts: '150%' }] },
      'waves[0].hosts: must be a count, a percent such as "25%", "rest", or a list of host ids',
    ],
    [
      'waves leave hosts out',
      { ...minimal, waves: [{ hosts: 1 }] },
      'waves: waves cover 1 of 3 hosts; size the last wave `rest` to take the others',
    ],
    [
      'wave names an unknown host',
      { ...minimal, waves: [{ hosts: ['z'] }, { hosts: 'rest' }] },
      'waves[0].hosts: host "z" is not in hosts',
    ],
    [
      'excluded VM of unknown host',
      { ...minimal, exclude: { vms: ['z/vm1'] } },
      'exclude.vms[0]: host "z" is not in hosts',
    ],
    [
      'excluded VM syntax',
      { ...minimal, exclude: { vms: ['vm1'] } },
      'exclude.vms[0]: must be host/vm (two ids joined by /)',
    ],
    [
      'strategy',
      { ...minimal, policy: { strategies: ['teleport'] } },
      'policy.strategies[0]: Invalid option: expected one of "backend-transfer"|"cpr-transfer"|"cpr-exec"|"plain"',
    ],
    [
      'transport',
      { ...minimal, policy: { transport: 'tcp' } },
      'policy.transport: must be unix: backend transfer and CPR pass file descriptors',
    ],
    ['excluding every host', { ...minimal, exclude: { hosts: ['a', 'b', 'c'] } }, 'exclude.hosts: excludes every host'],
  ])('%s → one line naming the field', (_what, data, message) => {
    expect(errorOf(data)).toBe(message);
  });

  test('YAML errors name the file', () => {
    expect(() => parsePlanYaml('name: [', 'p.yaml')).toThrow(ConfigError);
    expect(() => parsePlanYaml('name: x\nname: y\n', 'p.yaml')).toThrow(
      'p.yaml: invalid YAML: Map keys must be unique',
    );
  });

  test('a schedule spec from the windows: Temporal calendars; day-of-month OR day-of-week become two', () => {
    expect(calendarsOf(parseCron('30 1 * * TUE-THU'))).toEqual([
      {
        second: [{ start: 0, end: 0 }],
        minute: [{ start: 30, end: 30 }],
        hour: [{ start: 1, end: 1 }],
        month: [{ start: 'JANUARY', end: 'DECEMBER' }],
        dayOfMonth: [{ start: 1, end: 31 }],
        dayOfWeek: [{ start: 'TUESDAY', end: 'THURSDAY' }],
      },
    ]);
    expect(calendarsOf(parseCron('0 0 13 * FRI'))).toHaveLength(2);
    const plan = parsePlan({
      ...minimal,
      windows: [
        { start: '0 1 * * *', duration: '1h', timezone: 'Europe/Paris' },
        { start: '0 2 * * *', duration: '1h', timezone: 'UTC' },
      ],
    });
    expect(() => scheduleSpecOf(plan, 'p.yaml')).toThrow(
      'p.yaml: windows[1].timezone: a schedule has one time zone: windows[0] uses Europe/Paris, this one UTC; make one plan per zone',
    );
  });

  describe('the CLI', () => {
    const tmp = useTmpDir('plan');

    /** A TCP listener that records whether anything connected to it. */
    async function listener(): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
      let n = 0;
      const srv = net.createServer((s) => {
        n += 1;
        s.destroy();
      });
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
      return {
        port: (srv.address() as net.AddressInfo).port,
        connections: () => n,
        close: () => new Promise((r) => srv.close(() => r())),
      };
    }

    function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
      const tsx = path.join(projectRoot, 'node_modules', '.bin', 'tsx');
      const script = `require(${JSON.stringify(path.join(projectRoot, 'workers', 'cli.ts'))}).main(process.argv.slice(1)).then((c) => { process.exitCode = c; })`;
      const child = spawn(tsx, ['-e', script, ...args], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
    }

    test('rollout start with a bad plan: exit 2, one line naming the field, no connection, no stack', async () => {
      const file = path.join(tmp(), 'bad.yaml');
      const data = parse(
        `name: r1\ntarget: "10.0.2"\nhosts: [a]\nwindows:\n  - start: "0 1 * * *"\n    duration: 1h\n    timezone: Mars/Olympus\n`,
      );
      writeFileSync(
        file,
        `name: r1\ntarget: "10.0.2"\nhosts: [a]\nwindows:\n  - start: "0 1 * * *"\n    duration: 1h\n    timezone: Mars/Olympus\n`,
      );
      expect(data.windows[0].timezone).toBe('Mars/Olympus');
      const l = await listener();
      try {
        for (const cmd of [
          ['rollout', 'start', '--plan', file, '--address', `127.0.0.1:${l.port}`],
          ['schedule', 'create', '--plan', file, '--address', `127.0.0.1:${l.port}`],
        ]) {
          const r = await runCli(cmd);
          expect(r.code).toBe(2);
          expect(r.stderr).toBe(`fleet-upgrade: ${file}: windows[0].timezone: unknown time zone "Mars/Olympus"\n`);
          expect(r.stdout).toBe('');
        }
        expect(l.connections()).toBe(0);
      } finally {
        await l.close();
      }
    });
  });
});
