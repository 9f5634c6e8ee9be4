// Chunking throughput (not a test: `npx vite-node test/storage/chunker-throughput.ts [MiB]`). Prints MB/s
// on one core for cut points alone and for cut points plus each chunk's sha256; for chunkFile over a file
// in the page cache (its sha256s run on the libuv pool); for packSnapshot into a DiskChunkStore (every
// chunk new: written and fsynced; then again, every chunk already stored: chunking and the manifest check
// only) and unpackSnapshot; and the chunk sizes seen.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { chunkFile, chunkLengths } from '../../src/storage/chunker';
import { DiskChunkStore } from '../../src/storage/disk-store';
import { packSnapshot, unpackSnapshot } from '../../src/storage/pack';
import { makeSnapshot } from './helpers';

const MiB = 1024 * 1024;
const size = Number(process.argv[2] ?? 512) * MiB;
const data = crypto.randomBytes(size);

const rate = (bytes: number, ms: number) => `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;

async function main(): Promise<void> {
  chunkLengths(data.subarray(0, 64 * MiB)); // warm up the JIT
  let t = performance.now();
  const lengths = chunkLengths(data);
  const cutMs = performance.now() - t;

  t = performance.now();
  for (let pos = 0, i = 0; i < lengths.length; pos += lengths[i++]) crypto.createHash('sha256').update(data.subarray(pos, pos + lengths[i])).digest();
  const shaMs = performance.now() - t;

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-chunk-bench-'));
  const file = path.join(dir, 'data');
  fs.writeFileSync(file, data);
  try {
    t = performance.now();
    let n = 0;
    for await (const c of chunkFile(file)) n += c.size;
    const fileMs = performance.now() - t;
    if (n !== size) throw new Error(`chunked ${n} of ${size} bytes`);
    const sorted = [...lengths].sort((a, b) => a - b);
    const mean = size / lengths.length;
    console.log(`${size / MiB} MiB random, ${lengths.length} chunks: mean ${(mean / MiB).toFixed(2)} MiB, ` +
      `min ${(sorted[0] / MiB).toFixed(2)}, median ${(sorted[sorted.length >> 1] / MiB).toFixed(2)}, max ${(sorted[sorted.length - 1] / MiB).toFixed(2)}`);
    console.log(`cut points only:             ${rate(size, cutMs)}`);
    console.log(`sha256 of the chunks only:   ${rate(size, shaMs)}`);
    console.log(`cut points + sha256:         ${rate(size, cutMs + shaMs)}`);
    console.log(`chunkFile (page cache):      ${rate(size, fileMs)}`);

    const snap = path.join(dir, 'snap');
    fs.mkdirSync(snap);
    fs.renameSync(file, path.join(snap, 'pages-1.img'));
    const id = await makeSnapshot(snap, {});
    const store = await DiskChunkStore.open(path.join(dir, 'store'));
    t = performance.now();
    const first = await packSnapshot(snap, store);
    console.log(`packSnapshot, all new:       ${rate(size, performance.now() - t)} (${first.newBytes} new bytes, written and fsynced)`);
    t = performance.now();
    const again = await packSnapshot(snap, store);
    console.log(`packSnapshot, all stored:    ${rate(size, performance.now() - t)} (${again.newBytes} new bytes)`);
    t = performance.now();
    await unpackSnapshot(id, store, path.join(dir, 'out'));
    console.log(`unpackSnapshot:              ${rate(size, performance.now() - t)}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main();
