#!/usr/bin/env node
// Thin launcher: the CLI is TypeScript run through Node's type stripping (Node >= 22.18).
import('../src/cli.ts');
