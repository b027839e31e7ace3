// Adds up the counts every suite printed (the native tests' "N passed, N failed, N skipped"
// lines and vitest's "Tests  N passed | N failed | N skipped") into one closing line, and names
// every failed test just above it: CI keeps only the tail of a run's output, and a count alone
// does not say which test to look at.
import { readFileSync } from 'node:fs';

// Every log named on the command line (scripts/test.sh keeps one per lane).
const text = process.argv.slice(2).map((file) => readFileSync(file, 'utf8')).join('\n').replace(/\x1b\[[0-9;]*m/g, '');
let passed = 0, failed = 0, skipped = 0;
for (const m of text.matchAll(/: (\d+) passed, (\d+) failed, (\d+) skipped/g)) {
  passed += Number(m[1]);
  failed += Number(m[2]);
  skipped += Number(m[3]);
}
const failures = new Map();
const lines = text.split('\n');
const unprefixed = (line) => line.replace(/^[@\w/.-]+:\w+: /, '');
for (const [index, line] of lines.entries()) {
  // The native tests and the packaging test print "FAIL name ...", vitest's summary
  // " FAIL  file > name", the soak "soak: FAILED ..."; turbo prefixes "pkg:test: ".
  const failure = unprefixed(line).match(/^\s*(FAIL\s.*|soak: FAILED.*)$/);
  if (failure) {
    const name = failure[1].trim().slice(0, 400);
    // Vitest follows a failure with its error and where it was thrown: keep the first of each.
    const why = failures.get(name) ?? [];
    for (const next of lines.slice(index + 1, index + 16).map(unprefixed)) {
      if (/^\s*(FAIL\s|Test Files|⎯)/.test(next) && why.length > 0) break;
      const error = next.match(/^\s*(\w*Error\b.*)$/);
      const where = next.match(/❯ (\S+:\d+:\d+)/);
      if (error && !why.some((w) => /Error\b/.test(w))) why.push(error[1].slice(0, 300));
      if (where && !why.some((w) => w.startsWith('at '))) why.push(`at ${where[1]}`);
    }
    failures.set(name, why);
  }
  const m = line.match(/Tests\s+(.*)\(\d+\)/);
  if (!m) continue;
  passed += Number(m[1].match(/(\d+) passed/)?.[1] ?? 0);
  failed += Number(m[1].match(/(\d+) failed/)?.[1] ?? 0);
  skipped += Number(m[1].match(/(\d+) skipped/)?.[1] ?? 0);
}
if (failures.size > 0) {
  console.log('failed:');
  for (const [failure, why] of failures) {
    console.log(`  ${failure}`);
    for (const w of why) console.log(`      ${w}`);
  }
}
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
