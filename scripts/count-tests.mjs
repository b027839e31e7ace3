// Adds up the counts every suite printed (the native tests' "N passed, N failed, N skipped"
// lines and vitest's "Tests  N passed | N failed | N skipped") into one closing line, and names
// every failed test just above it: CI keeps only the tail of a run's output, and a count alone
// does not say which test to look at.
import { readFileSync } from 'node:fs';

const text = readFileSync(process.argv[2], 'utf8').replace(/\x1b\[[0-9;]*m/g, '');
let passed = 0, failed = 0, skipped = 0;
for (const m of text.matchAll(/: (\d+) passed, (\d+) failed, (\d+) skipped/g)) {
  passed += Number(m[1]);
  failed += Number(m[2]);
  skipped += Number(m[3]);
}
const failures = new Set();
for (const line of text.split('\n')) {
  // The native tests and the packaging test print "FAIL name ...", vitest's summary
  // " FAIL  file > name", the soak "soak: FAILED ..."; turbo prefixes "pkg:test: ".
  const failure = line.match(/^(?:[@\w/.-]+:\w+: )?\s*(FAIL\s.*|soak: FAILED.*)$/);
  if (failure) failures.add(failure[1].trim().slice(0, 400));
  const m = line.match(/Tests\s+(.*)\(\d+\)/);
  if (!m) continue;
  passed += Number(m[1].match(/(\d+) passed/)?.[1] ?? 0);
  failed += Number(m[1].match(/(\d+) failed/)?.[1] ?? 0);
  skipped += Number(m[1].match(/(\d+) skipped/)?.[1] ?? 0);
}
if (failures.size > 0) {
  console.log('failed:');
  for (const failure of failures) console.log(`  ${failure}`);
}
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
