// DiskChunkStore on real files: round trips, integrity (a corrupted or missing chunk is refused and
// named), names that are not hex refused, atomic writes, and the temporary files of a killed writer.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DiskChunkStore } from '../../src/storage/disk-store';
import { KiB, MiB, collect, rejection, removeTmps, seededBytes, sha256, tmpDir } from './helpers';

afterAll(removeTmps);
const chunk = (size: number, seed: string) => {
  const data = seededBytes(size, seed);
  return { digest: sha256(data), data };
};
const temps = (dir: string) => (fs.readdirSync(dir, { recursive: true }) as string[]).filter((n) => n.endsWith('.tmp'));
const anId = (seed: string) => `sha256:${sha256(Buffer.from(seed))}`;

describe('DiskChunkStore', () => {
  it('stores, finds, reads, lists and deletes chunks; put is idempotent', async () => {
    const dir = tmpDir('disk');
    const store = await DiskChunkStore.open(dir);
    expect(store.kind).toBe('disk');
    expect(store.name).toBe(dir);
    const a = chunk(3 * MiB, 'a');
    const b = chunk(100, 'b');
    expect(await store.has(a.digest)).toBe(false);
    await store.put(a.digest, a.data);
    await store.put(a.digest, a.data);
    await store.put(b.digest, b.data);
    expect(await store.has(a.digest)).toBe(true);
    expect((await store.get(a.digest)).equals(a.data)).toBe(true);
    expect(fs.existsSync(path.join(dir, 'chunks', a.digest.slice(0, 2), a.digest))).toBe(true);
    const listed = (await collect(store.listChunks())).sort((x, y) => x.size - y.size);
    expect(listed.map((c) => [c.digest, c.size])).toEqual([[b.digest, 100], [a.digest, 3 * MiB]]);
    expect(listed[0].mtimeMs).toBeGreaterThan(Date.now() - 60_000);
    await store.delete(a.digest);
    await store.delete(a.digest);
    expect(await store.has(a.digest)).toBe(false);
    expect(temps(dir)).toEqual([]);
  });

  it('stores indexes atomically by snapshot id, and lists and deletes them', async () => {
    const store = await DiskChunkStore.open(tmpDir('disk-index'));
    const [x, y] = [anId('x'), anId('y')];
    expect(await store.getIndex(x)).toBeUndefined();
    await store.putIndex(x, Buffer.from('{"x":1}'));
    await store.putIndex(y, Buffer.from('{"y":1}'));
    await store.putIndex(x, Buffer.from('{"x":2}'));
    expect((await store.getIndex(x))?.toString()).toBe('{"x":2}');
    expect((await collect(store.listIndexes())).sort()).toEqual([x, y].sort());
    await store.deleteIndex(x);
    await store.deleteIndex(x);
    expect(await collect(store.listIndexes())).toEqual([y]);
  });

  it('refuses bytes that do not hash to the digest; nothing becomes visible', async () => {
    const dir = tmpDir('disk-mismatch');
    const store = await DiskChunkStore.open(dir);
    const a = chunk(KiB, 'a');
    const err = await rejection(store.put(a.digest, seededBytes(KiB, 'not a')));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toContain(a.digest);
    expect(await store.has(a.digest)).toBe(false);
    expect(temps(dir)).toEqual([]);
  });

  it('refuses a corrupted or missing chunk on read, naming the chunk and the store', async () => {
    const dir = tmpDir('disk-corrupt');
    const store = await DiskChunkStore.open(dir);
    const a = chunk(2 * MiB, 'corrupt me');
    await store.put(a.digest, a.data);
    const file = path.join(dir, 'chunks', a.digest.slice(0, 2), a.digest);
    const bytes = fs.readFileSync(file);
    bytes[MiB] ^= 0x40;
    fs.writeFileSync(file, bytes);
    const err = await rejection(store.get(a.digest));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toContain(a.digest);
    expect(err.message).toContain(dir);
    expect(err.message).toMatch(/corrupt/);
    fs.unlinkSync(file);
    const missing = await rejection(store.get(a.digest));
    expect(missing.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(missing.message).toContain(a.digest);
    expect(missing.message).toMatch(/missing/);
  });

  it('accepts only hex names: no path reaches outside the store', async () => {
    const store = await DiskChunkStore.open(tmpDir('disk-names'));
    const evil = ['../../../etc/passwd', 'A'.repeat(64), `${'a'.repeat(63)}/`, '', `sha256:${'a'.repeat(64)}`];
    for (const d of evil) {
      for (const call of [store.has(d), store.get(d), store.put(d, Buffer.from('x')), store.delete(d)]) {
        expect((await rejection(call)).code, JSON.stringify(d)).toBe('KYB_ERR_INVALID_ARGUMENT');
      }
    }
    for (const id of ['a'.repeat(64), 'sha256:../x', `sha256:${'A'.repeat(64)}`, `sha256:${'a'.repeat(64)}/../b`]) {
      for (const call of [store.getIndex(id), store.putIndex(id, Buffer.from('{}')), store.deleteIndex(id)]) {
        expect((await rejection(call)).code, JSON.stringify(id)).toBe('KYB_ERR_INVALID_ARGUMENT');
      }
    }
  });

  it('removes the temporary files of dead writers on open, and keeps those of live ones', async () => {
    const dir = tmpDir('disk-orphans');
    const store = await DiskChunkStore.open(dir);
    const a = chunk(KiB, 'orphan');
    const fan = path.join(dir, 'chunks', a.digest.slice(0, 2));
    const dead = spawn('true');
    await new Promise((resolve) => dead.on('exit', resolve));
    const live = spawn('sleep', ['30']);
    try {
      const deadTmp = path.join(fan, `.${a.digest}.${dead.pid}.0123abcd.tmp`);
      const ownTmp = path.join(dir, 'indexes', `.${'b'.repeat(64)}.json.${process.pid}.0123abcd.tmp`); // an earlier us
      const liveTmp = path.join(fan, `.${a.digest}.${live.pid}.0123abcd.tmp`);
      for (const f of [deadTmp, ownTmp, liveTmp]) fs.writeFileSync(f, 'partial');
      expect(await store.cleanOrphans()).toBe(2);
      expect(fs.existsSync(liveTmp)).toBe(true);
      // An hour later a live pid's file is an orphan too (that pid was reused).
      const old = new Date(Date.now() - 2 * 3600_000);
      fs.utimesSync(liveTmp, old, old);
      await DiskChunkStore.open(dir);
      expect(temps(dir)).toEqual([]);
      expect(await collect(store.listChunks())).toEqual([]);
    } finally {
      live.kill('SIGKILL');
    }
  });

  it('leaves no partial chunk visible, and no temporary file after reopening, when the writer is SIGKILLed', async () => {
    const dir = tmpDir('disk-killed');
    const bin = path.resolve(__dirname, '../../node_modules/vite-node/vite-node.mjs');
    // Killed as soon as it has stored a chunk and a temporary file is there; again if that file was
    // renamed before the signal landed (a few rounds at most).
    let sawTemp = false;
    for (let round = 0; round < 6 && !sawTemp; round++) {
      const child = spawn(process.execPath, [bin, path.join(__dirname, 'killed-writer.ts'), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve(); });
        child.on('exit', (code) => reject(new Error(`writer exited early (${code})`)));
      });
      const deadline = Date.now() + 10_000;
      while (temps(dir).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
      child.kill('SIGKILL');
      await new Promise((resolve) => child.on('exit', resolve));
      sawTemp = temps(dir).length > 0;
    }
    const store = await DiskChunkStore.open(dir);
    expect(temps(dir)).toEqual([]);
    const chunks = await collect(store.listChunks());
    expect(chunks.length).toBeGreaterThanOrEqual(1);
    for (const c of chunks) expect((await store.get(c.digest)).length).toBe(8 * MiB);
    expect(sawTemp, 'a temporary file was left by a killed writer (the case cleanOrphans is for)').toBe(true);
  });
});
