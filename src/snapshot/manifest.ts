// The manifest of a container checkpoint: what was dumped, by which tools, for which GPUs, and the size and
// SHA-256 of every file in the checkpoint directory.
//
// Invariants:
// - The manifest is written last, atomically, after every image file is complete. A directory without
//   a manifest, or whose files differ from it, is never restored ("half-written images").
// - Verification relies only on file names, sizes and contents: the directory travels through containerd's
//   content store as a tar, which keeps neither mtimes nor owners reliably.
// - Files are hashed in chunks of CHUNK_BYTES (64 MiB) on a pool of threads (hash.ts). A file of at most one
//   chunk is recorded with its plain sha256. A larger file is recorded as a hash list: `chunks` holds the
//   sha256 of each 64 MiB chunk (the last one may be shorter) and `sha256` is the sha256 of the chunk
//   digests concatenated as raw 32-byte values. Each chunk is then checkable on its own, so restore
//   verifies a 4.5 GB pages-*.img on every core at once, and `sha256` still pins the whole list.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KybernateError } from '../errors';
import { CHUNK_BYTES, hashRanges, type Range } from './hash';
import { compareVersions, majorOf } from '../host/versions';
import {
  INCOMPLETE_FILE, MANIFEST_FILE, MANIFEST_TMP, MANIFEST_VERSION, MAX_MANIFEST_BYTES, chunkCount, hashListDigest, manifestProblem,
  type GpuInfo, type ManifestFile, type ManifestInput, type SnapshotManifest,
} from './schema';

export { CHUNK_BYTES } from './hash';
export {
  INCOMPLETE_FILE, MANIFEST_FILE, hashListDigest,
  type ContainerManifest, type ContainerManifestInput, type GpuInfo, type ManifestFile, type ManifestInput, type ManifestStep, type ProcessManifest, type ProcessManifestInput, type SnapshotManifest,
} from './schema';

/** What this node offers a restore. */
export interface Expectations {
  /** This node's CRIU; undefined skips the check (the restore itself then fails without CRIU). */
  criuVersion?: string;
  /** This node's CUDA driver, in the form the checkpointing node recorded; undefined: no driver here. */
  driverVersion?: string;
  /** This node's GPUs available to the container; undefined: none. */
  gpus?: GpuInfo[];
}

const invalid = (msg: string) => new KybernateError('KYB_ERR_CHECKPOINT_INVALID', msg);
const incompatible = (msg: string) => new KybernateError('KYB_ERR_CHECKPOINT_INCOMPATIBLE', msg);

/** 'sha256:' + hex of <bundle>/config.json. */
export function specDigest(bundle: string): string {
  const bytes = fs.readFileSync(path.join(bundle, 'config.json'));
  return `sha256:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
}

/**
 * Hashes every regular file under `dir` (recursively; a symlink, socket, device or FIFO is an error, since
 * it cannot be verified by content) and writes the manifest last, atomically.
 */
/**
 * `durable`: every file and directory is fsync'd before the manifest names them, for a snapshot that is
 * all that is left of its workload (--exit). A snapshot of a workload that runs on needs no more than
 * the manifest's own sync: a file that did not reach the disk fails its checksum at restore.
 */
export async function writeManifest(dir: string, input: ManifestInput, opts: { durable?: boolean } = {}): Promise<SnapshotManifest> {
  return (await writeManifestWithId(dir, input, opts)).manifest;
}

/** writeManifest, with the snapshot's identity (snapshotId of the bytes written). */
export async function writeManifestWithId(dir: string, input: ManifestInput, opts: { durable?: boolean } = {}):
  Promise<{ manifest: SnapshotManifest; id: string }> {
  // Field by field, so that nothing else a caller's object carries (a `files` or `version` of an old
  // manifest, say) reaches the file.
  const common = {
    version: MANIFEST_VERSION, createdAt: new Date().toISOString(),
    versions: input.versions, gpus: input.gpus, cuda: input.cuda, options: input.options, steps: input.steps,
  } as const;
  const head = input.kind === 'process'
    ? { ...common, kind: 'process' as const, process: input.process }
    : { ...common, kind: 'container' as const, container: input.container, spec: input.spec };
  const inputProblem = manifestProblem({ ...head, files: [] });
  if (inputProblem) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `manifest for ${dir}: ${inputProblem}`);
  const st = await fs.promises.stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `checkpoint ${dir}: not a directory`);

  const failed = (what: string) => (err: unknown): never => {
    throw new KybernateError('KYB_ERR_CHECKPOINT_FAILED', `checkpoint ${dir}: ${what}: ${(err as Error).message}`, { cause: err });
  };
  const entries = (await walk(dir).catch(failed('cannot list it')))
    .filter((e) => e.name !== MANIFEST_FILE && e.name !== MANIFEST_TMP && e.name !== INCOMPLETE_FILE);
  const odd = entries.find((e) => e.type !== 'file' && e.type !== 'dir');
  if (odd) {
    throw new KybernateError('KYB_ERR_CHECKPOINT_FAILED',
      `checkpoint ${dir}: ${odd.name} is a ${odd.type}; a checkpoint may hold only regular files and directories`);
  }
  const regular = entries.filter((e) => e.type === 'file').sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const ranges: Range[] = [];
  const firstRange: number[] = [];
  for (const f of regular) {
    firstRange.push(ranges.length);
    ranges.push(...fileRanges(path.join(dir, f.name), f.size));
  }
  const digests = await hashRanges(ranges).catch(failed('hashing failed'));
  const files = regular.map((f, i): ManifestFile => {
    if (f.size <= CHUNK_BYTES) return { name: f.name, size: f.size, sha256: digests[firstRange[i]] };
    const chunks = digests.slice(firstRange[i], firstRange[i] + chunkCount(f.size));
    return { name: f.name, size: f.size, sha256: hashListDigest(chunks), chunks };
  });

  // The manifest vouches for the files: they reach the disk before it does.
  if (opts.durable) await syncAll(dir, entries).catch(failed('cannot sync it to disk'));
  const manifest: SnapshotManifest = { ...head, files };
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  await writeAtomic(dir, text).catch(failed(`cannot write ${MANIFEST_FILE}`));
  return { manifest, id: snapshotId(text) };
}

/** Reads and validates the manifest of `dir` (schema only; the files are not looked at). */
export async function readManifest(dir: string): Promise<SnapshotManifest> {
  return (await readManifestWithId(dir)).manifest;
}

/** The identity of a snapshot: 'sha256:' + the digest of its manifest's bytes (which pin every file's). */
export function snapshotId(manifestText: string | Buffer): string {
  return `sha256:${crypto.createHash('sha256').update(manifestText).digest('hex')}`;
}

/** readManifest, with the snapshot's identity. */
export async function readManifestWithId(dir: string): Promise<{ manifest: SnapshotManifest; id: string }> {
  const st = await fs.promises.stat(dir).catch(() => undefined);
  if (!st) throw invalid(`checkpoint ${dir}: not found`);
  if (!st.isDirectory()) throw invalid(`checkpoint ${dir}: not a directory`);
  const marker = await fs.promises.readFile(path.join(dir, INCOMPLETE_FILE), 'utf8').catch(() => undefined);
  if (marker !== undefined) {
    throw invalid(`checkpoint ${dir} is incomplete: the checkpoint that wrote it failed or was cut short (${incompleteWhy(marker)}); take a new checkpoint`);
  }
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    const mst = await fs.promises.stat(file);
    if (!mst.isFile()) throw invalid(`checkpoint ${dir}: ${MANIFEST_FILE} is not a regular file`);
    if (mst.size > MAX_MANIFEST_BYTES) throw invalid(`checkpoint ${dir}: ${MANIFEST_FILE} is ${mst.size} bytes, too big to be one`);
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw invalid(`checkpoint ${dir} has no ${MANIFEST_FILE}: the checkpoint is incomplete or was not made by kybernate`);
    }
    if (KybernateError.is(err)) throw err;
    throw invalid(`checkpoint ${dir}: cannot read ${MANIFEST_FILE}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw invalid(`checkpoint ${dir}: ${MANIFEST_FILE} is not valid JSON (truncated?): ${(err as Error).message}`);
  }
  const problem = manifestProblem(parsed);
  if (problem) throw invalid(`checkpoint ${dir}: invalid ${MANIFEST_FILE}: ${problem}`);
  return { manifest: parsed as SnapshotManifest, id: snapshotId(text) };
}

/**
 * Checks that `dir` holds exactly the checkpoint its manifest describes (every listed file present with its
 * size and content; no unlisted image file) and that this node can restore it. Extra files that are not
 * images are ignored. Throws KYB_ERR_CHECKPOINT_INVALID or KYB_ERR_CHECKPOINT_INCOMPATIBLE.
 */
export async function verifyManifest(dir: string, expect: Expectations): Promise<SnapshotManifest> {
  const m = await checkManifest(dir, expect);
  await verifyChecksums(dir, m);
  return m;
}

/**
 * The cheap half of verifyManifest: the manifest, every file's presence and size, and compatibility
 * with this node. What it lets through may still be corrupt: verifyChecksums reads every byte.
 */
export async function checkManifest(dir: string, expect: Expectations): Promise<SnapshotManifest> {
  return (await checkManifestWithId(dir, expect)).manifest;
}

/**
 * checkManifest, with the snapshot's identity (of the manifest it checked). `expect` null: complete, on
 * any node (an index listing snapshots); compatibility is then the restore's to check.
 */
export async function checkManifestWithId(dir: string, expect: Expectations | null): Promise<{ manifest: SnapshotManifest; id: string }> {
  const { manifest: m, id } = await readManifestWithId(dir);

  const entries = await walk(dir).catch((err: Error) => {
    throw invalid(`checkpoint ${dir}: cannot list it: ${err.message}`);
  });
  const found = new Map(entries.map((e) => [e.name, e]));
  for (const f of m.files) {
    const e = found.get(f.name);
    if (!e) throw invalid(`checkpoint ${dir}: ${f.name} is listed in the manifest but missing`);
    if (e.type !== 'file') throw invalid(`checkpoint ${dir}: ${f.name} should be a regular file, found a ${e.type}`);
    if (e.size < f.size) {
      throw invalid(`checkpoint ${dir}: ${f.name} is truncated: the manifest says ${f.size} bytes, the file has ${e.size}`);
    }
    if (e.size !== f.size) {
      throw invalid(`checkpoint ${dir}: ${f.name} has the wrong size: the manifest says ${f.size} bytes, the file has ${e.size}`);
    }
  }
  const listed = new Set(m.files.map((f) => f.name));
  for (const name of found.keys()) {
    if (name.endsWith('.img') && !listed.has(name)) {
      throw invalid(`checkpoint ${dir}: image file ${name} is not in the manifest (written after it, or by something else)`);
    }
  }

  if (expect) checkCompatible(dir, m, expect);
  return { manifest: m, id };
}

/** The expensive half: every file's sha256 (chunks in parallel on the worker pool) against `m`. */
export async function verifyChecksums(dir: string, m: SnapshotManifest): Promise<void> {
  const ranges: Range[] = [];
  const owner: Array<{ file: ManifestFile; chunk: number }> = [];
  for (const f of m.files) {
    fileRanges(path.join(dir, f.name), f.size).forEach((r, chunk) => {
      ranges.push(r);
      owner.push({ file: f, chunk });
    });
  }
  try {
    await hashRanges(ranges, (i, hex) => {
      const { file, chunk } = owner[i];
      if (!file.chunks) {
        if (hex !== file.sha256) {
          throw invalid(`checkpoint ${dir}: ${file.name} is corrupt: its sha256 is ${hex}, the manifest says ${file.sha256}`);
        }
      } else if (hex !== file.chunks[chunk]) {
        const start = chunk * CHUNK_BYTES;
        const end = Math.min(file.size, start + CHUNK_BYTES) - 1;
        throw invalid(`checkpoint ${dir}: ${file.name} is corrupt: chunk ${chunk} (of 0..${file.chunks.length - 1}, ` +
          `bytes ${start}-${end}) has sha256 ${hex}, the manifest says ${file.chunks[chunk]}`);
      }
    });
  } catch (err) {
    if (KybernateError.is(err)) throw err;
    throw invalid(`checkpoint ${dir}: cannot read its files: ${(err as Error).message}`);
  }
}

function checkCompatible(dir: string, m: SnapshotManifest, expect: Expectations): void {
  const dumped = m.versions.criu;
  if (expect.criuVersion !== undefined) {
    const cmp = compareVersions(expect.criuVersion, dumped);
    if (cmp === undefined) {
      throw incompatible(`checkpoint ${dir}: cannot compare CRIU versions: dumped by CRIU '${dumped}', this node has '${expect.criuVersion}'`);
    }
    if (cmp < 0) {
      throw incompatible(`checkpoint ${dir} was dumped by CRIU ${dumped}; this node has CRIU ${expect.criuVersion}, ` +
        `restore needs ${dumped} or newer`);
    }
  }

  if (m.cuda.pids.length > 0) {
    // Validation guarantees a recorded driver whenever CUDA pids are recorded.
    const recorded = m.versions.driver as string;
    if (expect.driverVersion === undefined) {
      throw incompatible(`checkpoint ${dir} holds CUDA processes (pids ${m.cuda.pids.join(', ')}; driver ${recorded}), ` +
        'but this node has no CUDA driver');
    }
    if (majorOf(expect.driverVersion) !== majorOf(recorded)) {
      throw incompatible(`checkpoint ${dir} was made with CUDA driver ${recorded}; this node has ${expect.driverVersion}, ` +
        `restore needs the same major version (${majorOf(recorded)})`);
    }
  }

  // GPUs are matched by model: a restore may land on other cards (other UUIDs) of the same kind.
  const need = countByName(m.gpus);
  const have = countByName(expect.gpus ?? []);
  const short = [...need].filter(([name, n]) => (have.get(name) ?? 0) < n);
  if (short.length > 0) {
    throw incompatible(`checkpoint ${dir} needs GPUs ${describeCounts(need)}; this node has ${describeCounts(have)}`);
  }
}

function countByName(gpus: readonly GpuInfo[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const g of gpus) counts.set(g.name, (counts.get(g.name) ?? 0) + 1);
  return counts;
}

function describeCounts(counts: Map<string, number>): string {
  if (counts.size === 0) return 'none';
  return [...counts].map(([name, n]) => `${n}x '${name}'`).join(', ');
}

/** One range for a file of at most one chunk (its plain sha256); one per chunk otherwise. */
function fileRanges(file: string, size: number): Range[] {
  if (size <= CHUNK_BYTES) return [{ path: file, offset: 0, length: size }];
  const ranges: Range[] = [];
  for (let offset = 0; offset < size; offset += CHUNK_BYTES) {
    ranges.push({ path: file, offset, length: Math.min(CHUNK_BYTES, size - offset) });
  }
  return ranges;
}

interface Entry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'socket' | 'FIFO' | 'device';
  size: number;
}

/** Every entry under `root`, '/'-separated names; symlinks are reported, never followed. */
async function walk(root: string, prefix = ''): Promise<Entry[]> {
  const names = await fs.promises.readdir(path.join(root, prefix));
  const nested = await Promise.all(names.map(async (n): Promise<Entry[]> => {
    const name = prefix ? `${prefix}/${n}` : n;
    const st = await fs.promises.lstat(path.join(root, name));
    if (st.isDirectory()) return [{ name, type: 'dir', size: 0 }, ...(await walk(root, name))];
    const type = st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isSocket() ? 'socket' : st.isFIFO() ? 'FIFO' : 'device';
    return [{ name, type, size: st.size }];
  }));
  return nested.flat();
}

/** What an incomplete marker says about the checkpoint that left it, in a few words. */
function incompleteWhy(text: string): string {
  try {
    const m = JSON.parse(text) as { container?: unknown; startedAt?: unknown; shimPid?: unknown };
    return `container ${String(m.container)}, started ${String(m.startedAt)} by shim pid ${String(m.shimPid)}`;
  } catch {
    return `${INCOMPLETE_FILE} present`;
  }
}

/** fsync of every regular file and directory below (and of) `dir`, a few at a time. */
async function syncAll(dir: string, entries: Entry[]): Promise<void> {
  const targets = [...entries.filter((e) => e.type === 'file' || e.type === 'dir').map((e) => path.join(dir, e.name)), dir];
  let next = 0;
  const worker = async () => {
    while (next < targets.length) {
      const fh = await fs.promises.open(targets[next++], 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, targets.length) }, worker));
}

async function writeAtomic(dir: string, text: string): Promise<void> {
  const tmp = path.join(dir, MANIFEST_TMP);
  const fh = await fs.promises.open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.promises.rename(tmp, path.join(dir, MANIFEST_FILE));
  // The rename is durable only once the directory itself is synced.
  const dh = await fs.promises.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

