// Parallel SHA-256 of byte ranges of files, on a short-lived pool of worker threads.
//
// Checkpoint images of GPU workloads are several GB (one pages-*.img holds the device memory), and restore
// verifies them before anything starts, so hashing is split into ranges of at most CHUNK_BYTES that the
// workers read with positional reads; the manifest's hash list (see manifest.ts) makes each range checkable
// on its own.
//
// Invariants:
// - The workers are created from an inline source string (eval: true): the shim and the CLI are bundled
//   into one CommonJS file each, so there is no separate worker file to load.
// - Every worker is terminated before hashRanges settles, on success and on failure: no thread outlives a
//   call to keep the process alive.
import os from 'node:os';
import { Worker } from 'node:worker_threads';

/** The unit of hashing, and the chunk size of the manifest's hash lists. */
export const CHUNK_BYTES = 64 * 1024 * 1024;

/** Threads per call: one per CPU the process may use, at most 16 (beyond that, memory bandwidth bounds). */
export const MAX_WORKERS = 16;

/**
 * Read size inside a worker: small enough that the bytes just copied are still in L2 when hashed. On the
 * 16-core GPU node 256 KiB verified 4 GiB ~5-10% faster than 1 or 4 MiB (noisy runs).
 */
const READ_BYTES = 256 * 1024;

/** A worker spawns only for at least this much work; below it, thread start-up costs more than it saves. */
const MIN_BYTES_PER_WORKER = 16 * 1024 * 1024;

export interface Range {
  path: string;
  offset: number;
  length: number;
}

// Plain JS, run as a CommonJS script inside each worker. A short read before `length` bytes means the file
// shrank under us: reported, never hashed as if complete.
const WORKER_SOURCE = `
'use strict';
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const buf = Buffer.allocUnsafe(${READ_BYTES});
parentPort.on('message', (t) => {
  let fd = -1;
  try {
    fd = fs.openSync(t.path, 'r');
    const h = crypto.createHash('sha256');
    let pos = t.offset;
    let left = t.length;
    while (left > 0) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, left), pos);
      if (n === 0) throw new Error(t.path + ': file ended at byte ' + pos + ', expected ' + (t.offset + t.length));
      h.update(n === buf.length ? buf : buf.subarray(0, n));
      pos += n;
      left -= n;
    }
    parentPort.postMessage({ id: t.id, hex: h.digest('hex') });
  } catch (e) {
    parentPort.postMessage({ id: t.id, error: String((e && e.message) || e), code: e && e.code });
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
});
`;

type Reply = { id: number; hex: string } | { id: number; error: string; code?: string };

/** Threads a call may use on this machine. */
export function poolSize(): number {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, Math.min(MAX_WORKERS, cpus));
}

/**
 * SHA-256 (hex) of each range, in the order given. `onDigest` sees each digest as soon as it is known (in
 * completion order); if it throws, hashing stops and the call rejects with that error, so a verifier fails
 * on the first bad chunk instead of reading GBs more.
 */
export async function hashRanges(
  ranges: readonly Range[],
  onDigest?: (index: number, hex: string) => void,
): Promise<string[]> {
  const digests = new Array<string>(ranges.length);
  if (ranges.length === 0) return digests;

  const total = ranges.reduce((sum, r) => sum + r.length, 0);
  const workers = Math.max(1, Math.min(poolSize(), ranges.length, Math.ceil(total / MIN_BYTES_PER_WORKER)));
  // Longest first: the last ranges handed out are the short ones, so the threads finish close together.
  const order = ranges.map((_, i) => i).sort((a, b) => ranges[b].length - ranges[a].length);

  const pool: Worker[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let next = 0;
      let done = 0;
      let failed = false;
      const fail = (err: unknown) => {
        if (!failed) {
          failed = true;
          reject(err);
        }
      };
      const feed = (w: Worker) => {
        if (failed || next >= order.length) return;
        const id = order[next++];
        const r = ranges[id];
        w.postMessage({ id, path: r.path, offset: r.offset, length: r.length });
      };
      for (let i = 0; i < workers; i++) {
        const w = new Worker(WORKER_SOURCE, { eval: true });
        pool.push(w);
        w.on('message', (m: Reply) => {
          if (failed) return;
          if ('error' in m) {
            const err = new Error(m.error) as NodeJS.ErrnoException;
            if (m.code) err.code = m.code;
            fail(err);
            return;
          }
          digests[m.id] = m.hex;
          try {
            onDigest?.(m.id, m.hex);
          } catch (err) {
            fail(err);
            return;
          }
          if (++done === ranges.length) resolve();
          else feed(w);
        });
        w.on('error', fail);
        w.on('exit', (code) => fail(new Error(`hash worker exited early (code ${code})`)));
        feed(w);
      }
    });
  } finally {
    // unref first: termination is asynchronous and must not hold the event loop open by itself.
    for (const w of pool) {
      w.removeAllListeners('exit');
      w.unref();
      void w.terminate();
    }
  }
  return digests;
}
