#!/usr/bin/env node
// Exec this like a QEMU binary: qemu-sim.js [--sim-* options] <QEMU options>. Runs the build in dist/
// (`npm run build`); QEMU_SIM_MAIN names another compiled main.js (the simulator tests use their own build).
'use strict';
require(process.env.QEMU_SIM_MAIN || '../../dist/infra/simulator/main.js').main(process.argv.slice(2));
