// `npm run bench`: the project's speed in figures, side by side with baselines run in the same process.
// Prints a table (or, with --json, one JSON object) and rewrites docs/BENCHMARKS.md with the figures.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from '../real-parts';
import {
  fleetBenchmarksMarkdown,
  fleetSummaryRows,
  runFleetBench,
  defaultHostVariant,
  variantName,
  type FleetFigures,
} from './fleet';
import { runRamModesBench, SHARED_GOAL, sharedGoalMet, type RamModeFigures } from './ram-modes';
import { runRealQemuBench, type RealQemuFigures } from './real-qemu';
import { runClusterFleetBench, type ServiceFigures } from '../temporal-cluster/fleet-bench';

const usage = `usage: npm run bench -- [--json] [--runs N] [--no-ram-modes] [--no-fleet] [--no-cluster]
  --json           print one JSON object on stdout (progress and logs go to stderr)
  --runs N         saga and raw-QMP runs each on real QEMU (default 5)
  --no-ram-modes   leave out guest RAM copied vs shared (64 MiB to 4 GiB)
  --no-fleet       leave out the fleet of simulated hosts at three sizes
  --no-cluster     leave out the same fleet on the real cluster (PostgreSQL, mTLS)
The quickest whole run: --runs 1 --no-ram-modes --no-fleet --no-cluster. Rewrites docs/BENCHMARKS.md.
`;

interface Options {
  help?: boolean;
  json: boolean;
  runs: number;
  fleet: boolean;
  ramModes: boolean;
  /** The fleet's workload on the real cluster (PostgreSQL, mTLS) beside the dev server. */
  cluster: boolean;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { json: false, runs: 5, fleet: true, ramModes: true, cluster: true };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--help' || argv[i] === '-h') o.help = true;
    else if (argv[i] === '--json') o.json = true;
    else if (argv[i] === '--no-fleet') o.fleet = false;
    else if (argv[i] === '--no-ram-modes') o.ramModes = false;
    else if (argv[i] === '--no-cluster') o.cluster = false;
    else if (argv[i] === '--runs') o.runs = Number(argv[++i]);
    else throw new Error(`bench: unknown option ${argv[i]}`);
  }
  if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error('bench: --runs must be a positive integer');
  return o;
}

const f = (x: number | null | undefined, digits = 1) => (x === null || x === undefined ? 'n/a' : x.toFixed(digits));

const bytes = (n: number) =>
  n >= 1024 ** 3
    ? `${(n / 1024 ** 3).toFixed(2)} GiB`
    : n >= 1024 ** 2
      ? `${(n / 1024 ** 2).toFixed(1)} MiB`
      : n >= 1024
        ? `${(n / 1024).toFixed(1)} KiB`
        : `${n} B`;

export function ramModesMarkdown(rows: RamModeFigures[]): string {
  const table = rows
    .map(
      (r) =>
        `| ${r.ramMiB} | ${r.mode} | ${f(r.migrationMs, 0)} | ${f(r.downtimeMs, 0)} | ${bytes(r.streamedBytes)} | ${f(r.sagaWallMs, 0)} |`,
    )
    .join('\n');
  const met = sharedGoalMet(rows);
  return `## Guest RAM: copied vs shared

One upgrade 7.2 → 10.0.2 per row through the full \`upgradeVm\`, the counter guest on TCG. *copied*: a memfd
with \`share=off\`, its RAM sent through the migration stream; *shared*: a memfd with \`share=on\`, both QEMU
processes map the same pages and \`x-ignore-shared\` leaves them out of the stream. *migration* and *downtime*
are QEMU's own \`total-time\` and \`downtime\`, *streamed* its \`ram.transferred\`, *saga wall* the workflow's.

| RAM MiB | mode | migration ms | downtime ms | streamed | saga wall ms |
|---|---|---|---|---|---|
${table}

The goal for shared RAM is to stay flat in RAM size: a 4 GiB guest's migration within ${SHARED_GOAL.migrationMs} ms and ${bytes(SHARED_GOAL.streamedBytes)} streamed, downtime within ${SHARED_GOAL.downtimeMs} ms; ${met ? 'this run met it.' : 'this run did not meet it.'}
`;
}

export function benchmarksMarkdown(real: RealQemuFigures, when: Date, ramModes: RamModeFigures[] = []): string {
  const phases = Object.entries(real.sagaPhasesMsP50)
    .map(([p, ms]) => `| ${p} | ${f(ms, 0)} |`)
    .join('\n');
  const latencies = Object.entries(real.activityLatencyMsP50)
    .map(([a, l]) => `| ${a} | ${f(l.dispatchMs)} | ${f(l.executeMs)} | ${f(l.decideMs)} |`)
    .join('\n');
  return `# Benchmarks

Reproduce with \`npm run bench\` (\`npm run bench -- --json\` prints one JSON object). Figures of the last run,
${when.toISOString()}, on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}), TCG (no KVM).

## Real QEMU, one VM 7.2 → 10.0.2 (${real.runs} runs each, alternated)

The full \`upgradeVm\` through a Temporal dev server and a host worker, against a raw baseline that performs
the same QMP steps (start the destination, capabilities, \`migrate-incoming\`, \`migrate\`, wait for
\`completed\`, check, \`cont\`, quit the source) with no orchestration. Medians.

| figure | saga | raw baseline | goal |
|---|---|---|---|
| wall time, ms | ${f(real.sagaWallMsP50, 0)} | ${f(real.rawWallMsP50, 0)} | |
| wall-time ratio saga / raw | **${f(real.overheadRatio, 2)}** | 1 | ≤ 1.5 |
| switchover gap (MIGRATION completed → RESUME), ms | **${f(real.switchoverGapMsP50, 2)}** | ${f(real.rawSwitchoverGapMsP50, 2)} | ≤ 5 |
| downtime reported by QEMU, ms | ${f(real.downtimeMsP50, 0)} | | |
| guest pause (source STOP → destination RESUME), ms | ${f(real.guestPauseMsP50, 2)} | | |

Where the saga's time goes (median per phase, ms):

| phase | ms |
|---|---|
${phases}

Per activity, from the workflow histories' own timestamps (median ms): *dispatch* is scheduled → started
(the service handing the task to the host worker), *execute* is the activity's work, *decide* is completed →
the next activity scheduled (a workflow task through the orchestrator worker).

| activity | dispatch | execute | decide |
|---|---|---|---|
${latencies}

${real.overheadRatio <= 1.5 ? 'The ratio meets its goal.' : `The ratio misses its goal of 1.5. The raw baseline is only the migration of a 64 MiB guest whose RAM is zero pages (${f(real.rawWallMsP50, 0)} ms, of which the destination's start is most); the saga adds, per VM, six activities, each a round trip through the Temporal service (schedule, poll, complete), a QMP connection per activity, the source's full inspection (\`query-qmp-schema\` is ~190 KB), and the start of a workflow. Those costs are fixed per VM, not per byte: on a guest with real memory to copy (seconds of migration) the ratio tends to 1. The guest's pause does not include any of them: the switchover runs inside one activity, driven by QEMU's events.`}
${ramModes.length ? `\n${ramModesMarkdown(ramModes)}` : ''}`;
}

/** The same fleet on both services, as the cluster benchmark measured it. */
export function servicesMarkdown(rows: ServiceFigures[]): string {
  const lines = rows
    .map(
      (r) =>
        `| ${r.service} | ${r.upgraded}/${r.vms} | ${f(r.upgradesPerSec, 1)} | ${f(r.eventsPerVm, 1)} | ${f(r.temporalCpuSec, 1)} | ${f(r.temporalCpuShare * 100, 0)} % |`,
    )
    .join('\n');
  return `## The same fleet on a real Temporal cluster

\`infra/temporal-cluster/fleet-bench.ts\`: simulated hosts, one \`upgradeVm\` per VM, first through the dev server
(SQLite on tmpfs), then through temporal-server 1.32.2 on PostgreSQL 15 with mTLS (\`infra/temporal-cluster\`),
on the same machine. CPU is that of the Temporal processes (the dev server; or the server and every PostgreSQL
process) while the upgrades ran, and their share of all CPU used.

| service | upgraded | upgrades/s | events per VM | Temporal CPU s | Temporal CPU share |
|---|---|---|---|---|---|
${lines}
`;
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.help) return void process.stdout.write(usage);
  // Progress on stderr, with or without --json: stdout carries the answer only (one JSON object with --json).
  const say = (s: string) => process.stderr.write(`${s}\n`);
  say('real QEMU: saga vs raw QMP, alternated');
  const real = await runRealQemuBench(o.runs, say);
  let ramModes: RamModeFigures[] = [];
  if (o.ramModes) {
    say('guest RAM: copied vs shared, 64 MiB to 4 GiB');
    ramModes = await runRamModesBench(say);
  }
  let fleet: FleetFigures[] = [];
  if (o.fleet) {
    say('fleet: simulated hosts × VMs through the dev server, at three sizes');
    fleet = await runFleetBench({ say });
  }
  let services: ServiceFigures[] = [];
  if (o.cluster) {
    say('fleet: the same workload on the dev server and on a real cluster (PostgreSQL, mTLS)');
    services = await runClusterFleetBench({ hosts: 4, vmsPerHost: 25, concurrency: 16, json: false });
  }
  writeFileSync(
    path.join(projectRoot, 'docs', 'BENCHMARKS.md'),
    `${benchmarksMarkdown(real, new Date(), ramModes)}${fleet.length ? `\n${fleetBenchmarksMarkdown(fleet)}` : ''}${services.length ? `\n${servicesMarkdown(services)}` : ''}`,
  );
  const largest = fleet[fleet.length - 1];
  const summary = {
    realQemu: {
      overheadRatio: real.overheadRatio,
      switchoverGapMsP50: real.switchoverGapMsP50,
      downtimeMsP50: real.downtimeMsP50,
      guestPauseMsP50: real.guestPauseMsP50,
      sagaWallMsP50: real.sagaWallMsP50,
      rawWallMsP50: real.rawWallMsP50,
    },
    ramModes: ramModes.map((r) => ({ ...r })),
    ...(services.length ? { fleetServices: services.map((r) => ({ ...r })) } : {}),
    ...(largest
      ? {
          fleet: {
            vmsPerSecond: largest.upgradesPerSec,
            eventsPerVm: largest.historyEventsPerVm.p50,
            // The host worker as a user starts it (the CLI applies its memory settings; both are in the docs).
            hostWorkerRssMb: largest.hostWorkerPeakRssMiB[variantName(defaultHostVariant)],
            orchestratorRssMb: largest.orchestratorPeakRssMiB,
            sizes: fleet.map((f) => ({
              hosts: f.hosts,
              vmsPerHost: f.vmsPerHost,
              vmsPerSecond: f.upgradesPerSec,
              eventsPerVm: f.historyEventsPerVm.p50,
              hostWorkerRssMb: f.hostWorkerPeakRssMiB[variantName(defaultHostVariant)],
              orchestratorRssMb: f.orchestratorPeakRssMiB,
            })),
          },
        }
      : {}),
  };
  if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else {
    console.table(summary.realQemu);
    if (ramModes.length) console.table(ramModes);
    if (fleet.length) console.table(fleetSummaryRows(fleet));
    if (services.length) console.table(services);
    process.stdout.write('figures written to docs/BENCHMARKS.md\n');
  }
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
