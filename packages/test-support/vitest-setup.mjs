// Runs in every test file's process (vitest.mjs's setupFiles): the file's scratch folders go
// when it ends, so that test runs do not pile up in /tmp.
import { afterAll } from 'vitest';

import { removeScratchDirs } from './scratch.mjs';

afterAll(removeScratchDirs);
