#!/usr/bin/env node
'use strict';
// The CLI is compiled by `npm run build` (infra/install.sh runs it) into dist/.
//
// `fleet-upgrade host-worker` bounds its own memory, since a user (or systemd unit) that starts it plainly
// gets Node's defaults, which let a busy worker grow to 170-210 MiB: unless given already (on node's command
// line or in NODE_OPTIONS; MALLOC_ARENA_MAX in the environment), it runs with V8's young generation capped at
// 1 MiB semispaces, its old generation's growth bounded at 96 MiB, and MALLOC_ARENA_MAX=2 (fewer glibc heaps
// for the threads of Temporal's core SDK): about 125 MiB (docs/BENCHMARKS.md, `npm run bench`). Node and glibc
// read these only at start, so the process replaces itself once with execve(2): the same pid, stdio, signals
// and exit code, nothing left in between (systemd's SIGTERM reaches the worker, which drains). execve comes
// from Node itself where it has it (22.15+, 23.11+), else from libc through koffi (already a dependency).
// FLEET_UPGRADE_NODE_TUNING=0 keeps Node's defaults; a flag or MALLOC_ARENA_MAX you set yourself wins.
const argv = process.argv.slice(2);

if (argv[0] === 'host-worker') relaunchTuned();

// Node 22.1+: reuse the compiled code of the CLI's modules between calls (a no-op on older Node).
const nodeModule = require('node:module');
if (typeof nodeModule.enableCompileCache === 'function') {
  try {
    nodeModule.enableCompileCache();
  } catch {
    // a cache that cannot be written only costs time
  }
}

require('../dist/workers/cli.js')
  .main(argv)
  .then((code) => {
    process.exitCode = code;
  });

function relaunchTuned() {
  const env = process.env;
  if (process.platform !== 'linux' || env.FLEET_UPGRADE_NODE_TUNED) return;
  if (/^(0|off|no|false)$/i.test(env.FLEET_UPGRADE_NODE_TUNING || '')) return;
  const given = `${process.execArgv.join(' ')} ${env.NODE_OPTIONS || ''}`;
  const flags = [
    ['max[-_]semi[-_]space[-_]size', '--max-semi-space-size=1'],
    ['max[-_]old[-_]space[-_]size', '--max-old-space-size=96'],
  ]
    .filter(([name]) => !new RegExp(`(^|\\s)--${name}\\b`).test(given))
    .map(([, flag]) => flag);
  const arenas = env.MALLOC_ARENA_MAX === undefined ? { MALLOC_ARENA_MAX: '2' } : {};
  if (flags.length === 0 && Object.keys(arenas).length === 0) return;
  const args = [process.execPath, ...process.execArgv, ...flags, ...process.argv.slice(1)];
  const tunedEnv = { ...env, ...arenas, FLEET_UPGRADE_NODE_TUNED: [...flags, ...Object.keys(arenas)].join(' ') };
  let why;
  try {
    if (typeof process.execve === 'function') {
      process.execve(process.execPath, args, tunedEnv); // returns only by throwing
    } else {
      const koffi = require('koffi');
      const libc = koffi.load('libc.so.6');
      const fcntl = libc.func('int fcntl(int fd, int cmd, ...)');
      const execve = libc.func('int execve(const char *path, const char **argv, const char **envp)');
      // Node opens stdin, stdout and stderr close-on-exec: clear that, as process.execve does, or the new
      // process would find them on /dev/null.
      const F_SETFD = 2;
      for (const fd of [0, 1, 2]) fcntl(fd, F_SETFD, 'int', 0);
      const strings = Object.entries(tunedEnv).map(([k, v]) => `${k}=${v}`);
      execve(process.execPath, [...args, null], [...strings, null]); // returns only on failure
      why = `execve: errno ${koffi.errno()}`;
    }
  } catch (err) {
    why = err && err.message ? err.message : String(err);
  }
  process.stderr.write(
    `fleet-upgrade host-worker: could not restart with ${[...flags, ...Object.keys(arenas)].join(' ')} (${why}); running with Node's memory defaults\n`,
  );
}
