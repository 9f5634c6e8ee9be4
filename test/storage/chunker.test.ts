// FastCDC chunking: the same bytes give the same chunks whatever the read size, sizes stay within
// min/max, and an insertion moves only the cut points near it.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chunkFile, chunkLengths, type Chunk, type ChunkerOptions } from '../../src/storage/chunker';
import { KiB, MiB, collect, rejection, removeTmps, seededBytes, sha256, tmpDir } from './helpers';

afterAll(removeTmps);
const dir = tmpDir('chunker');
let n = 0;
function fileOf(data: Buffer): string {
  const f = path.join(dir, `f${n++}`);
  fs.writeFileSync(f, data);
  return f;
}
const summary = (cs: Chunk[]) => cs.map((c) => `${c.offset}+${c.size}:${c.digest}`);
const SMALL: ChunkerOptions = { minSize: 4 * KiB, avgSize: 16 * KiB, maxSize: 64 * KiB };

describe('chunkFile', () => {
  it('cuts the same bytes the same way whatever the read size (default sizes, 40 MiB)', async () => {
    const data = seededBytes(40 * MiB, 'determinism');
    const file = fileOf(data);
    const ref = await collect(chunkFile(file));
    expect(ref.length).toBeGreaterThan(5);
    for (const readSize of [MiB, 3 * MiB + 7, 8 * MiB, 64 * MiB]) {
      expect(summary(await collect(chunkFile(file, { readSize }))), `readSize ${readSize}`).toEqual(summary(ref));
    }
    expect(ref.map((c) => c.size)).toEqual(chunkLengths(data));
  });

  it('cuts the same way with small chunks and tiny odd reads', async () => {
    const data = seededBytes(3 * MiB, 'small');
    const file = fileOf(data);
    const ref = await collect(chunkFile(file, SMALL));
    expect(ref.length).toBeGreaterThan(50);
    for (const readSize of [1000, 4097, 65 * KiB, 5 * MiB]) {
      expect(summary(await collect(chunkFile(file, { ...SMALL, readSize }))), `readSize ${readSize}`).toEqual(summary(ref));
    }
  });

  it('yields contiguous chunks whose digest is the sha256 of their bytes, and reassemble the file', async () => {
    const data = seededBytes(5 * MiB + 123, 'contiguous');
    const chunks = await collect(chunkFile(fileOf(data), SMALL));
    let at = 0;
    for (const c of chunks) {
      expect(c.offset).toBe(at);
      expect(c.data.length).toBe(c.size);
      expect(c.digest).toBe(sha256(c.data));
      at += c.size;
    }
    expect(Buffer.concat(chunks.map((c) => c.data)).equals(data)).toBe(true);
  });

  it('respects min and max: every chunk but the last is within them; uniform bytes are cut at max', async () => {
    for (const [opts, data] of [
      [SMALL, seededBytes(4 * MiB, 'minmax')],
      [{}, seededBytes(48 * MiB, 'minmax-default')],
    ] as Array<[ChunkerOptions, Buffer]>) {
      const min = opts.minSize ?? 512 * KiB;
      const max = opts.maxSize ?? 8 * MiB;
      const sizes = chunkLengths(data, opts);
      for (const s of sizes.slice(0, -1)) {
        expect(s).toBeGreaterThanOrEqual(min);
        expect(s).toBeLessThanOrEqual(max);
      }
      const mean = data.length / sizes.length;
      expect(mean).toBeGreaterThan((opts.avgSize ?? 2 * MiB) / 2);
      expect(mean).toBeLessThan((opts.avgSize ?? 2 * MiB) * 2);
    }
    const zeros = chunkLengths(Buffer.alloc(20 * MiB));
    expect(zeros).toEqual([8 * MiB, 8 * MiB, 4 * MiB]);
  });

  it('moves only the cut points near an insertion: most chunks are shared', async () => {
    const data = seededBytes(64 * MiB, 'insert');
    const edited = Buffer.concat([data.subarray(0, 100 * KiB), seededBytes(777, 'inserted'), data.subarray(100 * KiB)]);
    const a = await collect(chunkFile(fileOf(data)));
    const b = await collect(chunkFile(fileOf(edited)));
    const inA = new Set(a.map((c) => c.digest));
    const shared = b.filter((c) => inA.has(c.digest));
    // Only the chunk holding the insertion differs (the cut after it resynchronises).
    expect(shared.length).toBeGreaterThanOrEqual(b.length - 2);
    expect(b.length - shared.length).toBeGreaterThanOrEqual(1);
    expect(b.at(-1)?.digest).toBe(a.at(-1)?.digest);
  });

  it('gives no chunk for an empty file and one for a file below min', async () => {
    expect(await collect(chunkFile(fileOf(Buffer.alloc(0))))).toEqual([]);
    const small = await collect(chunkFile(fileOf(Buffer.from('hello'))));
    expect(small.map((c) => [c.offset, c.size, c.digest])).toEqual([[0, 5, sha256(Buffer.from('hello'))]]);
  });

  it('refuses sizes that make no sense (KYB_ERR_INVALID_ARGUMENT)', async () => {
    for (const bad of [{ avgSize: 3 * MiB }, { minSize: 4 * MiB }, { maxSize: MiB }, { readSize: 0 }]) {
      const err = await rejection(collect(chunkFile(fileOf(Buffer.from('x')), bad)));
      expect(err.code, JSON.stringify(bad)).toBe('KYB_ERR_INVALID_ARGUMENT');
    }
  });
});
