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

export { nodeVersions, type BinaryRunner } from '../host/versions';
export { CHUNK_BYTES } from './hash';

export const MANIFEST_FILE = 'kybernate-manifest.json';
const MANIFEST_VERSION = 1;
/** A crash while writing leaves at most this file behind; verification ignores it (not an image). */
const MANIFEST_TMP = `.${MANIFEST_FILE}.tmp`;
/**
 * Present from the first byte a checkpoint writes into a directory until its manifest is durable
 * (src/checkpoint/snapshot-dir.ts): a directory holding it is never restored, whatever else it holds.
 */
export const INCOMPLETE_FILE = 'kybernate-checkpoint.incomplete';
/** Refuse to parse anything bigger: a real manifest lists a few hundred files. */
const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

export interface GpuInfo {
  uuid: string;
  name: string;
  memoryBytes: number;
}

export interface ManifestFile {
  /** Path relative to the checkpoint directory, '/'-separated. */
  name: string;
  size: number;
  /** Plain sha256 (hex) for a file of at most 64 MiB; the hash list's sha256 for a larger one. */
  sha256: string;
  /** sha256 (hex) of each 64 MiB chunk; present only for files larger than 64 MiB. */
  chunks?: string[];
}

export interface SnapshotManifest {
  version: 1;
  kind: 'container';
  createdAt: string;
  container: { id: string; namespace: string; image?: string; bundle?: string };
  /** sha256 of the bundle's config.json at checkpoint time. */
  spec: { digest: string };
  /** driver: the CUDA driver version as the caller knows it ("580.159.04", or the driver API's number). */
  versions: { criu: string; runc: string; kernel: string; shim: string; driver?: string };
  /** The node's GPUs that the container used at checkpoint time. */
  gpus: GpuInfo[];
  /** The CUDA processes checkpointed, and the device memory they held. */
  /** nsPids[i]: pids[i] as its own pid namespace numbers it — what CRIU restores it as. */
  cuda: { pids: number[]; deviceMemoryBytes: number; nsPids?: number[] };
  /** The checkpoint options used (exit, openTcp, fileLocks, ...). */
  options: Record<string, unknown>;
  steps: Array<{ step: string; ms: number; bytes?: number }>;
  /** Every regular file of the directory, recursively, except the manifest; sorted by name. */
  files: ManifestFile[];
}

export type ManifestInput = Omit<SnapshotManifest, 'version' | 'kind' | 'files' | 'createdAt'>;

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

/** The sha256 (hex) of a hash list: of the chunk digests concatenated as raw bytes. */
export function hashListDigest(chunks: readonly string[]): string {
  const h = crypto.createHash('sha256');
  for (const c of chunks) h.update(Buffer.from(c, 'hex'));
  return h.digest('hex');
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
  // Field by field, so that nothing else a caller's object carries (a `files` or `version` of an old
  // manifest, say) reaches the file.
  const head = {
    version: MANIFEST_VERSION, kind: 'container', createdAt: new Date().toISOString(),
    container: input.container, spec: input.spec, versions: input.versions, gpus: input.gpus, cuda: input.cuda,
    options: input.options, steps: input.steps,
  } as const;
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
  await writeAtomic(dir, `${JSON.stringify(manifest, null, 2)}\n`).catch(failed(`cannot write ${MANIFEST_FILE}`));
  return manifest;
}

/** Reads and validates the manifest of `dir` (schema only; the files are not looked at). */
export async function readManifest(dir: string): Promise<SnapshotManifest> {
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
  return parsed as SnapshotManifest;
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
  const m = await readManifest(dir);

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

  checkCompatible(dir, m, expect);
  return m;
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

const chunkCount = (size: number) => Math.max(1, Math.ceil(size / CHUNK_BYTES));

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

// ---- schema validation: the first problem found, or undefined ----

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStr = (v: unknown): v is string => typeof v === 'string';
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isHex = (v: unknown) => isStr(v) && /^[0-9a-f]{64}$/.test(v);

/** A relative '/'-separated path that stays inside the directory (a manifest may be hostile). */
function badName(name: unknown): boolean {
  if (!isStr(name) || name === '' || name.includes('\0') || name.includes('\\')) return true;
  return name.split('/').some((seg) => seg === '' || seg === '.' || seg === '..');
}

function manifestProblem(m: unknown): string | undefined {
  if (!isObj(m)) return 'not a JSON object';
  if (m.version !== MANIFEST_VERSION) return `version ${JSON.stringify(m.version)} (this kybernate reads ${MANIFEST_VERSION})`;
  if (m.kind !== 'container') return `kind ${JSON.stringify(m.kind)}, expected "container"`;
  if (!isStr(m.createdAt) || Number.isNaN(Date.parse(m.createdAt))) return 'createdAt is not an ISO time';

  const c = m.container;
  if (!isObj(c) || !isStr(c.id) || c.id === '' || !isStr(c.namespace)) return 'container needs an id and a namespace';
  if ((c.image !== undefined && !isStr(c.image)) || (c.bundle !== undefined && !isStr(c.bundle))) {
    return 'container.image and container.bundle must be strings';
  }
  if (!isObj(m.spec) || !isStr(m.spec.digest) || !/^sha256:[0-9a-f]{64}$/.test(m.spec.digest)) {
    return 'spec.digest must be sha256:<64 hex digits>';
  }

  const v = m.versions;
  if (!isObj(v)) return 'versions is missing';
  for (const k of ['criu', 'runc', 'kernel', 'shim'] as const) {
    if (!isStr(v[k]) || v[k] === '') return `versions.${k} must be a non-empty string`;
  }
  if (v.driver !== undefined && (!isStr(v.driver) || v.driver === '')) return 'versions.driver must be a non-empty string';

  if (!Array.isArray(m.gpus)) return 'gpus must be an array';
  for (const g of m.gpus) {
    if (!isObj(g) || !isStr(g.uuid) || !isStr(g.name) || !isCount(g.memoryBytes)) {
      return `gpus: ${JSON.stringify(g)} needs uuid, name and memoryBytes`;
    }
  }

  const cuda = m.cuda;
  if (!isObj(cuda) || !Array.isArray(cuda.pids) || !isCount(cuda.deviceMemoryBytes)) {
    return 'cuda needs pids and deviceMemoryBytes';
  }
  if (!cuda.pids.every((p) => isCount(p) && p > 0)) return 'cuda.pids must be process ids';
  if (cuda.nsPids !== undefined && (!Array.isArray(cuda.nsPids) || cuda.nsPids.length !== cuda.pids.length || !cuda.nsPids.every((p) => isCount(p) && p > 0))) {
    return 'cuda.nsPids must be one process id per cuda.pids entry';
  }
  if (cuda.pids.length > 0 && v.driver === undefined) return 'versions.driver is required when cuda.pids is not empty';

  if (!isObj(m.options)) return 'options must be an object';
  if (!Array.isArray(m.steps)) return 'steps must be an array';
  for (const s of m.steps) {
    if (!isObj(s) || !isStr(s.step) || typeof s.ms !== 'number' || !Number.isFinite(s.ms) || s.ms < 0
      || (s.bytes !== undefined && !isCount(s.bytes))) {
      return `steps: ${JSON.stringify(s)} needs step, ms (and optional bytes)`;
    }
  }

  if (!Array.isArray(m.files)) return 'files must be an array';
  const seen = new Set<string>();
  for (const f of m.files) {
    if (!isObj(f) || badName(f.name)) return `files: bad name ${JSON.stringify(isObj(f) ? f.name : f)}`;
    const name = f.name as string;
    if (name === MANIFEST_FILE) return `files: lists ${MANIFEST_FILE} itself`;
    if (seen.has(name)) return `files: ${name} is listed twice`;
    seen.add(name);
    if (!isCount(f.size)) return `files: ${name} has no valid size`;
    if (!isHex(f.sha256)) return `files: ${name} has no valid sha256`;
    if (f.size <= CHUNK_BYTES) {
      if (f.chunks !== undefined) return `files: ${name} has chunks but is not larger than one chunk`;
      continue;
    }
    if (!Array.isArray(f.chunks) || !f.chunks.every(isHex)) return `files: ${name} needs chunk digests`;
    if (f.chunks.length !== chunkCount(f.size)) {
      return `files: ${name} has ${f.chunks.length} chunk digests, its size needs ${chunkCount(f.size)}`;
    }
    if (hashListDigest(f.chunks as string[]) !== f.sha256) return `files: ${name}: sha256 does not match its chunk digests`;
  }
  return undefined;
}
