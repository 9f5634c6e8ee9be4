// Raw ttrpc frames over a unix socket, for sending what a well-behaved client (src/ttrpc) never would.
// Well-formed frames and Request envelopes come from src/ttrpc and the generated codecs; the callers
// hand-make only the deliberately broken bytes (bad payloads, oversized lengths, cut-off headers).
import net from 'node:net';
import { ttrpc } from '../../../src/gen/proto';
import { FrameDecoder, MessageType, encodeFrame, encodeHeader } from '../../../src/ttrpc';

export const REQUEST = MessageType.REQUEST;
export const RESPONSE = MessageType.RESPONSE;

/** A frame header alone; `length` may promise more (or less) than is ever sent, and may exceed the limit. */
export function header(length: number, streamId: number, type: number, flags = 0): Buffer {
  return encodeHeader({ length, streamId, type, flags });
}

/** A correctly framed payload; the payload and the type may still be nonsense. */
export function frame(streamId: number, type: number, payload: Uint8Array, flags = 0): Buffer {
  return encodeFrame(streamId, type, flags, payload);
}

export function requestFrame(streamId: number, service: string, method: string, payload: Uint8Array): Buffer {
  return frame(streamId, REQUEST, ttrpc.Request.encode({ service, method, payload }).finish());
}

export interface RawResponse { streamId: number; code: number; message: string; payload: Buffer }

/** A connection that collects Response frames by stream id. */
export class RawConn {
  private readonly decoder = new FrameDecoder();
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
    for (const r of this.decoder.write(d)) {
      // A server never sends oversized frames to us; if one did, the waiting test times out and says so.
      if (r.kind !== 'frame' || r.frame.type !== RESPONSE) continue;
      const res = ttrpc.Response.decode(r.frame.payload);
      this.responses.set(r.frame.streamId, {
        streamId: r.frame.streamId, code: res.status?.code ?? 0, message: res.status?.message ?? '',
        payload: Buffer.from(res.payload),
      });
    }
    this.wake?.();
  }
}
