// The server side of one connection: validates stream ids, runs each Request concurrently and answers
// each on its own stream as its handler settles.
import type { Socket } from 'node:net';
import { KybernateError, Status, toStatus } from '../errors';
import { google, ttrpc } from '../gen/proto';
import { Connection } from './connection';
import { WireError, decodeRequest, type WireRequest } from './request-codec';
import { MessageType, metadataFromPairs, oversizeMessage, type Frame, type FrameHeader, type Metadata } from './protocol';

/** What a handler learns about its call. `signal` aborts on timeout_nano expiry or when the connection closes. */
export interface CallContext {
  service: string;
  method: string;
  streamId: number;
  metadata: Metadata;
  signal: AbortSignal;
}

/** A method handler on raw payload bytes; what it throws is mapped by toStatus(). */
export type RawHandler = (payload: Buffer, ctx: CallContext) => Promise<Uint8Array> | Uint8Array;

/** Finds the handler for a call; throws a KYB_ERR_UNIMPLEMENTED error naming what is missing. */
export type HandlerLookup = (service: string, method: string) => RawHandler;

/** The subset of a pino logger the server uses. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

// setTimeout fires after 1 ms for delays above this, so longer deadlines are left unarmed.
const MAX_TIMER_MS = 2 ** 31 - 1;

export class ServerConnection {
  private readonly conn: Connection;
  private readonly inflight = new Map<number, AbortController>();
  private lastStreamId = 0;
  private draining = false;
  private peerEnded = false;
  /** Settles when the socket has closed. */
  readonly closed: Promise<void>;
  private markClosed!: () => void;

  constructor(socket: Socket, private readonly lookup: HandlerLookup, maxMessageSize: number,
    private readonly logger?: Logger) {
    this.closed = new Promise((resolve) => { this.markClosed = resolve; });
    this.conn = new Connection(socket, {
      frame: (f) => this.onFrame(f),
      oversize: (h) => this.onOversize(h),
      end: () => { this.peerEnded = true; this.endIfIdle(); },
      close: (err) => this.onClose(err),
    }, maxMessageSize);
  }

  /** Number of handlers still running on this connection. */
  get active(): number {
    return this.inflight.size;
  }

  /** Refuses new requests, lets running handlers answer, then ends the connection. */
  drain(): void {
    this.draining = true;
    this.endIfIdle();
  }

  destroy(): void {
    this.conn.destroy();
  }

  private onFrame(frame: Frame): void {
    switch (frame.type) {
      case MessageType.REQUEST:
        this.onRequest(frame);
        return;
      case MessageType.DATA:
        // Every method here is unary: data for a running call is ignored, as Go does for unary streams.
        if (!this.inflight.has(frame.streamId)) {
          this.sendStatus(frame.streamId, Status.INVALID_ARGUMENT, 'StreamID is no longer active');
        }
        return;
      default:
        return; // unknown and Response frames are ignored for forward compatibility
    }
  }

  private onOversize(h: FrameHeader): void {
    this.sendStatus(h.streamId, Status.RESOURCE_EXHAUSTED, oversizeMessage(h.length, this.conn.maxMessageSize));
  }

  // The order of checks is containerd/ttrpc's (server.go): the stream id is checked and used up before the
  // payload is unmarshalled, so a rejected Request's id cannot be used again either.
  private onRequest(frame: Frame): void {
    const id = frame.streamId;
    if (id % 2 !== 1) {
      this.sendStatus(id, Status.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams');
      return;
    }
    if (id <= this.lastStreamId) {
      this.sendStatus(id, Status.INVALID_ARGUMENT, 'StreamID cannot be re-used and must increment');
      return;
    }
    this.lastStreamId = id;
    let req: WireRequest;
    try {
      req = decodeRequest(frame.payload);
    } catch (err) {
      if (!(err instanceof WireError)) throw err;
      this.sendStatus(id, Status.INVALID_ARGUMENT, `unmarshal request error: ${err.message}`);
      return;
    }
    if (this.draining) {
      this.sendStatus(id, Status.UNAVAILABLE, 'ttrpc: server closed');
      return;
    }
    void this.dispatch(id, req);
  }

  private async dispatch(id: number, req: WireRequest): Promise<void> {
    const abort = new AbortController();
    this.inflight.set(id, abort);
    const timer = armTimeout(abort, req.timeoutNano);
    const ctx: CallContext = {
      service: req.service,
      method: req.method,
      streamId: id,
      metadata: metadataFromPairs(req.metadata),
      signal: abort.signal,
    };
    let response: ttrpc.IResponse;
    try {
      const handler = this.lookup(req.service, req.method);
      const payload = await handler(req.payload, ctx);
      response = payload.length > 0 ? { payload } : {};
    } catch (err) {
      const { code, message } = toStatus(err);
      this.logger?.debug({ service: req.service, method: req.method, code, err }, 'ttrpc handler failed');
      response = { status: statusOf(code, message) };
    } finally {
      if (timer) clearTimeout(timer);
    }
    this.inflight.delete(id);
    this.sendResponse(id, response, req);
    this.endIfIdle();
  }

  private sendResponse(id: number, response: ttrpc.IResponse, req: WireRequest): void {
    const bytes = ttrpc.Response.encode(response).finish();
    if (bytes.length > this.conn.maxMessageSize) {
      this.logger?.warn({ service: req.service, method: req.method, length: bytes.length }, 'ttrpc response too large');
      this.sendStatus(id, Status.RESOURCE_EXHAUSTED, oversizeMessage(bytes.length, this.conn.maxMessageSize));
      return;
    }
    this.conn.send(id, MessageType.RESPONSE, 0, bytes);
  }

  private sendStatus(id: number, code: number, message: string): void {
    this.conn.send(id, MessageType.RESPONSE, 0, ttrpc.Response.encode({ status: statusOf(code, message) }).finish());
  }

  private endIfIdle(): void {
    if ((this.draining || this.peerEnded) && this.inflight.size === 0) this.conn.end();
  }

  private onClose(err: Error | undefined): void {
    if (err) this.logger?.debug({ err }, 'ttrpc connection error');
    const reason = new KybernateError('KYB_ERR_CANCELLED', 'ttrpc: connection closed');
    for (const abort of this.inflight.values()) abort.abort(reason);
    this.markClosed();
  }
}

function statusOf(code: number, message: string): google.rpc.IStatus {
  return { code, message };
}

function armTimeout(abort: AbortController, ns: number): NodeJS.Timeout | undefined {
  if (ns === 0) return undefined;
  const ms = Math.max(0, Math.ceil(ns / 1e6));
  if (ms > MAX_TIMER_MS) return undefined;
  return setTimeout(() => {
    abort.abort(new KybernateError('KYB_ERR_DEADLINE', 'context deadline exceeded'));
  }, ms);
}
