// The index of a packed snapshot: for every file of the snapshot directory (its manifest included), its
// size, mode, sha256 and the chunks that hold its bytes, in order. JSON, versioned, parsed strictly.
//
//   { "version": 1, "id": "sha256:<hex>", "manifest": "kybernate-manifest.json",
//     "files": [{ "path", "size", "mode", "sha256", "chunks": [{ "digest", "size" }] }],
//     "totalBytes", "createdAt" }
//
// Invariants:
// - An index is not content-addressed: it is trusted only as far as it agrees with the manifest it lists,
//   whose sha256 is the snapshot's id. unpack checks the manifest against the id and every file against
//   the manifest; the index only says where the bytes are.
// - `sha256` of a file is in the manifest's form (schema.ts): plain up to 64 MiB, a hash list above.
// - parseIndex accepts exactly what encodeIndex writes: unknown keys are refused, not ignored, so a
//   newer format is never half-read by an older kybernate (it bumps `version`).
import crypto from 'node:crypto';
import { KybernateError } from '../errors';
import { CHUNK_BYTES, MANIFEST_FILE, hashListDigest } from '../snapshot/manifest';
import { MAX_MANIFEST_BYTES } from '../snapshot/schema';
import { isDigest, isSnapshotId } from './chunk-store';

export const INDEX_VERSION = 1;
/** Refuse to parse anything bigger: 16 GiB of 2 MiB chunks is about 1 MB of index. */
export const MAX_INDEX_BYTES = 64 * 1024 * 1024;

export interface IndexChunk { digest: string; size: number }

export interface IndexFile {
  /** Relative to the snapshot directory, '/'-separated. */
  path: string;
  size: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  /** In the manifest's form: see the invariants. */
  sha256: string;
  chunks: IndexChunk[];
}

export interface SnapshotIndex {
  version: 1;
  /** 'sha256:' + hex of the manifest's bytes. */
  id: string;
  /** The path of the manifest among `files`: always MANIFEST_FILE (a field, so that the format says so). */
  manifest: string;
  files: IndexFile[];
  /** Sum of the files' sizes. */
  totalBytes: number;
  createdAt: string;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const extraKey = (o: Record<string, unknown>, keys: readonly string[]) => Object.keys(o).find((k) => !keys.includes(k));

/** A relative '/'-separated path that stays inside the directory (an index may be hostile). */
function badPath(p: unknown): boolean {
  if (typeof p !== 'string' || p === '' || p.includes('\0') || p.includes('\\')) return true;
  return p.split('/').some((seg) => seg === '' || seg === '.' || seg === '..');
}

function fileProblem(f: unknown): string | undefined {
  if (!isObj(f) || badPath(f.path)) return `bad path ${JSON.stringify(isObj(f) ? f.path : f)}`;
  const name = f.path as string;
  const extra = extraKey(f, ['path', 'size', 'mode', 'sha256', 'chunks']);
  if (extra) return `${name}: unknown key ${JSON.stringify(extra)}`;
  if (!isCount(f.size)) return `${name}: no valid size`;
  if (!isCount(f.mode) || f.mode > 0o7777) return `${name}: no valid mode`;
  if (!isDigest(f.sha256)) return `${name}: no valid sha256`;
  if (!Array.isArray(f.chunks)) return `${name}: chunks must be an array`;
  let sum = 0;
  for (const c of f.chunks) {
    if (!isObj(c) || extraKey(c, ['digest', 'size']) || !isDigest(c.digest) || !isCount(c.size) || c.size === 0) {
      return `${name}: bad chunk ${JSON.stringify(c)}`;
    }
    sum += c.size;
  }
  if (sum !== f.size) return `${name}: its chunks hold ${sum} bytes, its size is ${f.size}`;
  return undefined;
}

/** The first problem of a parsed index, or undefined. */
export function indexProblem(v: unknown): string | undefined {
  if (!isObj(v)) return 'not a JSON object';
  if (v.version !== INDEX_VERSION) return `version ${JSON.stringify(v.version)} (this kybernate reads ${INDEX_VERSION})`;
  const extra = extraKey(v, ['version', 'id', 'manifest', 'files', 'totalBytes', 'createdAt']);
  if (extra) return `unknown key ${JSON.stringify(extra)}`;
  if (!isSnapshotId(v.id)) return 'id must be sha256:<64 hex digits>';
  if (typeof v.createdAt !== 'string' || Number.isNaN(Date.parse(v.createdAt))) return 'createdAt is not an ISO time';
  if (!Array.isArray(v.files)) return 'files must be an array';
  const seen = new Set<string>();
  let total = 0;
  for (const f of v.files) {
    const problem = fileProblem(f);
    if (problem) return `files: ${problem}`;
    const file = f as IndexFile;
    if (seen.has(file.path)) return `files: ${file.path} is listed twice`;
    seen.add(file.path);
    total += file.size;
  }
  if (!isCount(v.totalBytes) || v.totalBytes !== total) return `totalBytes ${JSON.stringify(v.totalBytes)}, the files hold ${total}`;
  if (v.manifest !== MANIFEST_FILE) return `manifest ${JSON.stringify(v.manifest)}, expected "${MANIFEST_FILE}"`;
  const m = (v.files as IndexFile[]).find((f) => f.path === v.manifest);
  if (!m) return `manifest ${v.manifest} is not among the files`;
  if (m.size > MAX_MANIFEST_BYTES) return `manifest ${m.path} is ${m.size} bytes, too big to be one`;
  if (`sha256:${m.sha256}` !== v.id) return `manifest ${m.path} has sha256 ${m.sha256}, which is not the id`;
  return undefined;
}

/** The index in `data`, or KYB_ERR_CHECKPOINT_INVALID naming `where` (and `expectId`, when given) and the problem. */
export function parseIndex(data: Buffer, where: string, expectId?: string): SnapshotIndex {
  const what = `the index of ${expectId ?? 'a snapshot'} in ${where}`;
  const invalid = (why: string) => new KybernateError('KYB_ERR_CHECKPOINT_INVALID', `${what}: ${why}`);
  if (data.length > MAX_INDEX_BYTES) throw invalid(`${data.length} bytes, too big to be one`);
  let v: unknown;
  try {
    v = JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw invalid(`not JSON: ${(err as Error).message}`);
  }
  const problem = indexProblem(v);
  if (problem) throw invalid(problem);
  const index = v as SnapshotIndex;
  if (expectId !== undefined && index.id !== expectId) throw invalid(`it is the index of ${index.id}`);
  return index;
}

/** The bytes parseIndex reads; refuses (KYB_ERR_INTERNAL) an index it would not read back. */
export function encodeIndex(index: SnapshotIndex): Buffer {
  const problem = indexProblem(index);
  if (problem) throw new KybernateError('KYB_ERR_INTERNAL', `index of ${index.id}: ${problem}`);
  const files = index.files.map((f) => ({ path: f.path, size: f.size, mode: f.mode, sha256: f.sha256, chunks: f.chunks.map((c) => ({ digest: c.digest, size: c.size })) }));
  const { version, id, manifest, totalBytes, createdAt } = index;
  return Buffer.from(`${JSON.stringify({ version, id, manifest, files, totalBytes, createdAt })}\n`);
}

/**
 * A file's sha256 in the manifest's form, fed its bytes in order: the plain sha256 of a file of at most
 * CHUNK_BYTES, else the hash list's digest (the sha256 of each CHUNK_BYTES piece, concatenated raw).
 */
export class ManifestDigest {
  private piece = crypto.createHash('sha256');
  private pieceBytes = 0;
  private readonly pieces: string[] = [];

  update(data: Uint8Array): void {
    for (let off = 0; off < data.length;) {
      const n = Math.min(data.length - off, CHUNK_BYTES - this.pieceBytes);
      this.piece.update(data.subarray(off, off + n));
      this.pieceBytes += n;
      off += n;
      if (this.pieceBytes === CHUNK_BYTES) this.endPiece();
    }
  }

  digest(): string {
    if (this.pieceBytes > 0 || this.pieces.length === 0) this.endPiece();
    return this.pieces.length === 1 ? this.pieces[0] : hashListDigest(this.pieces);
  }

  private endPiece(): void {
    this.pieces.push(this.piece.digest('hex'));
    this.piece = crypto.createHash('sha256');
    this.pieceBytes = 0;
  }
}
