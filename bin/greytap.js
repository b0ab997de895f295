#!/usr/bin/env node
// The package bin: the CLI is compiled TypeScript (npm's `prepare` runs tsc on install).
import '../dist/src/cli.js';
