// Leftovers of a test process that died without stop(): the next run must remove them.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { OWNER_FILE, cleanupLeftovers, mountsUnder, processesMentioning } from './cleanup';
import { ALL_VERSIONS, TEST_IMAGE, availableVersions, missingReason, startContainerd } from './containerd';

const version = availableVersions()[0];

describe.skipIf(version === undefined)(
  `cleanupLeftovers${version === undefined ? ` (skipped: ${ALL_VERSIONS.map((v) => `${v}: ${missingReason(v)}`).join('; ')})` : ''}`, () => {
    it('removes the daemon, shims, containers and mounts of a dead owner, and nothing of a live one', async () => {
      const orphan = await startContainerd(version!, { namespace: 'harness-orphan' });
      const alive = await startContainerd(version!, { namespace: 'harness-alive' });
      try {
        await orphan.ctrOk(['run', '-d', TEST_IMAGE, 'orphaned', 'sleep', '1000']);
        expect(processesMentioning(orphan.dir).length).toBeGreaterThan(1); // containerd + shim
        // As if the owning test process had died: no live process has this identity.
        writeFileSync(join(orphan.dir, OWNER_FILE), '999999999 1\n');

        const removed = await cleanupLeftovers();

        expect(removed).toContain(orphan.dir);
        expect(removed).not.toContain(alive.dir);
        expect(processesMentioning(orphan.dir)).toEqual([]);
        expect(mountsUnder(orphan.dir)).toEqual([]);
        expect(existsSync(orphan.dir)).toBe(false);
        expect((await alive.ctrOk(['version']))).toContain('Server');
      } finally {
        await orphan.stop();
        await alive.stop();
      }
    });
  });
