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
// The commands that run until stopped: how quickly they start is not what one waits for.
const longRunning = ['host-worker', 'orchestrator-worker', 'demo'].includes(argv[0]);
// Help loads commander and nothing heavy: Node's defaults serve it best.
const helpOnly = argv.length === 0 || argv[0] === 'help' || argv.some((a) => a === '--help' || a === '-h');
// The others (`vm status`, …) answer and exit, and load @temporalio/client: see quickStart below.
const quick = !longRunning && !helpOnly;
const tuning = !/^(0|off|no|false)$/i.test(process.env.FLEET_UPGRADE_NODE_TUNING || '');

if (argv[0] === 'host-worker') relaunchTuned();
// A command that answers and exits spends ~50 ms of CPU in V8's optimizing compiler (TurboFan) on code that
// ends before optimized code pays: it runs without (FLEET_UPGRADE_NODE_TUNING=0 keeps Node's defaults).
const v8Flags = quick && tuning ? '--no-opt' : '';
if (v8Flags) require('node:v8').setFlagsFromString(v8Flags);
quickStart();

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

// What a command that answers and exits can reuse from the calls before it. Loading @temporalio/client takes
// ~150 ms of CPU, ~40 ms of it compiling (most of that @temporalio/proto's 1.4 MB of definitions) and ~40 ms
// resolving its ~230 modules (stat calls, package.json files). So, in one file of the user's own:
// - V8's compiled code of each module (vm.Script `cachedData`), made at exit and so holding the functions
//   the call compiled lazily too; an entry serves only the content it was made from (sha256), and V8 itself
//   refuses data of another V8 or other flags (one file for each: see `file`);
// - where each `require` led (Module._resolveFilename), while node_modules is as it was then (npm's
//   node_modules/.package-lock.json, rewritten by every install, and the folder itself) and the file is there.
// Node 22.1+ compiles with a cache of its own (module.enableCompileCache), used instead, for every command. The
// file: <checkout>/.cache/v8-compile-cache/, else $XDG_CACHE_HOME/fleet-upgrade/, else a folder of the user's
// own under the OS's temporary folder (FLEET_UPGRADE_COMPILE_CACHE=<folder> puts it there, =0 turns it off).
// Nothing about it fails a command: a folder that cannot be made or written, a file that cannot be read or
// is damaged, cost only time. Not for the workers and the demo, which load several times as much (the file
// would grow with it) and whose start is not what one waits for, nor under a debugger, a policy manifest or
// --enable-source-maps.
function quickStart() {
  const setting = process.env.FLEET_UPGRADE_COMPILE_CACHE || '';
  if (/^(0|off|no|false)$/i.test(setting)) return;
  const nodeModule = require('node:module');
  if (typeof nodeModule.enableCompileCache === 'function') {
    try {
      nodeModule.enableCompileCache(setting || undefined);
    } catch {
      // a cache that cannot be written only costs time
    }
    return;
  }
  if (!quick) return;
  const given = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS || ''}`;
  if (/--inspect|--debug|--experimental-policy|--enable-source-maps/.test(given)) return;
  try {
    startupCache(nodeModule, setting);
  } catch {
    // idem
  }
}

// The file: cacheMagic(), a 4-byte length and a JSON index {stamp, resolved: [[key, module file]...],
// code: [[module file, sha256, bytes]...]}, then the code's data one after the other.
function cacheMagic() {
  return Buffer.from('fleet-upgrade startup cache 1\n');
}

function startupCache(Module, setting) {
  const fs = require('node:fs');
  const path = require('node:path');
  const vm = require('node:vm');
  const { createHash } = require('node:crypto');
  const dir = cacheDir(fs, path, setting);
  if (!dir) return;
  const flags = createHash('sha256')
    .update(JSON.stringify([process.execArgv, process.env.NODE_OPTIONS || '', v8Flags]))
    .digest('hex')
    .slice(0, 12);
  const file = path.join(dir, `${process.version}-${process.arch}-${flags}.bin`);
  const stamp = installStamp(fs, path);
  const cache = readCache(fs, file);
  /** @type {Map<string, string>} `${parent folder}\0${request}` → module file */
  const resolved = stamp !== undefined && cache.stamp === stamp ? cache.resolved : new Map();
  /** @type {Map<string, {hash: string, script: import('node:vm').Script}>} modules compiled without usable data */
  const compiled = new Map();
  let dirty = false;

  const originalResolve = Module._resolveFilename;
  if (stamp !== undefined) {
    Module._resolveFilename = function resolveCached(request, parent, isMain, options) {
      if (isMain || options !== undefined || !parent || typeof parent.path !== 'string') {
        return originalResolve.apply(this, arguments);
      }
      const key = `${parent.path}\0${request}`;
      const known = resolved.get(key);
      if (known !== undefined && fs.existsSync(known)) return known;
      const filename = originalResolve.apply(this, arguments);
      if (path.isAbsolute(filename)) {
        resolved.set(key, filename);
        dirty = true;
      }
      return filename;
    };
  }

  const originalCompile = Module.prototype._compile;
  Module.prototype._compile = function compileCached(content, filename, format) {
    // ES modules, and scripts with an `import()` (a vm.Script needs a loader for it), go through Node.
    if (format === 'module' || typeof content !== 'string' || /\bimport\s*\(/.test(content)) {
      return originalCompile.apply(this, arguments);
    }
    const hash = createHash('sha256').update(content).digest('base64');
    const entry = cache.code.get(filename);
    const cachedData = entry !== undefined && entry.hash === hash ? entry.data : undefined;
    let script;
    try {
      script = new vm.Script(Module.wrap(content), { filename, cachedData });
    } catch {
      return originalCompile.apply(this, arguments); // Node says what is wrong, or loads it as an ES module
    }
    if (cachedData === undefined || script.cachedDataRejected) {
      compiled.set(filename, { hash, script });
      dirty = true;
    }
    const require = (id) => this.require(id);
    require.resolve = (request, options) => Module._resolveFilename(request, this, false, options);
    require.resolve.paths = (request) => Module._resolveLookupPaths(request, this);
    require.main = process.mainModule;
    require.extensions = Module._extensions;
    require.cache = Module._cache;
    const wrapper = script.runInThisContext({ displayErrors: true });
    return Reflect.apply(wrapper, this.exports, [this.exports, require, this, filename, path.dirname(filename)]);
  };

  process.once('exit', () => {
    if (!dirty) return;
    try {
      const code = new Map(cache.code);
      for (const [name, { hash, script }] of compiled) code.set(name, { hash, data: script.createCachedData() });
      let total = 0;
      for (const e of code.values()) total += e.data.length;
      if (total > 64 << 20) for (const name of code.keys()) if (!compiled.has(name)) code.delete(name);
      writeCache(fs, file, { stamp: stamp ?? null, resolved, code });
    } catch {
      // an unwritable cache only costs time
    }
  });
}

/** The folder of the cache, made if need be: one that only this user can write to, or none. */
function cacheDir(fs, path, setting) {
  const os = require('node:os');
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  const checkout = path.join(__dirname, '..', '.cache');
  const candidates = setting
    ? [path.resolve(setting)]
    : [
        fs.existsSync(checkout) ? path.join(checkout, 'v8-compile-cache') : undefined,
        process.env.XDG_CACHE_HOME ? path.join(process.env.XDG_CACHE_HOME, 'fleet-upgrade') : undefined,
        path.join(os.tmpdir(), `fleet-upgrade-${uid}`, 'v8-compile-cache'),
      ];
  for (const dir of candidates) {
    if (dir === undefined) continue;
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      // Compiled code runs as it is: never from a folder another user could have written to.
      if (!ownedByMe(fs.statSync(dir), uid)) continue;
      fs.accessSync(dir, fs.constants.W_OK);
      return dir;
    } catch {
      // the next place
    }
  }
  return undefined;
}

function ownedByMe(st, uid) {
  return (uid < 0 || st.uid === uid) && (st.mode & 0o022) === 0;
}

/** What node_modules is now, as far as resolving a `require` goes; undefined: not known, resolve every time. */
function installStamp(fs, path) {
  try {
    const modules = path.join(__dirname, '..', 'node_modules');
    const lock = fs.statSync(path.join(modules, '.package-lock.json'));
    return `${lock.mtimeMs}:${lock.size}:${fs.statSync(modules).mtimeMs}:${process.env.NODE_PATH || ''}`;
  } catch {
    return undefined;
  }
}

function readCache(fs, file) {
  const empty = { stamp: undefined, resolved: new Map(), code: new Map() };
  try {
    const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
    if (!ownedByMe(fs.statSync(file), uid)) return empty;
    const buf = fs.readFileSync(file);
    const magic = cacheMagic();
    if (!buf.subarray(0, magic.length).equals(magic)) return empty;
    let offset = magic.length + 4 + buf.readUInt32LE(magic.length);
    const index = JSON.parse(buf.toString('utf8', magic.length + 4, offset));
    const code = new Map();
    for (const [name, hash, length] of index.code) {
      if (offset + length > buf.length) return empty;
      code.set(name, { hash, data: buf.subarray(offset, offset + length) });
      offset += length;
    }
    return { stamp: index.stamp ?? undefined, resolved: new Map(index.resolved), code };
  } catch {
    return empty;
  }
}

function writeCache(fs, file, { stamp, resolved, code }) {
  const index = { stamp, resolved: [...resolved], code: [] };
  const data = [];
  for (const [name, e] of code) {
    index.code.push([name, e.hash, e.data.length]);
    data.push(e.data);
  }
  const indexBuf = Buffer.from(JSON.stringify(index));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(indexBuf.length);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, Buffer.concat([cacheMagic(), length, indexBuf, ...data]), { mode: 0o600 });
    fs.renameSync(tmp, file); // whole or not at all, whatever other calls do at the same time
  } catch {
    try {
      fs.unlinkSync(tmp);
    } catch {
      // nothing was written
    }
  }
}
