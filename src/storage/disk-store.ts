// The chunk store of the disk tier: a local directory.
//
//   <dir>/chunks/<first 2 hex>/<64 hex>    one file per chunk, named by the sha256 of its bytes
//   <dir>/indexes/<64 hex>.json            one snapshot index per snapshot id (sha256:<64 hex>)
//
// Invariants:
// - Every object is written to a temporary name in its final directory (`.<name>.<pid>.<random>.tmp`),
//   fsynced, renamed over its name and the directory fsynced: a name is visible only with all its bytes,
//   and stays visible across a crash once put/putIndex resolved. A failed write removes its temporary file.
// - Temporary files of a writer that died (SIGKILL, crash, power loss) are removed by cleanOrphans, which
//   open() runs. A temporary file belongs to a live writer when its pid is running and it is not this
//   process's own pid (then only a write in flight here owns it: a restarted agent in a container gets its
//   old pid back). One store directory is therefore used from one pid namespace (one node's agent and CLI).
// - Names come only from isDigest/idHex (hex digits): nothing a caller passes reaches a path otherwise.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KybernateError } from '../errors';
import { checkDigest, chunkInvalid, fsError, idHex, isDigest, sha256Hex, syncDir, type ChunkStore } from './chunk-store';

const TEMP = /^\.(.+)\.(\d+)\.[0-9a-f]{8}\.tmp$/;
const INDEX_FILE = /^([0-9a-f]{64})\.json$/;
/** A temporary file older than this is an orphan even if its pid runs (another process got that pid). */
const ORPHAN_AGE_MS = 60 * 60 * 1000;
/** Temporary files written by this process right now (see the invariants: own-pid temporaries). */
const liveTemps = new Set<string>();

const FANOUT = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

const errno = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code;

function pidRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errno(err) === 'EPERM';
  }
}

export class DiskChunkStore implements ChunkStore {
  readonly kind = 'disk' as const;
  readonly name: string;
  private readonly chunksDir: string;
  private readonly indexesDir: string;

  private constructor(readonly dir: string) {
    this.name = dir;
    this.chunksDir = path.join(dir, 'chunks');
    this.indexesDir = path.join(dir, 'indexes');
  }

  /** The store at `dir`, created if needed (every fan-out directory up front), with its orphans removed. */
  static async open(dir: string): Promise<DiskChunkStore> {
    const store = new DiskChunkStore(path.resolve(dir));
    try {
      await fs.promises.mkdir(store.indexesDir, { recursive: true });
      await fs.promises.mkdir(store.chunksDir, { recursive: true });
      const have = new Set(await fs.promises.readdir(store.chunksDir));
      const missing = FANOUT.filter((f) => !have.has(f));
      await Promise.all(missing.map((f) => fs.promises.mkdir(path.join(store.chunksDir, f), { recursive: true })));
      if (missing.length > 0) await Promise.all([syncDir(store.chunksDir), syncDir(store.dir)]);
    } catch (err) {
      throw store.ioError(err, 'cannot create its directories');
    }
    await store.cleanOrphans();
    return store;
  }

  /** Removes the temporary files of writers that died; returns how many. */
  async cleanOrphans(): Promise<number> {
    let removed = 0;
    const now = Date.now();
    for (const dir of [this.indexesDir, ...FANOUT.map((f) => path.join(this.chunksDir, f))]) {
      const names = await fs.promises.readdir(dir).catch((err) => {
        if (errno(err) === 'ENOENT') return [] as string[];
        throw this.ioError(err, `cannot list ${dir}`);
      });
      for (const n of names) {
        const m = TEMP.exec(n);
        if (!m) continue;
        const file = path.join(dir, n);
        const pid = Number(m[2]);
        const live = pid === process.pid ? liveTemps.has(file) : pidRunning(pid);
        const st = live ? await fs.promises.stat(file).catch(() => undefined) : undefined;
        if (live && st && now - st.mtimeMs < ORPHAN_AGE_MS) continue;
        await fs.promises.unlink(file).then(() => removed++, (err) => {
          if (errno(err) !== 'ENOENT') throw this.ioError(err, `cannot remove the orphan ${file}`);
        });
      }
    }
    return removed;
  }

  private chunkPath(digest: string): string {
    checkDigest(this.name, digest);
    return path.join(this.chunksDir, digest.slice(0, 2), digest);
  }

  private indexPath(id: string): string {
    return path.join(this.indexesDir, `${idHex(this.name, id)}.json`);
  }

  async has(digest: string): Promise<boolean> {
    const st = await fs.promises.stat(this.chunkPath(digest)).catch((err) => {
      if (errno(err) === 'ENOENT') return undefined;
      throw this.ioError(err, `cannot look up chunk ${digest}`);
    });
    return st?.isFile() ?? false;
  }

  async put(digest: string, data: Buffer): Promise<void> {
    const file = this.chunkPath(digest);
    // Idempotent: a chunk already here with its size stays (get() checks its bytes on every read).
    const st = await fs.promises.stat(file).catch(() => undefined);
    if (st?.isFile() && st.size === data.length) return;
    const actual = await sha256Hex(data);
    if (actual !== digest) throw chunkInvalid(this, digest, `refused: the bytes given hash to ${actual}`);
    await this.writeAtomic(file, data, `chunk ${digest}`);
  }

  async get(digest: string): Promise<Buffer> {
    const data = await fs.promises.readFile(this.chunkPath(digest)).catch((err) => {
      if (errno(err) === 'ENOENT') throw chunkInvalid(this, digest, 'missing');
      throw this.ioError(err, `cannot read chunk ${digest}`);
    });
    const actual = await sha256Hex(data);
    if (actual !== digest) throw chunkInvalid(this, digest, `corrupt: its ${data.length} bytes hash to ${actual}`);
    return data;
  }

  async delete(digest: string): Promise<void> {
    // No directory sync: a chunk that comes back after a crash is unreferenced, and the next gc takes it.
    await fs.promises.unlink(this.chunkPath(digest)).catch((err) => {
      if (errno(err) !== 'ENOENT') throw this.ioError(err, `cannot delete chunk ${digest}`);
    });
  }

  async *listChunks(): AsyncIterable<{ digest: string; size: number; mtimeMs: number }> {
    for (const f of FANOUT) {
      const dir = path.join(this.chunksDir, f);
      const names = await fs.promises.readdir(dir).catch((err) => {
        if (errno(err) === 'ENOENT') return [] as string[];
        throw this.ioError(err, `cannot list ${dir}`);
      });
      for (const digest of names) {
        if (!isDigest(digest) || !digest.startsWith(f)) continue;
        const st = await fs.promises.stat(path.join(dir, digest)).catch(() => undefined); // deleted meanwhile
        if (st?.isFile()) yield { digest, size: st.size, mtimeMs: st.mtimeMs };
      }
    }
  }

  async putIndex(id: string, data: Buffer): Promise<void> {
    await this.writeAtomic(this.indexPath(id), data, `the index of ${id}`);
  }

  async getIndex(id: string): Promise<Buffer | undefined> {
    return fs.promises.readFile(this.indexPath(id)).catch((err) => {
      if (errno(err) === 'ENOENT') return undefined;
      throw this.ioError(err, `cannot read the index of ${id}`);
    });
  }

  async deleteIndex(id: string): Promise<void> {
    // Synced: gc may delete this index's chunks next, and the index must not come back after a crash.
    await fs.promises.unlink(this.indexPath(id)).catch((err) => {
      if (errno(err) !== 'ENOENT') throw this.ioError(err, `cannot delete the index of ${id}`);
    });
    await syncDir(this.indexesDir).catch((err) => {
      throw this.ioError(err, `cannot sync ${this.indexesDir}`);
    });
  }

  async *listIndexes(): AsyncIterable<string> {
    const names = await fs.promises.readdir(this.indexesDir).catch((err) => {
      throw this.ioError(err, `cannot list ${this.indexesDir}`);
    });
    for (const n of names.sort()) {
      const m = INDEX_FILE.exec(n);
      if (m) yield `sha256:${m[1]}`;
    }
  }

  /** Temporary name, write, fsync, rename, fsync the directory; the temporary file is removed on failure. */
  private async writeAtomic(file: string, data: Buffer, what: string): Promise<void> {
    const dir = path.dirname(file);
    const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
    liveTemps.add(tmp);
    try {
      const fh = await fs.promises.open(tmp, 'wx', 0o644);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.promises.rename(tmp, file);
      await syncDir(dir);
    } catch (err) {
      await fs.promises.unlink(tmp).catch(() => undefined);
      throw this.ioError(err, `cannot write ${what} (${data.length} bytes)`);
    } finally {
      liveTemps.delete(tmp);
    }
  }

  private ioError(err: unknown, what: string): KybernateError {
    return fsError(`disk store ${this.dir}`, what, err);
  }
}
