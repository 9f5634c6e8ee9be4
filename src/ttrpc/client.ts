// ttrpc client: one connection, odd increasing stream ids, any number of concurrent calls matched to
// their responses by stream id.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import Long from 'long';
import type protobuf from 'protobufjs/minimal';
import { Status, StatusError } from '../errors';
import { ttrpc } from '../gen/proto';
import { Connection } from './connection';
import { strictReader } from './request-codec';
import { MAX_MESSAGE_SIZE, MessageType, metadataToPairs, oversizeMessage, type Frame, type FrameHeader } from './protocol';

export interface ClientOptions {
  maxMessageSize?: number;
}

export interface CallOptions {
  /** Sent as timeout_nano; the call rejects locally with DEADLINE_EXCEEDED when it passes. */
  timeoutMs?: number;
  metadata?: Record<string, string | string[]>;
  /** Rejects the call locally with CANCELLED; ttrpc has no way to tell the server. */
  signal?: AbortSignal;
}

/** A protobufjs generated class as seen by the client: encodes requests, decodes responses. */
export interface Encoder<T> { encode(message: T): { finish(): Uint8Array } }
export interface Decoder<T> { decode(bytes: Uint8Array | protobuf.Reader): T }

interface Pending {
  resolve(payload: Buffer): void;
  reject(err: StatusError): void;
}

const MAX_STREAM_ID = 0xffffffff;
// setTimeout fires after 1 ms for delays above this, so longer deadlines are only sent, not armed locally.
const MAX_TIMER_MS = 2 ** 31 - 1;

export class TtrpcClient extends EventEmitter<{ close: [err: Error | undefined] }> {
  private readonly conn: Connection;
  private readonly pending = new Map<number, Pending>();
  private nextStreamId = 1;
  private closing: Promise<void> | undefined;
  private markClosed!: () => void;
  private readonly closed: Promise<void>;

  /** Wraps a connected socket. */
  constructor(socket: net.Socket, opts: ClientOptions = {}) {
    super();
    this.closed = new Promise((resolve) => { this.markClosed = resolve; });
    this.conn = new Connection(socket, {
      frame: (f) => this.onFrame(f),
      oversize: (h) => this.onOversize(h),
      end: () => {},
      close: (err) => this.onClose(err),
    }, opts.maxMessageSize ?? MAX_MESSAGE_SIZE);
  }

  /** Dials a unix socket; rejects with the socket error (ENOENT, ECONNREFUSED, ...) when it cannot connect. */
  static connect(path: string, opts: ClientOptions = {}): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new TtrpcClient(sock, opts));
      });
    });
  }

  /** Calls still waiting for their response. */
  get pendingCalls(): number {
    return this.pending.size;
  }

  get isClosed(): boolean {
    return this.conn.isClosed;
  }

  /** One unary call on raw payload bytes. Rejects with StatusError only. */
  call(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Buffer> {
    if (this.closing || this.conn.isClosed) return Promise.reject(closedError());
    if (this.nextStreamId > MAX_STREAM_ID) {
      return Promise.reject(new StatusError(Status.RESOURCE_EXHAUSTED, 'ttrpc: stream ids exhausted'));
    }
    if (opts.signal?.aborted) return Promise.reject(cancelledError());
    const req: ttrpc.IRequest = { service, method };
    if (payload.length > 0) req.payload = payload;
    if (opts.timeoutMs !== undefined) req.timeoutNano = Long.fromNumber(Math.max(1, Math.round(opts.timeoutMs * 1e6)));
    if (opts.metadata) req.metadata = metadataToPairs(opts.metadata);
    const bytes = ttrpc.Request.encode(req).finish();
    if (bytes.length > this.conn.maxMessageSize) {
      return Promise.reject(new StatusError(Status.RESOURCE_EXHAUSTED,
        oversizeMessage(bytes.length, this.conn.maxMessageSize)));
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    return new Promise<Buffer>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => settle(cancelledError());
      const settle = (result: Buffer | StatusError) => {
        if (this.pending.get(id) !== entry) return;
        this.pending.delete(id);
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (result instanceof StatusError) reject(result);
        else resolve(result);
        if (this.closing && this.pending.size === 0) this.conn.end();
      };
      const entry: Pending = { resolve: settle, reject: settle };
      this.pending.set(id, entry);
      if (opts.timeoutMs !== undefined && opts.timeoutMs <= MAX_TIMER_MS) {
        timer = setTimeout(() => settle(new StatusError(Status.DEADLINE_EXCEEDED, 'context deadline exceeded')),
          opts.timeoutMs);
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      if (!this.conn.send(id, MessageType.REQUEST, 0, bytes)) settle(closedError());
    });
  }

  /** One unary call with protobufjs generated request and response classes. */
  async request<Req, Res>(service: string, method: string, requestType: Encoder<Req>, responseType: Decoder<Res>,
    message: Req, opts?: CallOptions): Promise<Res> {
    const payload = await this.call(service, method, requestType.encode(message).finish(), opts);
    try {
      return responseType.decode(strictReader(payload));
    } catch (err) {
      throw new StatusError(Status.INTERNAL, `ttrpc: cannot decode ${service}/${method} response: ${(err as Error).message}`);
    }
  }

  /** Refuses new calls, waits for pending ones to settle, then closes the connection. Idempotent. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = this.closed;
      if (this.pending.size === 0) this.conn.end();
    }
    return this.closing;
  }

  /** Closes the connection now; pending calls reject with UNAVAILABLE. */
  destroy(): void {
    this.conn.destroy();
  }

  private onFrame(frame: Frame): void {
    if (frame.type !== MessageType.RESPONSE) return; // server-initiated streams are not supported
    const entry = this.pending.get(frame.streamId);
    if (!entry) return; // a call that already timed out or was cancelled
    let res: ttrpc.Response;
    try {
      res = ttrpc.Response.decode(strictReader(frame.payload));
    } catch (err) {
      entry.reject(new StatusError(Status.INTERNAL, `ttrpc: bad response: ${(err as Error).message}`));
      return;
    }
    if (res.status && res.status.code !== 0) {
      entry.reject(new StatusError(res.status.code ?? Status.UNKNOWN, res.status.message ?? ''));
      return;
    }
    entry.resolve(Buffer.from(res.payload.buffer, res.payload.byteOffset, res.payload.length));
  }

  private onOversize(h: FrameHeader): void {
    this.pending.get(h.streamId)?.reject(
      new StatusError(Status.RESOURCE_EXHAUSTED, oversizeMessage(h.length, this.conn.maxMessageSize)));
  }

  private onClose(err: Error | undefined): void {
    for (const entry of [...this.pending.values()]) entry.reject(closedError());
    this.markClosed();
    this.emit('close', err);
  }
}

function closedError(): StatusError {
  return new StatusError(Status.UNAVAILABLE, 'ttrpc: closed');
}

function cancelledError(): StatusError {
  return new StatusError(Status.CANCELLED, 'context canceled');
}
