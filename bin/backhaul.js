#!/usr/bin/env -S node --max-semi-space-size=8
// Thin launcher: the CLI is TypeScript run through Node's type stripping (Node >= 22.18); on an
// older Node, bin/launch.js runs it under a supported one (or says in one line what to install).
// --max-semi-space-size=8: on a large machine V8 lets the young generation grow to ~100 MB of
// garbage between scavenges (an idle worker sat at 300 MB RSS); 8 MB semi-spaces keep it near
// 150 MB at no measurable cost in throughput. Every launcher passes it: package.json, Dockerfile.
import { fileURLToPath } from 'node:url';
import { run } from './launch.js';

await run(fileURLToPath(new URL('../src/cli.ts', import.meta.url)), process.argv.slice(2));
