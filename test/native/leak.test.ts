// The addon's calls under valgrind memcheck (test/native/leak.sh: process primitives; test/criu/leak.sh:
// libcriu). Slow — node runs under valgrind — so each script runs once, here, in the normal suite.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');
const valgrind = ['/usr/bin/valgrind', '/usr/local/bin/valgrind'].find((p) => fs.existsSync(p));
const addon = fs.existsSync(path.join(root, 'build/Release/kybernate.node'));
const skip = !valgrind ? 'valgrind not installed (make setup installs it)' : !addon ? 'addon not built (run make build)'
  : process.getuid?.() !== 0 ? 'needs root (subreaper, mount, CRIU)' : '';

describe.skipIf(!!skip)(`addon leak check under valgrind${skip ? ` (skipped: ${skip})` : ''}`, () => {
  for (const script of ['test/native/leak.sh', 'test/criu/leak.sh']) {
    it(`${script}: no definite leaks and no memory errors`, () => {
      const r = spawnSync('sh', [path.join(root, script)], { encoding: 'utf8', timeout: 15 * 60_000 });
      const out = `${r.stdout}\n${r.stderr}`;
      expect(r.status, out.slice(-4000)).toBe(0);
      expect(out).toMatch(/ERROR SUMMARY: 0 errors/);
      expect(out).not.toMatch(/definitely lost: [1-9]/);
    }, 16 * 60_000);
  }
});
