// Packing a snapshot directory into a chunk store (and back), garbage collection of chunks, and the bytes
// a set of snapshots really occupies.
//
// Invariants:
// - pack writes the index last, after every chunk it lists is stored: a visible index is complete.
// - pack stores only bytes it checked: every file's sha256 (manifest form) is computed over the very bytes
//   chunked, and the manifest's own sha256 must be the snapshot id. A mismatch stores no index.
// - unpack builds the directory under a temporary name beside destDir and renames it last, so destDir
//   appears complete (every file checked against the manifest, the manifest written last, all fsynced)
//   or not at all; a failure removes the temporary directory. A killed unpack leaves
//   `.<name>.unpack-<pid>-<hex>` beside destDir for its caller to remove (UNPACK_TEMP).
// - gc and pack of one store in one process never race (see Guard): a chunk a pack has seen is pinned until
//   its index is visible, and pins are checked under gc's exclusion. Packs in other processes are covered
//   only by graceMs (their new chunks are young); a chunk they find already stored is not: run gc where
//   the packs run (the agent).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KybernateError } from '../errors';
import { MANIFEST_FILE, checkManifestWithId } from '../snapshot/manifest';
import { manifestProblem, type SnapshotManifest } from '../snapshot/schema';
import { chunkFile, type ChunkerOptions } from './chunker';
import { chunkInvalid, fsError, idHex, syncDir, type ChunkStore } from './chunk-store';
import { ManifestDigest, encodeIndex, parseIndex, type IndexFile, type SnapshotIndex } from './index-format';

export interface Progress { bytesDone: number; bytesTotal: number; newBytes: number }
export interface TransferOptions {
  /** Chunks in flight at once (default 8). */
  concurrency?: number;
  onProgress?(p: Progress): void;
  signal?: AbortSignal;
  chunker?: ChunkerOptions;
}

/** The name of an unpack's temporary directory (beside its destination). */
export const UNPACK_TEMP = /^\..+\.unpack-\d+-[0-9a-f]{8}$/;

const invalid = (msg: string) => new KybernateError('KYB_ERR_CHECKPOINT_INVALID', msg);
const cancelled = (what: string) => new KybernateError('KYB_ERR_CANCELLED', `${what}: cancelled`);

/** Per store, in this process: chunks pinned by packs in progress, and the gc running now. */
interface Guard { pins: Map<string, number>; gc?: Promise<unknown> }
const guards = new WeakMap<ChunkStore, Guard>();
function guardOf(store: ChunkStore): Guard {
  let g = guards.get(store);
  if (!g) guards.set(store, (g = { pins: new Map() }));
  return g;
}
async function gcIdle(g: Guard): Promise<void> {
  while (g.gc) await g.gc.catch(() => undefined);
}

/** At most `limit` tasks at once. The first failure is kept and makes every later acquire throw it. */
class Slots {
  private free: number;
  private readonly waiters: Array<() => void> = [];
  private readonly running = new Set<Promise<void>>();
  private error: { err: unknown } | undefined;
  constructor(limit: number) { this.free = Math.max(1, Math.floor(limit) || 1); }
  async acquire(): Promise<void> {
    this.check();
    if (this.free > 0) this.free--; else await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.check();
  }
  release(): void {
    const w = this.waiters.shift();
    if (w) w(); else this.free++;
  }
  /** Runs `task`, which releases its slot(s) itself; a failure is kept (see above). */
  track(task: Promise<void>): void {
    const p = task.catch((err) => {
      this.error ??= { err };
      for (const w of this.waiters.splice(0)) w();
    }).finally(() => this.running.delete(p));
    this.running.add(p);
  }
  /** Every task settled; throws the first failure. */
  async drain(): Promise<void> {
    await this.settle();
    this.check();
  }
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
  }
  private check(): void {
    if (this.error) throw this.error.err;
  }
}

/** Packs the snapshot directory `dir` into `store`; the index is written last. */
export async function packSnapshot(dir: string, store: ChunkStore, opts: TransferOptions = {}):
  Promise<{ id: string; index: SnapshotIndex; totalBytes: number; newBytes: number }> {
  const { manifest, id } = await checkManifestWithId(dir, null);
  const names = [...manifest.files.map((f) => f.name), MANIFEST_FILE];
  const expected = new Map(manifest.files.map((f) => [f.name, f.sha256]));
  expected.set(MANIFEST_FILE, idHex(store.name, id));
  const sizes = new Map(manifest.files.map((f) => [f.name, f.size]));
  const bytesTotal = manifest.files.reduce((n, f) => n + f.size, 0) + (await fs.promises.stat(path.join(dir, MANIFEST_FILE))).size;

  const g = guardOf(store);
  const pinned = new Set<string>();
  const slots = new Slots(opts.concurrency ?? 8);
  const progress: Progress = { bytesDone: 0, bytesTotal, newBytes: 0 };
  const files: IndexFile[] = [];
  try {
    for (const name of names) {
      const file = path.join(dir, name);
      const mode = (await fs.promises.stat(file)).mode & 0o7777;
      const hash = new ManifestDigest();
      const entry: IndexFile = { path: name, size: 0, mode, sha256: expected.get(name) as string, chunks: [] };
      for await (const c of chunkFile(file, opts.chunker)) {
        if (opts.signal?.aborted) throw cancelled(`pack of ${dir}`);
        hash.update(c.data);
        entry.chunks.push({ digest: c.digest, size: c.size });
        entry.size += c.size;
        if (pinned.has(c.digest)) { // twice in this snapshot: stored (or being stored) once
          progress.bytesDone += c.size;
          opts.onProgress?.({ ...progress });
          continue;
        }
        await slots.acquire(); // throws the first upload's failure
        // Pinned before has(): a gc that starts later keeps it; one running now is waited out first.
        pinned.add(c.digest);
        g.pins.set(c.digest, (g.pins.get(c.digest) ?? 0) + 1);
        slots.track((async () => {
          await gcIdle(g);
          if (!(await store.has(c.digest))) {
            await store.put(c.digest, c.data);
            progress.newBytes += c.size;
          }
          progress.bytesDone += c.size;
          opts.onProgress?.({ ...progress });
          slots.release();
        })());
      }
      const size = name === MANIFEST_FILE ? entry.size : sizes.get(name);
      const actual = hash.digest();
      if (entry.size !== size || actual !== entry.sha256) {
        throw invalid(`checkpoint ${dir}: ${name} does not match its manifest (${entry.size} bytes with sha256 ${actual}, ` +
          `the manifest says ${size} bytes with sha256 ${entry.sha256}); changed or corrupt, not packed`);
      }
      files.push(entry);
    }
    await slots.drain();
    const index: SnapshotIndex = { version: 1, id, manifest: MANIFEST_FILE, files, totalBytes: bytesTotal, createdAt: new Date().toISOString() };
    const data = encodeIndex(index);
    await gcIdle(g);
    await store.putIndex(id, data);
    // A gc that started while the index was written may not have listed it: it keeps the pins until done.
    await gcIdle(g);
    return { id, index, totalBytes: bytesTotal, newBytes: progress.newBytes };
  } catch (err) {
    throw fsError(`checkpoint ${dir}`, 'cannot pack it', err);
  } finally {
    await slots.settle();
    for (const d of pinned) {
      const n = (g.pins.get(d) ?? 1) - 1;
      if (n > 0) g.pins.set(d, n); else g.pins.delete(d);
    }
  }
}

/** The index of `id` in `store`, parsed; KYB_ERR_NOT_FOUND when the store has none. */
export async function readIndex(store: ChunkStore, id: string): Promise<SnapshotIndex> {
  const where = `${store.kind} store ${store.name}`;
  idHex(store.name, id);
  const raw = await store.getIndex(id);
  if (!raw) throw new KybernateError('KYB_ERR_NOT_FOUND', `snapshot ${id}: not found in ${where}`);
  return parseIndex(raw, where, id);
}

/** Unpacks snapshot `id` from `store` into destDir, which must not exist; destDir appears complete or not at all. */
export async function unpackSnapshot(id: string, store: ChunkStore, destDir: string, opts: TransferOptions = {}): Promise<SnapshotIndex> {
  const index = await readIndex(store, id);
  const dest = path.resolve(destDir);
  if (await fs.promises.lstat(dest).then(() => true, () => false)) throw new KybernateError('KYB_ERR_ALREADY_EXISTS', `unpack of ${id}: ${dest}: already exists`);
  const parent = path.dirname(dest);
  const tmp = path.join(parent, `.${path.basename(dest)}.unpack-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  try {
    await fs.promises.mkdir(parent, { recursive: true });
    await fs.promises.mkdir(tmp, { mode: 0o755 });
    // The manifest first, in memory: checked against the id, it says what every other file must hash to.
    const mEntry = index.files.find((f) => f.path === index.manifest) as IndexFile;
    const parts: Buffer[] = [];
    for (const c of mEntry.chunks) parts.push(await store.get(c.digest));
    const manifestBytes = Buffer.concat(parts);
    if (`sha256:${crypto.createHash('sha256').update(manifestBytes).digest('hex')}` !== id) {
      throw invalid(`the index of ${id} in ${store.kind} store ${store.name}: the chunks it lists for ${mEntry.path} do not make up the manifest`);
    }
    const manifest = parseManifest(manifestBytes, id);
    const files = index.files.filter((f) => f !== mEntry);
    const listed = new Map(manifest.files.map((f) => [f.name, f]));
    const mismatch = files.find((f) => listed.get(f.path)?.size !== f.size || listed.get(f.path)?.sha256 !== f.sha256);
    if (mismatch || files.length !== listed.size) {
      throw invalid(`the index of ${id} in ${store.kind} store ${store.name} does not match its manifest` +
        `${mismatch ? ` (${mismatch.path})` : ' (files missing)'}`);
    }

    const progress = { bytesDone: mEntry.size, bytesTotal: index.totalBytes, newBytes: mEntry.size };
    await restoreFiles(store, tmp, files, progress, { ...opts, what: `unpack of ${id}` });
    const mfile = path.join(tmp, index.manifest);
    await fs.promises.writeFile(mfile, manifestBytes, { mode: mEntry.mode, flag: 'wx' });
    await fs.promises.chmod(mfile, mEntry.mode);
    const fh = await fs.promises.open(mfile, 'r');
    await fh.sync().finally(() => fh.close());
    await syncDir(tmp);
    await fs.promises.rename(tmp, dest);
    await syncDir(parent);
    return index;
  } catch (err) {
    await fs.promises.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw fsError(parent, `unpack of ${id}`, err);
  }
}

/**
 * Writes `files` under `root` from their chunks: fetched `concurrency` at a time, written at their
 * offsets, hashed in file order (a chunk's slot is freed once hashed, which bounds the chunks held).
 * Every file is checked against its sha256 and fsynced, and every directory fsynced, before this resolves.
 */
async function restoreFiles(store: ChunkStore, root: string, files: IndexFile[], progress: Progress,
  opts: TransferOptions & { what: string }): Promise<void> {
  // Every ancestor, parents first: each is created, and later fsynced (children first).
  const dirs = [...new Set(files.flatMap((f) => f.path.split('/').slice(0, -1).map((_, i, segs) => segs.slice(0, i + 1).join('/'))))].sort();
  for (const d of dirs) await fs.promises.mkdir(path.join(root, d), { mode: 0o755 });
  const slots = new Slots(opts.concurrency ?? 8);
  const open = new Set<fs.promises.FileHandle>();
  try {
    for (const f of files) {
      const fh = await fs.promises.open(path.join(root, f.path), 'wx', f.mode);
      open.add(fh);
      await fh.chmod(f.mode); // exactly, whatever the umask
      const hash = new ManifestDigest();
      const ready = new Map<number, Buffer>();
      let next = 0;
      const finish = async () => {
        const actual = hash.digest();
        if (actual !== f.sha256) throw invalid(`${opts.what}: ${f.path} built from its chunks has sha256 ${actual}, the manifest says ${f.sha256}`);
        await fh.sync();
        open.delete(fh);
        await fh.close();
      };
      if (f.chunks.length === 0) await finish();
      let offset = 0;
      for (const [i, c] of f.chunks.entries()) {
        if (opts.signal?.aborted) throw cancelled(opts.what);
        await slots.acquire();
        const at = offset;
        offset += c.size;
        slots.track((async () => {
          const data = await store.get(c.digest);
          if (data.length !== c.size) throw chunkInvalid(store, c.digest, `${data.length} bytes, the index of ${f.path} says ${c.size}`);
          for (let done = 0; done < data.length;) done += (await fh.write(data, done, data.length - done, at + done)).bytesWritten;
          progress.bytesDone += c.size;
          progress.newBytes += c.size;
          opts.onProgress?.({ ...progress });
          for (ready.set(i, data); ready.has(next); next++) {
            hash.update(ready.get(next) as Buffer);
            ready.delete(next);
            slots.release();
          }
          if (next === f.chunks.length) await finish();
        })());
      }
    }
    await slots.drain();
    for (const d of dirs.reverse()) await syncDir(path.join(root, d));
  } finally {
    await slots.settle();
    await Promise.all([...open].map((fh) => fh.close().catch(() => undefined)));
  }
}

function parseManifest(bytes: Buffer, id: string): SnapshotManifest {
  let m: unknown;
  try {
    m = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw invalid(`the manifest of ${id}: not JSON: ${(err as Error).message}`);
  }
  const problem = manifestProblem(m);
  if (problem) throw invalid(`the manifest of ${id}: ${problem}`);
  return m as SnapshotManifest;
}

/**
 * Deletes the chunks no index lists, except those younger than graceMs (default 1 h: chunks of a pack in
 * progress elsewhere) and those pinned by a pack in progress here. An index that cannot be read stops gc
 * before anything is deleted: the chunks it lists cannot be told apart.
 */
export async function gcChunks(store: ChunkStore, opts: { graceMs?: number; now?: number } = {}):
  Promise<{ deleted: number; freedBytes: number; kept: number }> {
  const g = guardOf(store);
  // Inline, not gcIdle: nothing may run between seeing no gc and setting this one (two gcs would race).
  while (g.gc) await g.gc.catch(() => undefined);
  const run = (async () => {
    const cutoff = (opts.now ?? Date.now()) - (opts.graceMs ?? 60 * 60 * 1000);
    const candidates: Array<{ digest: string; size: number }> = [];
    let kept = 0;
    for await (const c of store.listChunks()) {
      if (c.mtimeMs < cutoff) candidates.push(c); else kept++;
    }
    const referenced = new Set<string>();
    for await (const id of store.listIndexes()) {
      const index = await readIndex(store, id).catch((err) => {
        // Deleted since it was listed: it references nothing any more.
        if (KybernateError.is(err) && err.code === 'KYB_ERR_NOT_FOUND') return undefined;
        throw err;
      });
      for (const f of index?.files ?? []) for (const c of f.chunks) referenced.add(c.digest);
    }
    let deleted = 0;
    let freedBytes = 0;
    for (const c of candidates) {
      if (referenced.has(c.digest) || g.pins.has(c.digest)) {
        kept++;
        continue;
      }
      await store.delete(c.digest);
      deleted++;
      freedBytes += c.size;
    }
    return { deleted, freedBytes, kept };
  })();
  g.gc = run;
  try {
    return await run;
  } finally {
    if (g.gc === run) g.gc = undefined;
  }
}

/** The bytes of the distinct chunks that the snapshots `ids` (default: every index in the store) reference. */
export async function storedBytes(store: ChunkStore, ids?: readonly string[]): Promise<number> {
  const sizes = new Map<string, number>();
  const list = ids ? [...ids] : [];
  if (!ids) for await (const id of store.listIndexes()) list.push(id);
  for (const id of list) {
    const index = await readIndex(store, id);
    for (const f of index.files) for (const c of f.chunks) sizes.set(c.digest, c.size);
  }
  let total = 0;
  for (const n of sizes.values()) total += n;
  return total;
}
