#!/usr/bin/env node
'use strict';
// The CLI is compiled by `npm run build` (infra/install.sh runs it) into dist/.
require('../dist/workers/cli.js')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
