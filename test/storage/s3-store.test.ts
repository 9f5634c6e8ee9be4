// S3ChunkStore against a real S3 server (Ceph radosgw with its SQLite backend, test/harness/s3.ts): round
// trips, parallel transfers, corrupted objects, and the server killed mid-upload and mid-download.
import crypto from 'node:crypto';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KybernateError } from '../../src/errors';
import { S3ChunkStore, type S3StoreOptions } from '../../src/storage/s3-store';
import { s3MissingReason, startS3, type S3Server } from '../harness/s3';

const MiB = 1024 * 1024;
const skip = s3MissingReason();
const sha256 = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');
const chunk = (size: number): { digest: string; data: Buffer } => {
  const data = crypto.randomBytes(size);
  return { digest: sha256(data), data };
};
const anId = (): string => `sha256:${sha256(crypto.randomBytes(8))}`;

/** The rejection of `p`, which must be a KybernateError. */
async function rejection(p: Promise<unknown>): Promise<KybernateError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  if (!KybernateError.is(err)) throw new Error(`expected a KybernateError, got ${err === undefined ? 'success' : String(err)}`);
  return err;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Runs `fns` with at most `n` at a time. */
async function pool(n: number, fns: (() => Promise<unknown>)[]): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < fns.length) await fns[next++]();
  }));
}

describe.skipIf(skip !== undefined)(`S3ChunkStore against radosgw${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let s3: S3Server;
  const stores: S3ChunkStore[] = [];
  let prefixes = 0;
  const open = (server: S3Server = s3, over: Partial<S3StoreOptions> = {}): S3ChunkStore => {
    const store = new S3ChunkStore({
      endpoint: server.endpoint, region: server.region, bucket: server.bucket, prefix: `t${++prefixes}`,
      accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey, ...over,
    });
    stores.push(store);
    return store;
  };
  /** A plain SDK client, to put bytes behind the store's back. */
  const rawClient = (server: S3Server): S3Client => new S3Client({
    endpoint: server.endpoint, region: server.region, forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  });

  beforeAll(async () => {
    s3 = await startS3();
  });
  afterAll(() => {
    for (const s of stores) s.close();
  });

  it('puts, gets, lists and deletes chunks and indexes', async () => {
    const store = open();
    expect(store.kind).toBe('s3');
    expect(store.name).toBe(`s3://${s3.bucket}/t${prefixes}/`);
    const [a, b] = [chunk(1000), chunk(3 * MiB)];
    expect(await store.has(a.digest)).toBe(false);
    const before = Date.now();
    await store.put(a.digest, a.data);
    await store.put(a.digest, a.data); // idempotent
    await store.put(b.digest, b.data);
    expect(await store.has(a.digest)).toBe(true);
    expect((await store.get(a.digest)).equals(a.data)).toBe(true);
    expect((await store.get(b.digest)).equals(b.data)).toBe(true);
    const listed = (await collect(store.listChunks())).sort((x, y) => x.size - y.size);
    expect(listed.map((c) => [c.digest, c.size])).toEqual([[a.digest, 1000], [b.digest, 3 * MiB]]);
    for (const c of listed) expect(Math.abs(c.mtimeMs - before)).toBeLessThan(60_000);

    await store.delete(a.digest);
    await store.delete(a.digest); // idempotent
    expect(await store.has(a.digest)).toBe(false);
    const missing = await rejection(store.get(a.digest));
    expect(missing.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(missing.message).toContain(`s3://${s3.bucket}/t${prefixes}/chunks/${a.digest}`);

    const id = anId();
    const index = Buffer.from(JSON.stringify({ files: [{ name: 'pages-1.img', chunks: [b.digest] }] }));
    expect(await store.getIndex(id)).toBeUndefined();
    await store.putIndex(id, index);
    expect((await store.getIndex(id))?.equals(index)).toBe(true);
    expect(await collect(store.listIndexes())).toEqual([id]);
    await store.deleteIndex(id);
    expect(await store.getIndex(id)).toBeUndefined();
    expect(await collect(store.listIndexes())).toEqual([]);
    // Another prefix is another store.
    expect(await collect(open().listChunks())).toEqual([]);
  });

  it('refuses bad names and bytes that do not hash to the digest, storing nothing', async () => {
    const store = open();
    const a = chunk(100);
    expect((await rejection(store.put('abc', a.data))).code).toBe('KYB_ERR_INVALID_ARGUMENT');
    expect((await rejection(store.get('../x'))).code).toBe('KYB_ERR_INVALID_ARGUMENT');
    expect((await rejection(store.putIndex(a.digest, a.data))).code).toBe('KYB_ERR_INVALID_ARGUMENT');
    const wrong = await rejection(store.put(sha256(Buffer.from('other')), a.data));
    expect(wrong.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(wrong.message).toContain(a.digest);
    expect(await collect(store.listChunks())).toEqual([]);
  });

  it('lists past the first page of 1000 keys', async () => {
    const store = open();
    const chunks = Array.from({ length: 1010 }, (_, i) => chunk(16 + (i % 7)));
    await pool(32, chunks.map((c) => () => store.put(c.digest, c.data)));
    const listed = await collect(store.listChunks());
    expect(listed.length).toBe(1010);
    expect(new Set(listed.map((c) => c.digest))).toEqual(new Set(chunks.map((c) => c.digest)));
  });

  it('puts 200 chunks of 2 MiB in parallel and reads them back', async () => {
    const store = open();
    const chunks = Array.from({ length: 200 }, () => chunk(2 * MiB));
    let t = performance.now();
    await Promise.all(chunks.map((c) => store.put(c.digest, c.data)));
    const putS = (performance.now() - t) / 1000;
    t = performance.now();
    const back = await Promise.all(chunks.map((c) => store.get(c.digest)));
    const getS = (performance.now() - t) / 1000;
    back.forEach((b, i) => expect(b.equals(chunks[i].data)).toBe(true));
    expect((await collect(store.listChunks())).length).toBe(200);
    console.log(`s3-store: 200 x 2 MiB to radosgw: put ${(400 / putS).toFixed(0)} MiB/s, get ${(400 / getS).toFixed(0)} MiB/s`);
  }, 120_000);

  it('refuses a chunk whose stored bytes do not hash to its name, naming key and bucket', async () => {
    const store = open();
    const [a, b] = [chunk(5000), chunk(5000)];
    const key = `t${prefixes}/chunks/${a.digest}`;
    const raw = rawClient(s3);
    await raw.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: b.data }));
    // An index with bytes other than those its checksum was taken of.
    const id = anId();
    await store.putIndex(id, Buffer.from('{"files":[]}'));
    await raw.send(new PutObjectCommand({
      Bucket: s3.bucket, Key: `t${prefixes}/indexes/${id.slice(7)}.json`, Body: '{"files":[1]}',
      Metadata: { 'kyb-sha256': sha256(Buffer.from('{"files":[]}')) },
    }));
    raw.destroy();
    expect(await store.has(a.digest)).toBe(true);
    const err = await rejection(store.get(a.digest));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toContain(`s3://${s3.bucket}/${key}`);
    expect(err.message).toContain(b.digest);
    const bad = await rejection(store.getIndex(id));
    expect(bad.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(bad.message).toContain(id);
  });

  it('a body changed on the way is refused by the server (Content-MD5) and not stored', async () => {
    const store = open();
    const a = chunk(64 * 1024);
    // Flip a byte after the store computed its checksums, before the request is signed and sent.
    const client = (store as unknown as { client: S3Client }).client;
    client.middlewareStack.add((next) => async (args) => {
      const req = args.request as { body?: unknown };
      if (Buffer.isBuffer(req.body)) {
        const body = Buffer.from(req.body);
        body[0] ^= 0xff;
        req.body = body;
      }
      return next(args);
    }, { step: 'build', name: 'corruptBody' });
    const err = await rejection(store.put(a.digest, a.data));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toContain(s3.endpoint);
    client.middlewareStack.remove('corruptBody');
    expect(await store.has(a.digest)).toBe(false);
  });

  it('an unreachable server, wrong credentials and a missing bucket give their own codes', async () => {
    const gone = { ...s3, endpoint: 'http://127.0.0.1:9' };
    const unreachable = await rejection(open(gone, { maxAttempts: 2 }).has('0'.repeat(64)));
    expect(unreachable.code).toBe('KYB_ERR_UNAVAILABLE');
    expect(unreachable.message).toContain('http://127.0.0.1:9');
    const a = chunk(10);
    expect((await rejection(open(s3, { secretAccessKey: 'wrong' }).put(a.digest, a.data))).code).toBe('KYB_ERR_PERMISSION');
    const noBucket = await rejection(open(s3, { bucket: 'no-such-bucket' }).put(a.digest, a.data));
    expect(noBucket.code).toBe('KYB_ERR_NOT_FOUND');
    expect(noBucket.message).toContain('no-such-bucket');
  });

  describe('the server killed mid-transfer', () => {
    let own: S3Server;
    beforeAll(async () => {
      own = await startS3();
    });

    /** Starts `n` calls, SIGKILLs radosgw once the first has finished, and settles them all. */
    async function killDuring<T>(calls: (() => Promise<T>)[]): Promise<PromiseSettledResult<T>[]> {
      let first!: () => void;
      const firstDone = new Promise<void>((r) => { first = r; });
      const settled = Promise.allSettled(calls.map((c) => c().finally(() => first())));
      await firstDone;
      await own.kill();
      return settled;
    }

    function expectUnavailable(results: PromiseSettledResult<unknown>[]): number {
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      for (const f of failed) {
        expect(KybernateError.is(f.reason) && f.reason.code, String(f.reason)).toBe('KYB_ERR_UNAVAILABLE');
        expect((f.reason as Error).message).toContain(own.endpoint);
      }
      return failed.length;
    }

    it('mid-upload: failed puts say so; every chunk reported stored is there, no object is partial', async () => {
      const store = open(own, { maxAttempts: 2, timeoutMs: 5_000 });
      const chunks = Array.from({ length: 50 }, () => chunk(4 * MiB));
      const results = await killDuring(chunks.map((c) => () => store.put(c.digest, c.data)));
      const failed = expectUnavailable(results);
      expect(failed).toBeGreaterThan(0);
      expect(failed).toBeLessThan(50);
      await own.restart();
      const stored = chunks.filter((_, i) => results[i].status === 'fulfilled');
      for (const c of stored) expect((await store.get(c.digest)).equals(c.data)).toBe(true);
      // Whatever is visible (stored, or completed by the server before it died) is whole.
      const byDigest = new Map(chunks.map((c) => [c.digest, c.data]));
      const visible = await collect(store.listChunks());
      for (const o of visible) {
        expect(o.size).toBe(4 * MiB);
        expect((await store.get(o.digest)).equals(byDigest.get(o.digest)!)).toBe(true);
      }
      console.log(`s3-store: killed mid-upload: ${stored.length} of 50 puts reported stored, ${failed} failed, ${visible.length} visible after restart`);
    }, 120_000);

    it('mid-download: failed gets say so, no get returns wrong bytes, all are there after restart', async () => {
      const store = open(own, { maxAttempts: 2, timeoutMs: 5_000 });
      const chunks = Array.from({ length: 50 }, () => chunk(4 * MiB));
      await pool(16, chunks.map((c) => () => store.put(c.digest, c.data)));
      const results = await killDuring(chunks.map((c) => () => store.get(c.digest)));
      const failed = expectUnavailable(results);
      expect(failed).toBeGreaterThan(0);
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') expect(r.value.equals(chunks[i].data)).toBe(true);
      });
      await own.restart();
      for (const c of chunks) expect((await store.get(c.digest)).equals(c.data)).toBe(true);
      console.log(`s3-store: killed mid-download: ${50 - failed} of 50 gets done, ${failed} failed`);
    }, 120_000);
  });
});
