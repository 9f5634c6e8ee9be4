// Content-defined chunking (FastCDC: Xia et al., USENIX ATC 2016), so that successive snapshots of one
// workload and replicas of one model share their chunks even where bytes were inserted or removed.
//
// Invariants:
// - A cut point depends only on the bytes of the chunk being cut: the gear hash restarts at each chunk
//   (from its minSize-th byte: the paper's cut-point skipping), and a cut is decided only once `maxSize`
//   bytes past the chunk's start (or the end of the file) are in memory. The same bytes therefore give the same chunks whatever the read block size.
// - GEAR and the mask layout are part of the stored format: changing either changes every cut point, which
//   loses dedup against chunks stored before (never correctness: chunks are named by their sha256).
// - The gear hash is 32-bit: bit k of it depends on the last k+1 bytes, so the masks use the top bits, which
//   see a window of up to 32 bytes. Int32 arithmetic keeps V8 on small integers in the inner loop (a
//   Uint32Array read above 2^31 would be a heap number).
import crypto from 'node:crypto';
import fs from 'node:fs';
import { KybernateError } from '../errors';

export interface ChunkerOptions {
  /** No cut before this many bytes (the last chunk of a file may be shorter). Default 512 KiB. */
  minSize?: number;
  /** The expected chunk size, a power of two. Default 2 MiB. */
  avgSize?: number;
  /** A cut is forced here. Default 8 MiB. */
  maxSize?: number;
  /** Bytes per read. Default 16 MiB. Does not change the cut points. */
  readSize?: number;
}

export interface Chunk {
  /** Offset of the chunk's first byte in the file. */
  offset: number;
  size: number;
  /** sha256 (hex) of `data`. */
  digest: string;
  /** The chunk's own bytes (copied out of the read window: it may be kept). */
  data: Buffer;
}

const KiB = 1024;
const MiB = 1024 * KiB;
export const DEFAULT_CHUNKER: Required<ChunkerOptions> = { minSize: 512 * KiB, avgSize: 2 * MiB, maxSize: 8 * MiB, readSize: 16 * MiB };

/** Normalization level 2 (the paper's choice): 2 more mask bits before avgSize, 2 fewer after. */
const NORMALIZATION = 2;

/** 256 pseudo-random int32s, from sha256 so that they are the same everywhere, forever (see above). */
const GEAR = (() => {
  const t = new Int32Array(256);
  for (let i = 0; i < 256; i++) t[i] = crypto.createHash('sha256').update(`kybernate-gear-${i}`).digest().readInt32LE(0);
  return t;
})();

/** A mask of the top `bits` bits of an int32. */
const topBits = (bits: number) => (bits >= 32 ? -1 : ~((1 << (32 - bits)) - 1));

interface Params { min: number; avg: number; max: number; maskS: number; maskL: number }

function params(opts: ChunkerOptions): Params & { readSize: number } {
  const o = { ...DEFAULT_CHUNKER, ...opts };
  const bits = Math.log2(o.avgSize);
  const ok = Number.isInteger(bits) && bits >= 6 && bits + NORMALIZATION <= 32
    && Number.isSafeInteger(o.minSize) && o.minSize >= 1 && o.minSize < o.avgSize
    && Number.isSafeInteger(o.maxSize) && o.maxSize > o.avgSize && o.maxSize <= 1024 * MiB
    && Number.isSafeInteger(o.readSize) && o.readSize >= 1;
  if (!ok) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `chunker: need min < avg < max, avg a power of two from 64 bytes, ` +
      `max at most 1 GiB, readSize >= 1 (got ${JSON.stringify(opts)})`);
  }
  return {
    min: o.minSize, avg: o.avgSize, max: o.maxSize, readSize: o.readSize,
    maskS: topBits(bits + NORMALIZATION), maskL: topBits(bits - NORMALIZATION),
  };
}

/**
 * The length of the chunk that starts at `start`, given the bytes up to `end` (exclusive). The caller
 * passes end = start + max, or the end of the data when less remains.
 */
function cutLength(buf: Uint8Array, start: number, end: number, p: Params): number {
  const n = end - start;
  if (n <= p.min) return n;
  const gear = GEAR;
  const normal = start + Math.min(p.avg, n);
  const maskS = p.maskS;
  const maskL = p.maskL;
  // Cut-point skipping: the first min bytes are never hashed.
  let h = 0;
  let i = start + p.min;
  for (; i < normal; i++) {
    h = ((h << 1) + gear[buf[i]]) | 0;
    if ((h & maskS) === 0) return i + 1 - start;
  }
  for (; i < end; i++) {
    h = ((h << 1) + gear[buf[i]]) | 0;
    if ((h & maskL) === 0) return i + 1 - start;
  }
  return n;
}

/** The cut points of bytes fully in memory (tests, tools): the lengths of their chunks, in order. */
export function chunkLengths(data: Uint8Array, opts: ChunkerOptions = {}): number[] {
  const p = params(opts);
  const out: number[] = [];
  for (let pos = 0; pos < data.length;) {
    const len = cutLength(data, pos, Math.min(data.length, pos + p.max), p);
    out.push(len);
    pos += len;
  }
  return out;
}

/** Chunks cut ahead of the one yielded, their sha256 computing on the libuv pool meanwhile (memory: up to 9 x maxSize). */
const HASH_AHEAD = 8;

interface Cut { offset: number; size: number; data: Buffer; digest: Promise<ArrayBuffer> }

const finish = async (c: Cut): Promise<Chunk> =>
  ({ offset: c.offset, size: c.size, data: c.data, digest: Buffer.from(await c.digest).toString('hex') });

/**
 * The chunks of a file, in order, streamed: one window of readSize + maxSize bytes and one read buffer,
 * both reused, with the next read in flight while the window is cut. Each chunk's bytes are copied out of
 * the window (a chunk may be kept) and hashed off the main thread (WebCrypto runs on the libuv pool), so
 * the main thread does little more than the gear loop. A file that shrinks while read simply ends early:
 * the caller checks sizes and digests.
 */
export async function* chunkFile(file: string, opts: ChunkerOptions = {}): AsyncGenerator<Chunk> {
  const p = params(opts);
  const window = Buffer.allocUnsafeSlow(p.readSize + p.max);
  const block = Buffer.allocUnsafeSlow(p.readSize);
  const fh = await fs.promises.open(file, 'r');
  let pending: Promise<number> | undefined;
  const cuts: Cut[] = [];
  try {
    const read = async (at: number): Promise<number> => {
      let got = 0;
      while (got < block.length) {
        const { bytesRead } = await fh.read(block, got, block.length - got, at + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got;
    };
    let filled = 0; // bytes of the window in use, from its start
    let offset = 0; // file offset of window[0]
    let ended = false;
    pending = read(0);
    while (!ended || filled > 0) {
      if (!ended) {
        const got: number = await (pending as Promise<number>);
        pending = undefined;
        block.copy(window, filled, 0, got);
        filled += got;
        ended = got < block.length;
        if (!ended) pending = read(offset + filled);
      }
      let pos = 0;
      while (filled - pos >= p.max || (ended && pos < filled)) {
        const size = cutLength(window, pos, Math.min(filled, pos + p.max), p);
        const data = Buffer.allocUnsafeSlow(size);
        window.copy(data, 0, pos, pos + size);
        cuts.push({ offset: offset + pos, size, data, digest: crypto.subtle.digest('SHA-256', data) });
        pos += size;
        if (cuts.length > HASH_AHEAD) yield await finish(cuts.shift() as Cut);
      }
      window.copyWithin(0, pos, filled);
      filled -= pos;
      offset += pos;
    }
    while (cuts.length > 0) yield await finish(cuts.shift() as Cut);
  } finally {
    // A consumer that stops early must not close the file under a read still in flight, nor leave a
    // digest's rejection unhandled.
    for (const c of cuts) c.digest.catch(() => undefined);
    await pending?.catch(() => undefined);
    await fh.close();
  }
}
