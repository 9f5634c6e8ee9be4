// The S3 chunk store: chunks and snapshot indexes as objects of one bucket, through @aws-sdk/client-s3, for
// any S3-compatible service (AWS, Ceph RGW, MinIO). Keys: <prefix>chunks/<hex> and <prefix>indexes/<hex>.json.
//
// Invariants:
// - Visibility: every object is written by one PutObject, which S3 makes visible only when complete (a
//   connection lost mid-upload leaves the old state); nothing here uses multipart uploads, so no
//   uncommitted parts are ever left behind.
// - Integrity in: put() hashes the bytes before sending them and sends Content-MD5 (checked by every S3
//   server, Ceph RGW included) and x-amz-checksum-sha256 (checked by AWS): bytes corrupted on the way are
//   refused by the server. An index carries its sha256 in its metadata (x-amz-meta-kyb-sha256).
// - Integrity out: get() and getIndex() hash what they read; a short body is a transport failure (retried),
//   a full body with the wrong hash is KYB_ERR_CHECKPOINT_INVALID naming the key and the bucket.
// - Errors are classified by the SDK's error name (the S3 error code), the HTTP status and Node's errno
//   code, never by message text: unreachable or failing servers are KYB_ERR_UNAVAILABLE naming the endpoint.
import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import {
  DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client,
} from '@aws-sdk/client-s3';
import { KybernateError, type ErrorCode } from '../errors';
import { checkDigest, chunkInvalid, idHex, isDigest, type ChunkStore } from './chunk-store';

export interface S3StoreOptions {
  /** http(s) URL of the service; undefined: AWS's endpoint for the region. */
  endpoint?: string;
  region: string;
  bucket: string;
  /** Key prefix; '/' is appended when missing. Default ''. */
  prefix?: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Bucket in the path (Ceph RGW and MinIO want it). Default true. */
  forcePathStyle?: boolean;
  /** Attempts per request with the SDK's standard retry (exponential backoff with jitter). Default 3. */
  maxAttempts?: number;
  /** Limit for connecting and for a request with no bytes moving, in ms; then it is retried. Default 30 s. */
  timeoutMs?: number;
  /** Keep-alive sockets to the service: transfers beyond this many wait for a free one. Default 32. */
  maxSockets?: number;
}

const NETWORK_ERRNOS = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH',
  'EHOSTDOWN', 'ENETDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'ERR_STREAM_PREMATURE_CLOSE',
]);
const PERMISSION_CODES = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken']);
/** The server's check of Content-MD5 / x-amz-checksum-* failed: the bytes changed on the way. */
const DIGEST_CODES = new Set(['BadDigest', 'InvalidDigest', 'XAmzContentSHA256Mismatch']);
const NOT_FOUND_CODES = new Set(['NoSuchKey', 'NotFound']);

interface SdkError { name?: string; code?: string; errors?: unknown[]; $metadata?: { httpStatusCode?: number } }

const statusOf = (err: unknown): number | undefined => (err as SdkError | undefined)?.$metadata?.httpStatusCode;
/** No such object (a HEAD's 404 has no body, hence no code); a missing bucket is not a missing object. */
const isNotFound = (err: unknown): boolean => {
  const name = (err as SdkError | undefined)?.name ?? '';
  return NOT_FOUND_CODES.has(name) || (statusOf(err) === 404 && name !== 'NoSuchBucket');
};

/** A connection-level failure: refused, reset, timed out, or (AggregateError) every address tried failed so. */
function isNetworkError(err: unknown): boolean {
  const e = err as SdkError | undefined;
  if (!e) return false;
  if (e.name === 'TimeoutError' || NETWORK_ERRNOS.has(e.code ?? '')) return true;
  return Array.isArray(e.errors) && e.errors.length > 0 && e.errors.every(isNetworkError);
}

/** S3ChunkStore over one bucket; close() when done (it holds keep-alive sockets). */
export class S3ChunkStore implements ChunkStore {
  readonly kind = 's3' as const;
  readonly name: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly endpoint: string;
  private readonly maxAttempts: number;
  private closed = false;

  constructor(opts: S3StoreOptions) {
    this.bucket = opts.bucket;
    this.prefix = opts.prefix && !opts.prefix.endsWith('/') ? `${opts.prefix}/` : opts.prefix ?? '';
    this.name = `s3://${this.bucket}/${this.prefix}`;
    this.endpoint = opts.endpoint ?? `AWS S3 (${opts.region})`;
    this.maxAttempts = opts.maxAttempts ?? 3;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const agent = { keepAlive: true, maxSockets: opts.maxSockets ?? 32 };
    this.client = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region,
      forcePathStyle: opts.forcePathStyle ?? true,
      credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
      maxAttempts: this.maxAttempts,
      retryMode: 'standard',
      // The SDK's default (checksums on every request) breaks Ceph RGW; we send our own (see put()).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // Bodies are in memory and a few MiB: waiting a round trip for "100 Continue" only adds latency.
      expectContinueHeader: false,
      requestHandler: {
        httpAgent: new http.Agent(agent),
        httpsAgent: new https.Agent(agent),
        connectionTimeout: timeoutMs,
        socketTimeout: timeoutMs,
        // Requests queued behind maxSockets are by design (callers start a snapshot's transfers at once):
        // the handler's "socket usage at capacity" warning would be noise.
        logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
      },
    });
  }

  private chunkKey(digest: string): string {
    return `${this.prefix}chunks/${checkDigest(this.name, digest)}`;
  }

  private indexKey(id: string): string {
    return `${this.prefix}indexes/${idHex(this.name, id)}.json`;
  }

  /** `s3://bucket/key`, for messages. */
  private url(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  /** Any SDK failure as a KybernateError: `what` says which call on which object. */
  private fail(err: unknown, what: string): KybernateError {
    if (KybernateError.is(err)) return err;
    const e = err as SdkError;
    const status = statusOf(err);
    const detail = `${e?.name ?? 'Error'}${e?.code && e.code !== e.name ? ` ${e.code}` : ''}${status ? ` (HTTP ${status})` : ''}: ${(err as Error)?.message ?? String(err)}`;
    let code: ErrorCode = 'KYB_ERR_INTERNAL';
    let why = `S3 at ${this.endpoint} failed`;
    if (this.closed) {
      code = 'KYB_ERR_CANCELLED';
      why = 'the store was closed';
    } else if (isNetworkError(err) || (status !== undefined && status >= 500) || e?.name === 'SlowDown') {
      code = 'KYB_ERR_UNAVAILABLE';
      why = `S3 at ${this.endpoint} is unavailable`;
    } else if (PERMISSION_CODES.has(e?.name ?? '') || status === 401 || status === 403) {
      code = 'KYB_ERR_PERMISSION';
      why = `S3 at ${this.endpoint} refused the credentials`;
    } else if (e?.name === 'NoSuchBucket') {
      code = 'KYB_ERR_NOT_FOUND';
      why = `bucket ${this.bucket} does not exist at ${this.endpoint}`;
    } else if (DIGEST_CODES.has(e?.name ?? '')) {
      code = 'KYB_ERR_CHECKPOINT_INVALID';
      why = `S3 at ${this.endpoint} received other bytes than were sent (corrupted on the way)`;
    }
    return new KybernateError(code, `${what}: ${why} (${detail})`, { cause: err });
  }

  private async send<T>(what: string, call: () => Promise<T>): Promise<T> {
    if (this.closed) throw new KybernateError('KYB_ERR_CANCELLED', `${what}: the store was closed`);
    try {
      return await call();
    } catch (err) {
      throw this.fail(err, what);
    }
  }

  async has(digest: string): Promise<boolean> {
    const key = this.chunkKey(digest);
    try {
      await this.send(`head ${this.url(key)}`, () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key })));
      return true;
    } catch (err) {
      if (isNotFound((err as Error).cause)) return false;
      throw err;
    }
  }

  async put(digest: string, data: Buffer): Promise<void> {
    const key = this.chunkKey(digest);
    const actual = crypto.createHash('sha256').update(data).digest('hex');
    if (actual !== digest) throw chunkInvalid(this, digest, `the bytes given hash to ${actual}: not stored`);
    await this.putObject(key, data, Buffer.from(digest, 'hex'), 'application/octet-stream', {});
  }

  private async putObject(key: string, data: Buffer, sha256: Buffer, contentType: string, metadata: Record<string, string>): Promise<void> {
    const md5 = crypto.createHash('md5').update(data).digest('base64');
    await this.send(`put ${this.url(key)}`, () => this.client.send(new PutObjectCommand({
      Bucket: this.bucket, Key: key, Body: data, ContentLength: data.length, ContentType: contentType,
      ContentMD5: md5, ChecksumSHA256: sha256.toString('base64'), Metadata: metadata,
    })));
  }

  /** The object's bytes and metadata, or undefined when there is none. */
  private async getObject(key: string): Promise<{ data: Buffer; metadata: Record<string, string> } | undefined> {
    const what = `get ${this.url(key)}`;
    for (let attempt = 1; ; attempt++) {
      let res;
      try {
        res = await this.send(what, () => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key })));
      } catch (err) {
        if (KybernateError.is(err) && isNotFound(err.cause)) return undefined;
        throw err;
      }
      try {
        const data = await this.send(what, async () => {
          const bytes = await res.Body!.transformToByteArray();
          const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
          if (res.ContentLength !== undefined && body.length !== res.ContentLength) {
            throw Object.assign(new Error(`body cut short: ${body.length} of ${res.ContentLength} bytes`), { code: 'ECONNRESET' });
          }
          return body;
        });
        return { data, metadata: res.Metadata ?? {} };
      } catch (err) {
        // The SDK retries a request only until the answer's headers: a body cut short (the connection
        // lost mid-download) is retried here, as a whole request.
        if (!KybernateError.is(err) || err.code !== 'KYB_ERR_UNAVAILABLE' || attempt >= this.maxAttempts) throw err;
      }
    }
  }

  async get(digest: string): Promise<Buffer> {
    const key = this.chunkKey(digest);
    const obj = await this.getObject(key);
    if (obj === undefined) throw chunkInvalid(this, digest, `missing (no object ${this.url(key)})`);
    const actual = crypto.createHash('sha256').update(obj.data).digest('hex');
    if (actual !== digest) throw chunkInvalid(this, digest, `corrupt: the bytes of ${this.url(key)} hash to ${actual}`);
    return obj.data;
  }

  async delete(digest: string): Promise<void> {
    const key = this.chunkKey(digest);
    // S3 answers a delete of a missing key with success: deleting twice is fine.
    await this.send(`delete ${this.url(key)}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })));
  }

  /** Every object under `<prefix><dir>/`, page by page (1000 keys a page). */
  private async *list(dir: string): AsyncGenerator<{ name: string; size: number; mtimeMs: number }> {
    const prefix = `${this.prefix}${dir}/`;
    let token: string | undefined;
    do {
      const page = await this.send(`list ${this.url(prefix)}`, () => this.client.send(new ListObjectsV2Command({
        Bucket: this.bucket, Prefix: prefix, ContinuationToken: token,
      })));
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { name: o.Key.slice(prefix.length), size: o.Size ?? 0, mtimeMs: o.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /** Chunks only: other objects under chunks/ (not named by a digest) are not ours and are skipped. */
  async *listChunks(): AsyncIterable<{ digest: string; size: number; mtimeMs: number }> {
    for await (const o of this.list('chunks')) {
      if (isDigest(o.name)) yield { digest: o.name, size: o.size, mtimeMs: o.mtimeMs };
    }
  }

  async putIndex(id: string, data: Buffer): Promise<void> {
    const key = this.indexKey(id);
    const sha256 = crypto.createHash('sha256').update(data).digest();
    await this.putObject(key, data, sha256, 'application/json', { 'kyb-sha256': sha256.toString('hex') });
  }

  async getIndex(id: string): Promise<Buffer | undefined> {
    const key = this.indexKey(id);
    const obj = await this.getObject(key);
    if (obj === undefined) return undefined;
    const want = obj.metadata['kyb-sha256'];
    const actual = crypto.createHash('sha256').update(obj.data).digest('hex');
    if (want !== actual) {
      throw new KybernateError('KYB_ERR_CHECKPOINT_INVALID', `snapshot index ${id} in s3 store ${this.name}: `
        + `${this.url(key)} ${want === undefined ? 'has no kyb-sha256 metadata (not written by Kybernate)' : `is corrupt: its bytes hash to ${actual}, not ${want}`}`);
    }
    return obj.data;
  }

  async deleteIndex(id: string): Promise<void> {
    const key = this.indexKey(id);
    await this.send(`delete ${this.url(key)}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })));
  }

  async *listIndexes(): AsyncIterable<string> {
    for await (const o of this.list('indexes')) {
      const hex = o.name.endsWith('.json') ? o.name.slice(0, -'.json'.length) : '';
      if (isDigest(hex)) yield `sha256:${hex}`;
    }
  }

  /** Destroys the client and its sockets; calls in flight fail with KYB_ERR_CANCELLED. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }
}
