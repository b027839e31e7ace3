#!/usr/bin/env node
// A committed entry point, so npm links `braid` at install time, before dist/ is built.
import '../dist/cli.js';
