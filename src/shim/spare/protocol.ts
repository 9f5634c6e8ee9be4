// The wire between the native front (native/front/, installed as containerd-shim-kybernate-v2) and a warm
// spare shim daemon (spare.ts). One request and one answer per connection, over a root-only unix socket.
//
// All integers are unsigned 32-bit big-endian; a "str" or "bytes" is a u32 length then that many bytes.
//   request:  "KYBS" u32 version(1) str build  str cwd  u32 argc  argc×str  u32 envc  envc×str("K=V")  bytes stdin
//   answer:   "KYBR" u32 kind
//             kind 0 (done):      u32 exitCode  bytes stdout  bytes stderr   the front writes both and exits
//             kind 1 (fall back): str reason                                 the front execs Node's path as if
//                                                                           there were no spare
// argv is the front's argv without argv[0] (flags, then the action). A request larger than MAX_FRAME is
// refused. Invariant: an answer of kind 1 means the spare changed nothing, so running the Node path next
// is always safe; kind 0 is final.
export const REQUEST_MAGIC = 'KYBS';
export const ANSWER_MAGIC = 'KYBR';
export const PROTOCOL_VERSION = 1;
export const MAX_FRAME = 16 << 20;

export const ANSWER_DONE = 0;
export const ANSWER_FALL_BACK = 1;

export interface SpareRequest {
  build: string;
  cwd: string;
  argv: string[];
  env: string[];
  stdin: Buffer;
}

export type SpareAnswer =
  | { kind: typeof ANSWER_DONE; exitCode: number; stdout: Buffer; stderr: Buffer }
  | { kind: typeof ANSWER_FALL_BACK; reason: string };

class Writer {
  private readonly parts: Buffer[] = [];
  u32(n: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    this.parts.push(b);
    return this;
  }
  bytes(b: Buffer | string): this {
    const buf = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
    this.u32(buf.length);
    this.parts.push(buf);
    return this;
  }
  raw(s: string): this {
    this.parts.push(Buffer.from(s, 'latin1'));
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** Thrown for a frame that is not (yet) whole; `incomplete` tells a short read from garbage. */
export class FrameError extends Error {
  constructor(message: string, readonly incomplete = false) {
    super(message);
  }
}

class Reader {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.off + n > this.buf.length) throw new FrameError('frame ends early', true);
  }
  magic(expected: string): void {
    this.need(4);
    const got = this.buf.toString('latin1', this.off, this.off + 4);
    if (got !== expected) throw new FrameError(`bad magic ${JSON.stringify(got)}`);
    this.off += 4;
  }
  u32(): number {
    this.need(4);
    const n = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return n;
  }
  bytes(): Buffer {
    const n = this.u32();
    if (n > MAX_FRAME) throw new FrameError(`field of ${n} bytes is too large`);
    this.need(n);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  str(): string {
    return this.bytes().toString('utf8');
  }
  list(): string[] {
    const n = this.u32();
    if (n > 65_536) throw new FrameError(`list of ${n} entries is too long`);
    return Array.from({ length: n }, () => this.str());
  }
  get length(): number {
    return this.off;
  }
}

export function encodeRequest(r: SpareRequest): Buffer {
  const w = new Writer().raw(REQUEST_MAGIC).u32(PROTOCOL_VERSION).bytes(r.build).bytes(r.cwd).u32(r.argv.length);
  for (const a of r.argv) w.bytes(a);
  w.u32(r.env.length);
  for (const e of r.env) w.bytes(e);
  return w.bytes(r.stdin).done();
}

/** Decodes a whole request; FrameError(incomplete) when more bytes are needed. */
export function decodeRequest(buf: Buffer): SpareRequest {
  const r = new Reader(buf);
  r.magic(REQUEST_MAGIC);
  const version = r.u32();
  if (version !== PROTOCOL_VERSION) throw new FrameError(`protocol version ${version}, want ${PROTOCOL_VERSION}`);
  const req = { build: r.str(), cwd: r.str(), argv: r.list(), env: r.list(), stdin: Buffer.from(r.bytes()) };
  if (r.length !== buf.length) throw new FrameError(`${buf.length - r.length} bytes after the request`);
  return req;
}

export function encodeAnswer(a: SpareAnswer): Buffer {
  const w = new Writer().raw(ANSWER_MAGIC).u32(a.kind);
  if (a.kind === ANSWER_DONE) return w.u32(a.exitCode).bytes(a.stdout).bytes(a.stderr).done();
  return w.bytes(a.reason).done();
}

export function decodeAnswer(buf: Buffer): SpareAnswer {
  const r = new Reader(buf);
  r.magic(ANSWER_MAGIC);
  const kind = r.u32();
  if (kind === ANSWER_DONE) return { kind, exitCode: r.u32(), stdout: Buffer.from(r.bytes()), stderr: Buffer.from(r.bytes()) };
  if (kind === ANSWER_FALL_BACK) return { kind, reason: r.str() };
  throw new FrameError(`unknown answer kind ${kind}`);
}
