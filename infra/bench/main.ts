// `npm run bench`: the project's speed in figures, side by side with baselines run in the same process.
// Prints a table (or, with --json, one JSON object) and rewrites docs/BENCHMARKS.md with the figures.
// `--only one-vm` runs only the one-VM part (saga vs raw QMP, RAM copied and shared) and leaves
// docs/BENCHMARKS.md as it is: a partial run prints its markdown section on stdout instead (or, with --json,
// its JSON object).
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from '../real-parts';
import {
  fleetBenchmarksMarkdown,
  fleetSummaryRows,
  runFleetBench,
  defaultHostVariant,
  sizeName,
  variantName,
  type FleetFigures,
} from './fleet';
import { runRamModesBench, SHARED_GOAL, sharedGoalMet, type RamModeFigures } from './ram-modes';
import { logger } from '../../workers/telemetry';
import { runFloorFleet, type FloorFleetFigures } from './floor-fleet';
import { ONE_VM_GOAL_RATIO, runRealQemuBench, type RealQemuFigures, type RealQemuModeFigures } from './real-qemu';
import { runClusterFleetBench, type ServiceFigures } from '../temporal-cluster/fleet-bench';

const usage = `usage: npm run bench -- [--json] [--runs N] [--no-ram-modes] [--no-fleet] [--no-cluster] [--only one-vm]
  --json           print one JSON object on stdout (progress and logs go to stderr)
  --runs N         saga and raw-QMP runs each on real QEMU, per guest RAM mode (default 5)
  --no-ram-modes   leave out guest RAM copied vs shared (64 MiB to 4 GiB)
  --no-fleet       leave out the fleet of simulated hosts (three sizes, the largest with faults, and its floor)
  --no-cluster     leave out the same fleet on the real cluster (PostgreSQL, mTLS)
  --only one-vm    only the one-VM saga vs raw QMP; docs/BENCHMARKS.md is left alone, its section goes to stdout
The quickest whole run: --runs 1 --no-ram-modes --no-fleet --no-cluster. Rewrites docs/BENCHMARKS.md.
Logs of the workers are at warn (FLEET_LOG_LEVEL=info shows each activity).
`;

interface Options {
  help?: boolean;
  json: boolean;
  runs: number;
  fleet: boolean;
  ramModes: boolean;
  /** The fleet's workload on the real cluster (PostgreSQL, mTLS) beside the dev server. */
  cluster: boolean;
  /** `one-vm`: only the one-VM part, and docs/BENCHMARKS.md is not rewritten. */
  only?: 'one-vm';
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
    else if (argv[i] === '--only') {
      const part = argv[++i];
      if (part !== 'one-vm') throw new Error(`bench: --only takes one-vm, not ${part ?? 'nothing'}`);
      Object.assign(o, { only: part, fleet: false, ramModes: false, cluster: false });
    } else throw new Error(`bench: unknown option ${argv[i]}`);
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

const MODE_WORDS: Record<string, string> = {
  copied: 'a memfd with `share=off`, sent through the migration stream',
  shared: 'a memfd with `share=on`, mapped by both QEMUs and left out of the stream by `x-ignore-shared`',
};

/** The one-VM section: saga against raw QMP per guest RAM mode, and where the saga's time goes. */
export function oneVmMarkdown(real: RealQemuFigures): string {
  const modes = Object.values(real.modes);
  const cells = (row: (m: RealQemuModeFigures) => [string, string]) => modes.flatMap(row).join(' | ');
  const head = modes.flatMap((m) => [`${m.ram}: saga`, `${m.ram}: raw`]).join(' | ');
  const rule = modes.map(() => '---|---').join('|');
  const byteCell = (n: number | null) => (n === null ? 'n/a' : bytes(n));
  const phaseNames = [
    ...new Set(modes.flatMap((m) => [...Object.keys(m.sagaPhasesMsP50), ...Object.keys(m.rawPhasesMsP50)])),
  ];
  const phaseCell = (ms: number | undefined) => (ms === undefined ? '' : f(ms, 0));
  const phases = phaseNames
    .map((p) => `| ${p} | ${cells((m) => [phaseCell(m.sagaPhasesMsP50[p]), phaseCell(m.rawPhasesMsP50[p])])} |`)
    .join('\n');
  const activityNames = [...new Set(modes.flatMap((m) => Object.keys(m.activityLatencyMsP50)))];
  const latencies = activityNames
    .map((a) => {
      const per = modes.map((m) => {
        const l = m.activityLatencyMsP50[a];
        return l ? `${f(l.dispatchMs)} | ${f(l.executeMs)} | ${f(l.decideMs)}` : 'n/a | n/a | n/a';
      });
      return `| ${a} | ${per.join(' | ')} |`;
    })
    .join('\n');
  const missed = modes.filter((m) => !(m.overheadRatio <= ONE_VM_GOAL_RATIO));
  const floor = real.floor;
  // The goal leaves the orchestration (ONE_VM_GOAL_RATIO - 1) × raw; the floor is what the service alone takes.
  const room = (m: RealQemuModeFigures) => (ONE_VM_GOAL_RATIO - 1) * m.rawWallMsP50;
  const beyondFloor = missed.filter((m) => floor.wallMsP50 > room(m));
  const floorVerdict = beyondFloor.length
    ? ` The goal leaves the orchestration ${beyondFloor.map((m) => `${f(room(m), 0)} ms with ${m.ram} RAM`).join(' and ')}; ` +
      `the floor alone, the saga's workflow with activities that do nothing, takes ${f(floor.wallMsP50, 0)} ms on this ` +
      `service and these workers: no saga of three round trips can meet it here. The on-host shape's floor is ` +
      `${f(floor.onHost.wallMsP50, 0)} ms; with the saga's own checks beyond the raw steps (saga − raw − floor, ` +
      `${beyondFloor.map((m) => `${f(m.sagaWallMsP50 - m.rawWallMsP50 - floor.wallMsP50, 0)} ms with ${m.ram} RAM`).join(' and ')}) it ` +
      `${beyondFloor.every((m) => floor.onHost.wallMsP50 + (m.sagaWallMsP50 - m.rawWallMsP50 - floor.wallMsP50) > room(m)) ? 'would not meet it either' : 'could'}.`
    : '';
  const verdict = missed.length
    ? `The ratio misses its goal of ${ONE_VM_GOAL_RATIO} with ${missed.map((m) => `${m.ram} RAM (${f(m.overheadRatio, 2)})`).join(' and ')}. ` +
      `The raw baseline is the bare migration: the destination's start, the stream and the switchover. The saga adds, ` +
      `per VM, the start of a workflow and ${activityNames.length} activities, each a round trip through the Temporal ` +
      `service (schedule, poll, complete) and a QMP connection of its own, the source's inspection (its state, ` +
      `machine, memory and backends; its build's features come from the probe cache) and the verification of the ` +
      `destination. Those costs are fixed per VM, not per byte: they weigh most where the ` +
      `migration itself is shortest, as with shared RAM. The guest's pause does not include any of them: the switchover ` +
      `runs inside one activity, driven by QEMU's events.` +
      floorVerdict
    : `The ratio meets its goal of ${ONE_VM_GOAL_RATIO} in both modes.`;
  return `## Real QEMU, one VM 7.2 → 10.0.2 (${real.runs} runs each per RAM mode, alternated)

The full \`upgradeVm\` through a Temporal dev server and a host worker, against a raw baseline that performs
the same QMP steps of the same plain migration in the same RAM mode (start the destination, capabilities,
\`migrate-incoming\`, \`migrate\`, wait for \`completed\`, check, \`cont\`, quit the source) with no
orchestration. The guest is the Linux test guest (kernel and busybox initramfs, no disk, no NIC, ${real.guest.memoryMiB} MiB),
booted before each upgrade (median ${f(real.guest.bootMsP50 / 1000, 1)} s) and idle when it starts (its QEMU at a median
${f(real.guest.idleCpuShareP50 * 100, 1)} % of one CPU). Guest RAM is ${modes.map((m) => `*${m.ram}*: ${MODE_WORDS[m.ram] ?? m.ram}`).join('; ')}.
Medians.

| figure | ${head} | goal |
|---|${rule}|---|
| wall time, ms | ${cells((m) => [f(m.sagaWallMsP50, 0), f(m.rawWallMsP50, 0)])} | |
| wall-time ratio saga / raw | ${cells((m) => [`**${f(m.overheadRatio, 2)}**`, '1'])} | ≤ ${ONE_VM_GOAL_RATIO} |
| floor: the saga's workflow, activities that do nothing, ms | ${cells(() => [f(floor.wallMsP50, 0), ''])} | |
| saga − raw − floor, ms | ${cells((m) => [f(m.sagaWallMsP50 - m.rawWallMsP50 - floor.wallMsP50, 0), ''])} | |
| floor of the on-host shape, ms | ${cells(() => [f(floor.onHost.wallMsP50, 0), ''])} | |
| switchover gap (MIGRATION completed → RESUME), ms | ${cells((m) => [`**${f(m.switchoverGapMsP50, 2)}**`, f(m.rawSwitchoverGapMsP50, 2)])} | ≤ 5 |
| downtime reported by QEMU, ms | ${cells((m) => [f(m.downtimeMsP50, 0), f(m.rawDowntimeMsP50, 0)])} | |
| guest pause (source STOP → destination RESUME), ms | ${cells((m) => [f(m.guestPauseMsP50, 2), f(m.rawGuestPauseMsP50, 2)])} | |
| streamed (\`ram.transferred\`) | ${cells((m) => [byteCell(m.streamedBytesP50), byteCell(m.rawStreamedBytesP50)])} | |

The floor (\`infra/bench/floor-workflow.ts\`, run three times after each saga run) is the saga's workflow with nothing in
it: the same start and search attributes, patch marker, FleetPhase milestones and three activities on a host
queue's worker, each returning at once (${f(floor.eventsP50, 0)} history events against the saga's ${f(floor.sagaEventsP50, 0)}). It is what the
Temporal service and the SDK's workers cost one upgrade on this machine; *saga − raw − floor* is what the saga's
own checks and bookkeeping add beyond the raw steps. Per activity, the floor's dispatch / decide: ${Object.entries(
    floor.activityLatencyMsP50,
  )
    .map(([a, l]) => `${a} ${f(l.dispatchMs)} / ${f(l.decideMs)}`)
    .join(', ')} ms.
The on-host shape (\`emptyUpgradeOnHost\`, run after each of those) is the same workflow on the host's own queue,
its steps local activities of the host's worker (${f(floor.onHost.eventsP50, 0)} events): ${f(floor.onHost.wallMsP50, 0)} ms. The saga does not have that
shape; docs/DESIGN.md says what it would cost besides time.

Both sides run with a downtime limit of 300 ms: with copied RAM QEMU stops the source once it expects the rest
to go within it, so the copied downtime and pause vary from run to run, in both columns alike.

Where the time goes (median per phase, ms): the saga's phases as its result reports them, and the raw
baseline's own steps (*migrate* up to the source's \`completed\`, so it holds the switchover).

| phase | ${modes.flatMap((m) => [`${m.ram}: saga`, `${m.ram}: raw`]).join(' | ')} |
|---|${rule}|
${phases}

Per activity, from the workflow histories' own timestamps (median ms): *dispatch* is scheduled → started
(the service handing the task to the host worker), *execute* is the activity's work, *decide* is completed →
the next activity scheduled (a workflow task through the orchestrator worker).

| activity | ${modes.map((m) => `${m.ram}: dispatch | execute | decide`).join(' | ')} |
|---|${modes.map(() => '---|---|---').join('|')}|
${latencies}

${verdict}
`;
}

export function benchmarksMarkdown(real: RealQemuFigures, when: Date, ramModes: RamModeFigures[] = []): string {
  return `# Benchmarks

Reproduce with \`npm run bench\` (\`npm run bench -- --json\` prints one JSON object). Figures of the last run,
${when.toISOString()}, on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}), TCG (no KVM).

${oneVmMarkdown(real)}${ramModes.length ? `\n${ramModesMarkdown(ramModes)}` : ''}`;
}

/** The one-VM figures of the JSON summary: the fields earlier runs had (copied RAM), and each mode's. */
export function oneVmSummary(real: RealQemuFigures) {
  return {
    overheadRatio: real.overheadRatio,
    switchoverGapMsP50: real.switchoverGapMsP50,
    downtimeMsP50: real.downtimeMsP50,
    guestPauseMsP50: real.guestPauseMsP50,
    sagaWallMsP50: real.sagaWallMsP50,
    rawWallMsP50: real.rawWallMsP50,
    goalMet: real.goalMet,
    guest: real.guest,
    modes: real.modes,
    floor: real.floor,
  };
}

/** The fleet's floors, in both shapes, beside the fleet run of the same size. */
export function floorFleetMarkdown(floors: FloorFleetFigures[], fleet: FleetFigures): string {
  const n = fleet.hosts * fleet.vmsPerHost;
  const dev = (fleet.cpuSec.devServer * 1000) / n;
  const workers = ((fleet.cpuSec.orchestrator + fleet.cpuSec.hostWorkers + fleet.cpuSec.client) * 1000) / n;
  const floor = floors.find((x) => x.shape === 'orchestrator')!;
  const onHost = floors.find((x) => x.shape === 'on-host');
  const row = (x: FloorFleetFigures, name: string) =>
    `| ${sizeName(fleet, ' × ')} empty, ${name} | ${f(x.workflowsPerSec)} | ${f(x.eventsPerWorkflow, 0)} | ${f(x.devServerCpuMsPerWorkflow, 0)} | ${f(x.workersCpuMsPerWorkflow, 0)} | ${f(x.cpuBoundPerSec)} |`;
  // The upgrade's own work (host workers' QEMUs and records, the saga's code) does not change with the shape.
  const ownWork = workers - floor.workersCpuMsPerWorkflow;
  const onHostText = onHost
    ? `

The on-host shape (\`emptyUpgradeOnHost\` in the same file, the same number after the first, through the same
server) runs the same workflow on the host's own queue, on the host's worker, its three steps local activities
of that worker: a marker each in the history instead of three events and a round trip through the service. It
takes ${f(onHost.eventsPerWorkflow, 0)} events, ${f(onHost.devServerCpuMsPerWorkflow, 0)} ms of the dev server's CPU and ${f(onHost.workersCpuMsPerWorkflow, 0)} ms of the workers' per upgrade, against
${f(floor.eventsPerWorkflow, 0)}, ${f(floor.devServerCpuMsPerWorkflow, 0)} and ${f(floor.workersCpuMsPerWorkflow, 0)}. With the upgrade's own work (${f(ownWork, 0)} ms, from the rows above) a real upgrade of
that shape would cost about ${f(onHost.devServerCpuMsPerWorkflow + onHost.workersCpuMsPerWorkflow + ownWork, 0)} ms of CPU: about ${f((os.cpus().length * 1000) / (onHost.devServerCpuMsPerWorkflow + onHost.workersCpuMsPerWorkflow + ownWork))} upgrades/s on these cores. The saga does not
have that shape: docs/DESIGN.md says what it would cost besides CPU.`
    : '';
  return `### The floor: ${floor.hosts} × ${floor.vmsPerHost} empty upgrades

\`infra/bench/floor-fleet.ts\`: the saga's workflow with activities that do nothing (\`infra/bench/floor-workflow.ts\`:
the same start and search attributes, patch marker, milestones and three activities on a queue per host), as many
and as many at once (${floor.concurrency}) as the ${sizeName(fleet, ' × ')} run, through a dev server started the same way; its
workers and client in one process. What the Temporal service and the SDK's workers cost an upgrade of this shape
on this machine, whatever the upgrade does.

| run | upgrades/s | history events | dev server CPU per upgrade, ms | workers and client CPU per upgrade, ms | rate the CPU allows on ${os.cpus().length} cores, /s |
|---|---|---|---|---|---|
| ${sizeName(fleet, ' × ')} | ${f(fleet.upgradesPerSec)} | ${f(fleet.historyEventsPerVm.p50, 0)} | ${f(dev, 0)} | ${f(workers, 0)} | ${f((os.cpus().length * 1000) / (dev + workers))} |
${row(floor, "the saga's shape")}${onHost ? `\n${row(onHost, 'on-host shape')}` : ''}

A real upgrade costs the dev server ${f(dev, 0)} ms of CPU against ${f(floor.devServerCpuMsPerWorkflow, 0)} ms for an empty one: the
service's work follows the workflow's shape (${f(floor.eventsPerWorkflow, 0)} events), not what the upgrade does. The workers and
the client take ${f(workers, 0)} against ${f(floor.workersCpuMsPerWorkflow, 0)} ms: the difference, ${f(ownWork, 0)} ms, is the upgrade's own work
(the host workers' QEMU simulators and VM records, the saga's own code in the orchestrator). ${
    floor.cpuBoundPerSec < 25
      ? `Even empty, upgrades of this shape cannot reach 25/s with the service on the same ${os.cpus().length} cores.`
      : `Empty, upgrades of this shape could reach 25/s on these cores.`
  }${onHostText}
`;
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
  // The in-process host worker's log of every activity would bury the progress lines, as in the demo.
  logger.level = process.env.FLEET_LOG_LEVEL ?? 'warn';
  // Progress on stderr, with or without --json: stdout carries the answer only (one JSON object with --json).
  const say = (s: string) => process.stderr.write(`${s}\n`);
  say('real QEMU, one VM: saga vs raw QMP, alternated, guest RAM copied and shared (a Linux guest booted each time)');
  const real = await runRealQemuBench(o.runs, say);
  let ramModes: RamModeFigures[] = [];
  if (o.ramModes) {
    say('guest RAM: copied vs shared, 64 MiB to 4 GiB');
    ramModes = await runRamModesBench(say);
  }
  let fleet: FleetFigures[] = [];
  if (o.fleet) {
    say('fleet: simulated hosts × VMs through the dev server, at three sizes and the largest with 5 % faulty VMs');
    fleet = await runFleetBench({ say });
  }
  // The floor at the largest fault-free size: the Temporal part of as many upgrades, with nothing in them.
  const floorOf = [...fleet].reverse().find((x) => !x.faultyShare);
  let floorFleet: FloorFleetFigures[] | undefined;
  if (floorOf) {
    say(
      `fleet floor: ${floorOf.hosts} × ${floorOf.vmsPerHost} empty upgrades (the saga's workflow, activities that do nothing)`,
    );
    floorFleet = await runFloorFleet({ hosts: floorOf.hosts, vmsPerHost: floorOf.vmsPerHost, concurrency: 64, say });
  }
  let services: ServiceFigures[] = [];
  if (o.cluster) {
    say('fleet: the same workload on the dev server and on a real cluster (PostgreSQL, mTLS)');
    services = await runClusterFleetBench({ hosts: 4, vmsPerHost: 25, concurrency: 16, json: false });
  }
  // A partial run must not replace the whole document's figures.
  if (!o.only) {
    writeFileSync(
      path.join(projectRoot, 'docs', 'BENCHMARKS.md'),
      `${benchmarksMarkdown(real, new Date(), ramModes)}${fleet.length ? `\n${fleetBenchmarksMarkdown(fleet)}` : ''}${floorFleet && floorOf ? `\n${floorFleetMarkdown(floorFleet, floorOf)}` : ''}${services.length ? `\n${servicesMarkdown(services)}` : ''}`,
    );
  }
  const largest = fleet[fleet.length - 1];
  const summary = {
    realQemu: oneVmSummary(real),
    ramModes: ramModes.map((r) => ({ ...r })),
    ...(services.length ? { fleetServices: services.map((r) => ({ ...r })) } : {}),
    ...(floorFleet ? { fleetFloor: floorFleet } : {}),
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
              faultyShare: f.faultyShare,
              ...(f.faulty ? { faulty: f.faulty } : {}),
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
    console.table(
      Object.values(real.modes).map((m) => ({
        ram: m.ram,
        sagaWallMsP50: m.sagaWallMsP50,
        rawWallMsP50: m.rawWallMsP50,
        overheadRatio: m.overheadRatio,
        floorWallMsP50: real.floor.wallMsP50,
        switchoverGapMsP50: m.switchoverGapMsP50,
        guestPauseMsP50: m.guestPauseMsP50,
      })),
    );
    if (ramModes.length) console.table(ramModes);
    if (fleet.length) console.table(fleetSummaryRows(fleet));
    if (services.length) console.table(services);
    if (o.only) process.stdout.write(`\n${oneVmMarkdown(real)}`);
    else process.stdout.write('figures written to docs/BENCHMARKS.md\n');
  }
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
