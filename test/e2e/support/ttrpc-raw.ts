// Raw ttrpc frames over a unix socket, for sending what a well-behaved client (src/ttrpc) never would.
// Frame layout: uint32 BE length | uint32 BE stream id | uint8 type | uint8 flags | payload.
import net from 'node:net';
import { ttrpc } from '../../../src/gen/proto';

export const REQUEST = 1;
export const RESPONSE = 2;

export function header(length: number, streamId: number, type: number, flags = 0): Buffer {
  const h = Buffer.alloc(10);
  h.writeUInt32BE(length, 0);
  h.writeUInt32BE(streamId, 4);
  h.writeUInt8(type, 8);
  h.writeUInt8(flags, 9);
  return h;
}

export function frame(streamId: number, type: number, payload: Uint8Array, flags = 0): Buffer {
  return Buffer.concat([header(payload.length, streamId, type, flags), payload]);
}

export function requestFrame(streamId: number, service: string, method: string, payload: Uint8Array): Buffer {
  return frame(streamId, REQUEST, ttrpc.Request.encode({ service, method, payload }).finish());
}

export interface RawResponse { streamId: number; code: number; message: string; payload: Buffer }

/** A connection that collects Response frames by stream id. */
export class RawConn {
  private buf: Buffer = Buffer.alloc(0);
  private readonly responses = new Map<number, RawResponse>();
  private wake: (() => void) | undefined;
  closed = false;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => { /* reported as closed */ });
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  static connect(path: string): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new RawConn(sock));
      });
    });
  }

  write(data: Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      if (this.sock.destroyed) {
        resolve();
        return;
      }
      // A peer that hangs up mid-write is a legitimate outcome here; the caller checks `closed`.
      this.sock.write(data, () => resolve());
    });
  }

  end(): void {
    this.sock.end();
  }

  destroy(): void {
    this.sock.destroy();
  }

  /** The response on `streamId`, or 'closed' when the peer hangs up first; throws after the deadline. */
  async response(streamId: number, timeoutMs = 10_000): Promise<RawResponse | 'closed'> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.responses.get(streamId);
      if (r) return r;
      if (this.closed) return 'closed';
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response on stream ${streamId} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 10) {
      const len = this.buf.readUInt32BE(0);
      if (this.buf.length < 10 + len) break;
      const streamId = this.buf.readUInt32BE(4);
      const type = this.buf.readUInt8(8);
      const payload = this.buf.subarray(10, 10 + len);
      this.buf = this.buf.subarray(10 + len);
      if (type === RESPONSE) {
        const res = ttrpc.Response.decode(payload);
        this.responses.set(streamId, {
          streamId, code: res.status?.code ?? 0, message: res.status?.message ?? '', payload: Buffer.from(res.payload),
        });
      }
    }
    this.wake?.();
  }
}
