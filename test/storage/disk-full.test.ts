// A disk store on a full filesystem (an 8 MiB tmpfs): put and pack fail with KYB_ERR_RESOURCE_EXHAUSTED,
// leave no partial chunk visible and no temporary file, and what was stored before stays readable.
// Needs root (mount); skipped otherwise, saying so.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskChunkStore } from '../../src/storage/disk-store';
import { packSnapshot } from '../../src/storage/pack';
import { MiB, collect, makeSnapshot, rejection, removeTmps, seededBytes, sha256, tmpDir } from './helpers';

const skip = process.getuid?.() !== 0 ? 'mounting a tmpfs needs root' : undefined;
const temps = (dir: string) => (fs.readdirSync(dir, { recursive: true }) as string[]).filter((n) => n.endsWith('.tmp'));

describe.skipIf(skip !== undefined)(`DiskChunkStore on a full disk${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let mnt = '';
  beforeAll(() => {
    mnt = tmpDir('tmpfs');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
  });
  afterAll(() => {
    if (mnt) execFileSync('umount', [mnt]);
    removeTmps();
  });

  it('fails a put with KYB_ERR_RESOURCE_EXHAUSTED, no partial chunk visible, no temporary file left', async () => {
    const dir = path.join(mnt, 'put');
    const store = await DiskChunkStore.open(dir);
    const stored: string[] = [];
    let err;
    for (let i = 0; i < 10 && !err; i++) {
      const data = seededBytes(3 * MiB, `fill-${i}`);
      const digest = sha256(data);
      err = await store.put(digest, data).then(() => { stored.push(digest); return undefined; }, (e: unknown) => e);
      if (err) {
        expect(await store.has(digest)).toBe(false);
        expect(fs.existsSync(path.join(dir, 'chunks', digest.slice(0, 2), digest))).toBe(false);
      }
    }
    const e = await rejection(Promise.reject(err));
    expect(e.code).toBe('KYB_ERR_RESOURCE_EXHAUSTED');
    expect(e.message).toContain(dir);
    expect(e.message).toMatch(/full/);
    expect(stored.length).toBeGreaterThan(0);
    expect(temps(mnt)).toEqual([]);
    for (const d of stored) expect((await store.get(d)).length).toBe(3 * MiB);
    fs.rmSync(dir, { recursive: true });
  });

  it('fails a pack with KYB_ERR_RESOURCE_EXHAUSTED and writes no index', async () => {
    const snap = tmpDir('full-snap');
    await makeSnapshot(snap, { 'pages-1.img': seededBytes(20 * MiB, 'too big'), 'inventory.img': Buffer.from('inv') });
    const dir = path.join(mnt, 'pack');
    const store = await DiskChunkStore.open(dir);
    const err = await rejection(packSnapshot(snap, store));
    expect(err.code).toBe('KYB_ERR_RESOURCE_EXHAUSTED');
    expect(await collect(store.listIndexes())).toEqual([]);
    expect(temps(mnt)).toEqual([]);
    for (const c of await collect(store.listChunks())) expect((await store.get(c.digest)).length).toBe(c.size);
  });
});
