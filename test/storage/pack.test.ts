// packSnapshot / unpackSnapshot / gcChunks / storedBytes over a DiskChunkStore, on real snapshot
// directories written by writeManifest: the round trip, dedup between two snapshots, atomicity of unpack,
// refusal of a snapshot whose bytes do not match its manifest, gc, and the index format's strictness.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MANIFEST_FILE, checkManifestWithId, verifyChecksums } from '../../src/snapshot/manifest';
import type { ChunkStore } from '../../src/storage/chunk-store';
import { DiskChunkStore } from '../../src/storage/disk-store';
import { encodeIndex, parseIndex } from '../../src/storage/index-format';
import { gcChunks, packSnapshot, readIndex, storedBytes, unpackSnapshot, type Progress } from '../../src/storage/pack';
import { KiB, MiB, collect, listTree, makeSnapshot, rejection, removeTmps, seededBytes, tmpDir } from './helpers';

afterAll(removeTmps);
const HOUR = 3600_000;

/** A checkpoint-like tree: small images, a 20 MiB random pages file, a 66 MiB one (hash list), nesting, an empty file, modes. */
async function snapshotDir(seed: string, edit?: (files: Record<string, Buffer>) => void): Promise<{ dir: string; id: string }> {
  const files: Record<string, Buffer> = {
    'inventory.img': seededBytes(300, `${seed}-inv`),
    'pages-1.img': seededBytes(20 * MiB, 'pages-1'),
    'pages-2.img': seededBytes(66 * MiB, 'pages-2'),
    'gpu/dev0/cuda.bin': seededBytes(700 * KiB, 'cuda'),
    'empty.img': Buffer.alloc(0),
  };
  edit?.(files);
  const dir = tmpDir(`snap-${seed}`);
  const id = await makeSnapshot(dir, { ...files, 'secret.img': [seededBytes(5000, 'secret'), 0o600] });
  return { dir, id };
}

/** A real store that records the order of its writes. */
function recording(store: ChunkStore, calls: string[]): ChunkStore {
  return Object.assign(Object.create(store) as ChunkStore, {
    put: (d: string, b: Buffer) => { calls.push(`put ${d}`); return store.put(d, b); },
    putIndex: (id: string, b: Buffer) => { calls.push(`putIndex ${id}`); return store.putIndex(id, b); },
  });
}

const parentOf = (dest: string) => fs.readdirSync(path.dirname(dest));

describe('pack and unpack', () => {
  it('round-trips a snapshot directory: same files, bytes, modes and id; the index is written last', async () => {
    const { dir, id } = await snapshotDir('rt');
    const store = await DiskChunkStore.open(tmpDir('store-rt'));
    const calls: string[] = [];
    const seen: Progress[] = [];
    const packed = await packSnapshot(dir, recording(store, calls), { onProgress: (p) => seen.push(p) });
    expect(packed.id).toBe(id);
    expect(packed.newBytes).toBeGreaterThan(85 * MiB); // everything is new: one repeated chunk at most
    expect(packed.totalBytes).toBe(listTree(dir).reduce((n, f) => n + (fs.statSync(path.join(dir, f)).isFile() ? fs.statSync(path.join(dir, f)).size : 0), 0));
    expect(calls.at(-1)).toBe(`putIndex ${id}`);
    expect(calls.filter((c) => c.startsWith('putIndex'))).toHaveLength(1);
    expect(seen.at(-1)).toEqual({ bytesDone: packed.totalBytes, bytesTotal: packed.totalBytes, newBytes: packed.newBytes });
    expect(packed.index.files.map((f) => f.path)).toContain(MANIFEST_FILE);

    const dest = path.join(tmpDir('dest-rt'), 'restored');
    const unpacked: Progress[] = [];
    const index = await unpackSnapshot(id, store, dest, { concurrency: 3, onProgress: (p) => unpacked.push(p) });
    expect(unpacked.at(-1)).toMatchObject({ bytesDone: packed.totalBytes, bytesTotal: packed.totalBytes });
    expect(index.id).toBe(id);
    expect(listTree(dest)).toEqual(listTree(dir));
    for (const f of listTree(dir).filter((n) => fs.statSync(path.join(dir, n)).isFile())) {
      expect(fs.readFileSync(path.join(dest, f)).equals(fs.readFileSync(path.join(dir, f))), f).toBe(true);
      expect(fs.statSync(path.join(dest, f)).mode & 0o7777, f).toBe(fs.statSync(path.join(dir, f)).mode & 0o7777);
    }
    const { manifest, id: again } = await checkManifestWithId(dest, null);
    expect(again).toBe(id);
    await verifyChecksums(dest, manifest);
    expect(parentOf(dest)).toEqual(['restored']);
  });

  it('packs the same index at any concurrency, and a second pack of the same snapshot stores nothing new', async () => {
    const { dir, id } = await snapshotDir('conc');
    const store = await DiskChunkStore.open(tmpDir('store-conc'));
    const one = await packSnapshot(dir, store, { concurrency: 1 });
    const many = await packSnapshot(dir, store, { concurrency: 16 });
    expect(many.newBytes).toBe(0);
    expect(many.index.files).toEqual(one.index.files);
    expect(await collect(store.listIndexes())).toEqual([id]);
  });

  it('dedups two snapshots that differ in a small region: the second stores a few chunks', async () => {
    const a = await snapshotDir('dedup-a');
    const b = await snapshotDir('dedup-b', (files) => {
      const p = Buffer.from(files['pages-2.img']);
      seededBytes(4 * KiB, 'edit').copy(p, 30 * MiB); // overwritten in place
      files['pages-2.img'] = Buffer.concat([p.subarray(0, 50 * MiB), Buffer.from('inserted'), p.subarray(50 * MiB)]);
    });
    const store = await DiskChunkStore.open(tmpDir('store-dedup'));
    const pa = await packSnapshot(a.dir, store);
    const pb = await packSnapshot(b.dir, store);
    const both = await storedBytes(store);
    expect(await storedBytes(store, [a.id])).toBe(pa.newBytes);
    expect(both).toBe(pa.newBytes + pb.newBytes);
    console.log(`dedup: snapshot A ${(pa.totalBytes / MiB).toFixed(1)} MiB, new ${(pa.newBytes / MiB).toFixed(1)} MiB; ` +
      `B (4 KiB overwritten, 8 bytes inserted) ${(pb.totalBytes / MiB).toFixed(1)} MiB, new ${(pb.newBytes / MiB).toFixed(2)} MiB; ` +
      `stored ${(both / MiB).toFixed(1)} MiB for ${((pa.totalBytes + pb.totalBytes) / MiB).toFixed(1)} MiB ` +
      `(dedup ratio ${((pa.totalBytes + pb.totalBytes) / both).toFixed(2)})`);
    expect(pb.newBytes).toBeLessThan(4 * 8 * MiB); // two edits: two chunks each at most, 8 MiB max each
    expect(pb.newBytes).toBeLessThan(pb.totalBytes * 0.15);
    const dest = path.join(tmpDir('dest-dedup'), 'b');
    await unpackSnapshot(b.id, store, dest);
    expect(fs.readFileSync(path.join(dest, 'pages-2.img')).equals(fs.readFileSync(path.join(b.dir, 'pages-2.img')))).toBe(true);
  });

  it('refuses a snapshot whose bytes no longer match its manifest; no index is written', async () => {
    const { dir } = await snapshotDir('bad');
    const f = path.join(dir, 'pages-1.img');
    const bytes = fs.readFileSync(f);
    bytes[12345] ^= 1;
    fs.writeFileSync(f, bytes); // same size: only the bytes tell
    const store = await DiskChunkStore.open(tmpDir('store-bad'));
    const err = await rejection(packSnapshot(dir, store));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toContain('pages-1.img');
    expect(await collect(store.listIndexes())).toEqual([]);
  });

  it('cancels on the signal (KYB_ERR_CANCELLED), writing no index', async () => {
    const { dir } = await snapshotDir('cancel');
    const store = await DiskChunkStore.open(tmpDir('store-cancel'));
    const ac = new AbortController();
    const err = await rejection(packSnapshot(dir, store, { signal: ac.signal, onProgress: () => ac.abort() }));
    expect(err.code).toBe('KYB_ERR_CANCELLED');
    expect(await collect(store.listIndexes())).toEqual([]);
  });

  for (const damage of ['corrupted', 'missing'] as const) {
    it(`leaves neither destDir nor a temporary directory when a chunk is ${damage}, and names the chunk`, async () => {
      const { dir, id } = await snapshotDir(`atomic-${damage}`);
      const storeDir = tmpDir(`store-${damage}`);
      const store = await DiskChunkStore.open(storeDir);
      const { index } = await packSnapshot(dir, store);
      const victim = index.files.find((f) => f.path === 'pages-2.img')?.chunks[5].digest as string;
      const file = path.join(storeDir, 'chunks', victim.slice(0, 2), victim);
      if (damage === 'missing') fs.unlinkSync(file);
      else fs.writeFileSync(file, Buffer.concat([fs.readFileSync(file).subarray(1), Buffer.from('x')]));
      const dest = path.join(tmpDir(`dest-${damage}`), 'restored');
      const err = await rejection(unpackSnapshot(id, store, dest));
      expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
      expect(err.message).toContain(victim);
      expect(err.message).toContain(storeDir);
      expect(fs.existsSync(dest)).toBe(false);
      expect(parentOf(dest)).toEqual([]);
    });
  }

  it('refuses an existing destDir and an unknown snapshot', async () => {
    const { dir, id } = await snapshotDir('exists');
    const store = await DiskChunkStore.open(tmpDir('store-exists'));
    await packSnapshot(dir, store);
    expect((await rejection(unpackSnapshot(id, store, dir))).code).toBe('KYB_ERR_ALREADY_EXISTS');
    const other = `sha256:${'0'.repeat(64)}`;
    expect((await rejection(unpackSnapshot(other, store, path.join(tmpDir('x'), 'y')))).code).toBe('KYB_ERR_NOT_FOUND');
  });
});

describe('gcChunks', () => {
  it('deletes only unreferenced chunks older than the grace period', async () => {
    const a = await snapshotDir('gc-a');
    const b = await snapshotDir('gc-b', (files) => { files['pages-1.img'] = seededBytes(20 * MiB, 'other pages'); });
    const store = await DiskChunkStore.open(tmpDir('store-gc'));
    await packSnapshot(a.dir, store);
    await packSnapshot(b.dir, store);
    const inB = new Set((await readIndex(store, b.id)).files.flatMap((f) => f.chunks.map((c) => c.digest)));
    const onlyA = (await readIndex(store, a.id)).files.flatMap((f) => f.chunks).filter((c) => !inB.has(c.digest));
    const onlyABytes = [...new Map(onlyA.map((c) => [c.digest, c.size])).values()].reduce((x, y) => x + y, 0);
    expect(onlyA.length).toBeGreaterThan(0);
    const before = (await collect(store.listChunks())).length;

    expect(await gcChunks(store)).toEqual({ deleted: 0, freedBytes: 0, kept: before });
    await store.deleteIndex(a.id);
    expect(await gcChunks(store), 'young chunks are kept').toEqual({ deleted: 0, freedBytes: 0, kept: before });
    const gc = await gcChunks(store, { now: Date.now() + 2 * HOUR });
    expect(gc).toEqual({ deleted: new Set(onlyA.map((c) => c.digest)).size, freedBytes: onlyABytes, kept: inB.size });
    expect((await collect(store.listChunks())).map((c) => c.digest).sort()).toEqual([...inB].sort());
    await unpackSnapshot(b.id, store, path.join(tmpDir('dest-gc'), 'b'));
  });

  it('never deletes a chunk a pack in progress here relies on, even one it found already stored', async () => {
    const a = await snapshotDir('gc-race');
    const store = await DiskChunkStore.open(tmpDir('store-race'));
    await packSnapshot(a.dir, store);
    await store.deleteIndex(a.id); // every chunk is now unreferenced and (at `now` below) old
    let gc: ReturnType<typeof gcChunks> | undefined;
    const packed = await packSnapshot(a.dir, store, {
      concurrency: 2,
      onProgress: () => { gc ??= gcChunks(store, { now: Date.now() + 2 * HOUR }); },
    });
    // gc ran alongside: it deleted the chunks the pack had not reached yet (the pack stored them again),
    // and none of those the pack had already found stored (pinned): the index is complete.
    const result = await (gc as ReturnType<typeof gcChunks>);
    expect(result.deleted).toBeGreaterThan(0);
    expect(packed.newBytes).toBeGreaterThan(0);
    expect(packed.newBytes).toBeLessThan(packed.totalBytes);
    for (const f of packed.index.files) for (const c of f.chunks) expect(await store.has(c.digest), `${f.path} ${c.digest}`).toBe(true);
    await unpackSnapshot(a.id, store, path.join(tmpDir('dest-race'), 'a'));
  });

  it('stops before deleting anything when an index cannot be read', async () => {
    const a = await snapshotDir('gc-badindex');
    const store = await DiskChunkStore.open(tmpDir('store-badindex'));
    await packSnapshot(a.dir, store);
    await store.putIndex(`sha256:${'1'.repeat(64)}`, Buffer.from('{"version":1}'));
    const err = await rejection(gcChunks(store, { now: Date.now() + 2 * HOUR }));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toContain('1'.repeat(64));
    await unpackSnapshot(a.id, store, path.join(tmpDir('dest-badindex'), 'a'));
  });
});

describe('index format', () => {
  it('reads back what it writes and refuses anything else', async () => {
    const { dir, id } = await snapshotDir('format');
    const { index } = await packSnapshot(dir, await DiskChunkStore.open(tmpDir('store-format')));
    expect(parseIndex(encodeIndex(index), 'test', id)).toEqual(index);
    const bad = (mutate: (v: Record<string, any>) => void) => {
      const v = JSON.parse(encodeIndex(index).toString());
      mutate(v);
      return () => parseIndex(Buffer.from(JSON.stringify(v)), 'test', id);
    };
    expect(bad((v) => { v.extra = 1; })).toThrow(/unknown key "extra"/);
    expect(bad((v) => { v.version = 2; })).toThrow(/version 2/);
    expect(bad((v) => { v.files[0].path = '../escape'; })).toThrow(/bad path/);
    expect(bad((v) => { v.files[0].chunks = []; v.files[0].size = 1; })).toThrow(/chunks hold 0 bytes/);
    expect(bad((v) => { v.totalBytes += 1; })).toThrow(/totalBytes/);
    expect(bad((v) => { v.manifest = 'inventory.img'; })).toThrow(/expected "kybernate-manifest.json"/);
    expect(bad((v) => { v.files.find((f: { path: string }) => f.path === MANIFEST_FILE).sha256 = '3'.repeat(64); })).toThrow(/not the id/);
    expect(bad((v) => { v.files.push(v.files[0]); })).toThrow(/listed twice/);
    expect(() => parseIndex(encodeIndex(index), 'test', `sha256:${'2'.repeat(64)}`)).toThrow(/it is the index of/);
    expect(() => parseIndex(Buffer.from('not json'), 'test')).toThrow(/not JSON/);
  });
});
