// Shared test helpers: temp socket paths, a raw frame-level peer, and a seeded PRNG.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FrameDecoder, encodeFrame, type Frame, type FrameHeader } from '../../src/ttrpc';
import { ttrpc } from '../../src/gen/proto';

/** A fresh directory under os.tmpdir() and a socket path inside it; cleanup() removes both. */
export function tempSocket(): { path: string; cleanup(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
  return { path: path.join(dir, 's.sock'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A socket that speaks frames directly, for sending what a well-behaved client never would. */
export class RawPeer {
  readonly frames: Frame[] = [];
  readonly oversized: FrameHeader[] = [];
  private readonly decoder = new FrameDecoder();
  private waiters: (() => void)[] = [];
  closed = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const r of this.decoder.write(chunk)) {
        if (r.kind === 'frame') this.frames.push(r.frame);
        else this.oversized.push(r.header);
      }
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => { this.closed = true; this.wake(); });
  }

  static connect(p: string): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(p);
      s.once('error', reject);
      s.once('connect', () => { s.off('error', reject); resolve(new RawPeer(s)); });
    });
  }

  /** Writes bytes and waits until the socket has taken them (so callers cannot outrun the kernel buffer). */
  write(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.write(bytes, (err) => { if (err) reject(err); })) resolve();
      else this.socket.once('drain', resolve);
    });
  }

  sendRequest(streamId: number, req: ttrpc.IRequest): Promise<void> {
    return this.write(encodeFrame(streamId, 1, 0, ttrpc.Request.encode(req).finish()));
  }

  /** Resolves with the first received frame on `streamId` (removing it), or rejects if the socket closes first. */
  async next(streamId: number): Promise<Frame> {
    for (;;) {
      const i = this.frames.findIndex((f) => f.streamId === streamId);
      if (i >= 0) return this.frames.splice(i, 1)[0]!;
      if (this.closed) throw new Error(`socket closed before a frame on stream ${streamId}`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Waits until `n` frames have arrived (or the socket closes). */
  async waitFrames(n: number): Promise<void> {
    while (this.frames.length < n && !this.closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Decodes the Response frame that arrives on `streamId`. */
  async response(streamId: number): Promise<ttrpc.Response> {
    const f = await this.next(streamId);
    if (f.type !== 2) throw new Error(`frame type ${f.type} on stream ${streamId}`);
    return ttrpc.Response.decode(f.payload);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** A deferred promise. */
export function deferred<T = void>(): { promise: Promise<T>; resolve(v: T): void; reject(e: unknown): void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/** Deterministic xorshift32 PRNG so a failing fuzz run can be replayed. */
export function prng(seed: number): { int(max: number): number; bytes(n: number): Buffer } {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x;
  };
  return {
    int: (max) => next() % max,
    bytes: (n) => {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) b[i] = next() & 0xff;
      return b;
    },
  };
}

/** Lets pending I/O and timers run a few event-loop turns. */
export async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}
