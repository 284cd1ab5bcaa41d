#!/usr/bin/env node
// Exec this like a QEMU binary: qemu-sim.js [--sim-* options] <QEMU options>. Needs `npm run build`.
'use strict';
require('../../dist/infra/simulator/main.js').main(process.argv.slice(2));
