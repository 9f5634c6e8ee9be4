// Where the chunks of packed snapshots live (below the RAM tier): a local directory (disk-store.ts) or an
// S3 bucket (s3-store.ts). A store holds two kinds of objects: chunks, named by the sha256 of their bytes,
// and snapshot indexes (index-format.ts), named by the snapshot's id, each listing the chunks of every file.
//
// Invariants every store keeps:
// - An object is visible under its name only when complete: a write goes to a temporary name (or an
//   uncommitted upload) first, so a crash leaves the old state or the new one, never a partial object.
// - A chunk's bytes are checked against its name on the way in (put) and on the way out (get).
// - An index is written after every chunk it lists (pack.ts), so a visible index is restorable as long as
//   no chunk it lists was deleted; gc (pack.ts) deletes only chunks that no index lists.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { KybernateError } from '../errors';

export interface ChunkStore {
  readonly kind: 'disk' | 's3';
  /** For messages: the directory, or s3://bucket/prefix. */
  readonly name: string;
  has(digest: string): Promise<boolean>;
  /** Stores the chunk; the bytes must hash to digest (checked before the chunk becomes visible; a partial write is never visible under its name). Idempotent. */
  put(digest: string, data: Buffer): Promise<void>;
  /** The chunk's bytes, checked against digest: a mismatch or a missing chunk is KYB_ERR_CHECKPOINT_INVALID naming the chunk and the store. */
  get(digest: string): Promise<Buffer>;
  delete(digest: string): Promise<void>;
  listChunks(): AsyncIterable<{ digest: string; size: number; mtimeMs: number }>;
  /** Snapshot indexes (small JSON) by snapshot id ('sha256:<hex>'): written atomically, visible only when complete. */
  putIndex(id: string, data: Buffer): Promise<void>;
  getIndex(id: string): Promise<Buffer | undefined>;
  deleteIndex(id: string): Promise<void>;
  listIndexes(): AsyncIterable<string>;
}

const DIGEST = /^[0-9a-f]{64}$/;
const SNAPSHOT_ID = /^sha256:([0-9a-f]{64})$/;

/** A chunk name: 64 lowercase hex digits (which also keeps it from naming a path outside the store). */
export function isDigest(v: unknown): v is string {
  return typeof v === 'string' && DIGEST.test(v);
}

/** A snapshot id: 'sha256:' and 64 lowercase hex digits. */
export function isSnapshotId(v: unknown): v is string {
  return typeof v === 'string' && SNAPSHOT_ID.test(v);
}

/** The digest, or KYB_ERR_INVALID_ARGUMENT naming the store: a caller's mistake, never a stored object's. */
export function checkDigest(store: string, digest: string): string {
  if (!isDigest(digest)) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `chunk store ${store}: ${JSON.stringify(digest)} is not a chunk digest (64 hex digits)`);
  return digest;
}

/** The hex part of a snapshot id, or KYB_ERR_INVALID_ARGUMENT naming the store. */
export function idHex(store: string, id: string): string {
  const m = typeof id === 'string' ? SNAPSHOT_ID.exec(id) : null;
  if (!m) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `chunk store ${store}: ${JSON.stringify(id)} is not a snapshot id (sha256:<64 hex digits>)`);
  return m[1];
}

/** A chunk that is missing or whose bytes do not hash to its name. */
export function chunkInvalid(store: ChunkStore | string, digest: string, why: string): KybernateError {
  const where = typeof store === 'string' ? store : `${store.kind} store ${store.name}`;
  return new KybernateError('KYB_ERR_CHECKPOINT_INVALID', `chunk ${digest} in ${where}: ${why}`);
}

/** sha256 (hex) off the main thread: WebCrypto hashes on the libuv pool, so parallel transfers hash in parallel. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  return Buffer.from(await crypto.subtle.digest('SHA-256', data)).toString('hex');
}

/**
 * A file system failure as a KybernateError, by errno: a full disk is KYB_ERR_RESOURCE_EXHAUSTED ("`where`
 * is full"), a refused one KYB_ERR_PERMISSION, anything else KYB_ERR_INTERNAL. A KybernateError passes through.
 */
export function fsError(where: string, what: string, err: unknown): KybernateError {
  if (KybernateError.is(err)) return err;
  const detail = `${what}: ${(err as Error).message}`;
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case 'ENOSPC': case 'EDQUOT':
      return new KybernateError('KYB_ERR_RESOURCE_EXHAUSTED', `${where} is full: ${detail}`, { cause: err });
    case 'EACCES': case 'EPERM': case 'EROFS':
      return new KybernateError('KYB_ERR_PERMISSION', `${where}: ${detail}`, { cause: err });
    default:
      return new KybernateError('KYB_ERR_INTERNAL', `${where}: ${detail}`, { cause: err });
  }
}

/** fsync of a directory: what makes a rename or an unlink in it durable. */
export async function syncDir(dir: string): Promise<void> {
  const dh = await fs.promises.open(dir, 'r');
  await dh.sync().finally(() => dh.close());
}
