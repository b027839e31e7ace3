// Adds up the counts every suite printed (the native tests' "N passed, N failed, N skipped"
// lines and vitest's "Tests  N passed | N failed | N skipped") into one closing line.
import { readFileSync } from 'node:fs';

const text = readFileSync(process.argv[2], 'utf8').replace(/\x1b\[[0-9;]*m/g, '');
let passed = 0, failed = 0, skipped = 0;
for (const m of text.matchAll(/: (\d+) passed, (\d+) failed, (\d+) skipped/g)) {
  passed += Number(m[1]);
  failed += Number(m[2]);
  skipped += Number(m[3]);
}
for (const line of text.split('\n')) {
  const m = line.match(/Tests\s+(.*)\(\d+\)/);
  if (!m) continue;
  passed += Number(m[1].match(/(\d+) passed/)?.[1] ?? 0);
  failed += Number(m[1].match(/(\d+) failed/)?.[1] ?? 0);
  skipped += Number(m[1].match(/(\d+) skipped/)?.[1] ?? 0);
}
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
