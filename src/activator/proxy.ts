// The data path of one request: the client's request (HTTP/1.1, or h2c through node's compat API) goes to
// the upstream over a pooled HTTP/1.1 connection, and the upstream's response comes back, both bodies
// streamed chunk by chunk with backpressure, nothing buffered.
//
// Invariants:
// - forward() never rejects and resolves exactly once: when the upstream's response has ended and its last
//   byte was handed to the client's response, when it failed, or when the client left. While it is
//   pending, the workload is in use.
// - Nothing is written to the client after it left: its 'close' aborts the upstream request, at once if
//   the request already has a connection, else as soon as it gets one.
// - The client gets a 502/504 only while no header has gone out; after that a failure destroys its stream
//   (HTTP/1.1: the connection, so a truncated body is never taken for a whole one; HTTP/2: the stream).
// - The upstream request has a body only when the client's has one, so a GET goes out without
//   Transfer-Encoding; a body without Content-Length goes out chunked (undici).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Http2ServerRequest } from 'node:http2';
import type { Dispatcher } from 'undici';
import type { FrontRequest, FrontResponse } from './listener';
import { requestHeaders, responseHeaders } from './headers';
import type { UpstreamPools } from './pools';

export interface ForwardOptions {
  upstream: string;
  pools: UpstreamPools;
  /**
   * No response headers from the upstream within this long after the request (body included) was written
   * to it → 504. undici's headersTimeout: its timer is coarse, it may fire up to about a second late.
   */
  responseStartMs: number;
  /** Extra response headers (e.g. x-kybernate-wake-ms). */
  headers?: Record<string, string>;
}

export type ForwardOutcome = 'ok' | 'upstream_error' | 'timeout' | 'client_aborted';
/** status: the status the client was sent (0: none, it left first). */
export interface ForwardResult { status: number; outcome: ForwardOutcome }

/**
 * The response as one type: ServerResponse and Http2ServerResponse both have write/end/destroy/headersSent
 * and writeHead(status, flat header list), but TypeScript cannot call a method on their union.
 */
type Out = ServerResponse;
const out = (res: FrontResponse): Out => res as Out;

/** The call in flight on a response, for the module-level 'close' listener (no closure per request). */
const kCall = Symbol('kybernate.forward');
type Tracked = FrontResponse & { [kCall]?: ForwardCall };

/**
 * Forwards one request to `opts.upstream` and its response back (see the invariants above). Hop-by-hop
 * headers are dropped both ways; X-Forwarded-For/-Proto/-Host are added; Host is passed through.
 */
export function forward(req: FrontRequest, res: FrontResponse, opts: ForwardOptions): Promise<ForwardResult> {
  return new Promise((resolve) => new ForwardCall(res, opts, resolve).start(req));
}

/** Undici's handler for one request, and the request's state. */
class ForwardCall implements Dispatcher.DispatchHandlers {
  private abort: ((err?: Error) => void) | undefined;
  private resume: (() => void) | undefined;
  private clientGone = false;
  private done = false;
  private status = 0;

  private readonly res: Out;

  constructor(
    res: FrontResponse,
    private readonly opts: ForwardOptions,
    private readonly resolve: (r: ForwardResult) => void,
  ) {
    this.res = out(res);
  }

  start(req: FrontRequest): void {
    const res = this.res as Tracked & Out;
    if (clientLeft(res as FrontResponse)) {
      this.finish('client_aborted'); // gone while the request waited (a wake): nothing to send it
      return;
    }
    res[kCall] = this;
    res.on('close', onResponseClose); // 'close' comes once; the response dies with the request
    try {
      const h2 = req instanceof Http2ServerRequest;
      const dispatch: Dispatcher.DispatchOptions = {
        path: req.url ?? '/',
        method: req.method as Dispatcher.HttpMethod,
        headers: requestHeaders(req.rawHeaders, req.socket.remoteAddress),
        // undici takes any async iterable as a body (documented); its types name only Readable.
        body: (h2 ? h2Body(req) : h1Body(req)) as IncomingMessage | null,
        headersTimeout: this.opts.responseStartMs,
        // bodyTimeout stays undici's (300 s between two chunks): a token stream pauses for seconds, a
        // stream silent for minutes is a hung upstream.
      };
      this.opts.pools.get(this.opts.upstream).dispatch(dispatch, this);
    } catch (err) {
      this.onError(err as Error);
    }
  }

  /** The client's response closed: before the end, the client left. */
  clientClosed(): void {
    if (this.done) return;
    this.clientGone = true;
    if (this.abort !== undefined) this.abort();
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.clientGone) abort();
    else this.abort = abort;
  }

  onHeaders(statusCode: number, raw: Buffer[] | string[] | null, resume: () => void): boolean {
    this.status = statusCode;
    // A throw here (a header node refuses) aborts the request: onError answers 502.
    this.res.writeHead(statusCode, responseHeaders((raw ?? []) as Buffer[], this.opts.headers));
    this.resume = resume;
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true;
    // The client reads slower than the upstream writes: undici stops reading from the upstream until
    // resume(), called when the client's side drained. Hooked on the first full buffer only: most
    // responses never fill one.
    if (this.resume !== undefined) {
      this.res.on('drain', this.resume);
      this.resume = undefined;
    }
    return false;
  }

  onComplete(): void {
    try {
      this.res.end();
    } finally {
      this.finish('ok');
    }
  }

  onError(err: Error): void {
    if (this.done) return;
    let outcome: ForwardOutcome = 'upstream_error';
    // finally: whatever the client's side throws, the call resolves (a pending one keeps its workload awake).
    try {
      const res = this.res;
      if (this.clientGone || clientLeft(res as FrontResponse)) {
        outcome = 'client_aborted';
      } else if (res.headersSent) {
        res.destroy();
      } else if ((err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT') {
        outcome = 'timeout';
        this.status = 504;
        reply(res, 504, `upstream ${this.opts.upstream} did not start its response within ${this.opts.responseStartMs} ms`);
      } else {
        this.status = 502;
        reply(res, 502, `upstream ${this.opts.upstream}: ${err.message}`);
      }
    } finally {
      this.finish(outcome);
    }
  }

  private finish(outcome: ForwardOutcome): void {
    if (this.done) return;
    this.done = true;
    this.resolve({ status: this.status, outcome });
  }
}

function onResponseClose(this: Tracked): void {
  this[kCall]?.clientClosed();
}

/** The client's stream is gone (its 'close' may not have been emitted yet). */
function clientLeft(res: FrontResponse): boolean {
  return 'stream' in res ? res.stream.destroyed : res.destroyed;
}

/**
 * HTTP/1.1: the request itself when it has a body. undici destroys a stream body once sent; for an
 * IncomingMessage it unhooks the socket first (it knows node's), so the connection lives on.
 */
function h1Body(req: IncomingMessage): IncomingMessage | null {
  const cl = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0') ? req : null;
}

/**
 * HTTP/2: an iterator over the request's body, when the client did not end the stream with its headers.
 * Not the request: undici destroys a stream body once sent, and destroying an Http2ServerRequest resets
 * the HTTP/2 stream, response included; the iterator leaves the stream alone when it ends.
 */
function h2Body(req: Http2ServerRequest): AsyncIterable<Buffer> | null {
  return req.stream.endAfterHeaders ? null : req.iterator({ destroyOnReturn: false });
}

/**
 * An answer of the activator's own: `status`, a one-line text/plain body (the reason and '\n'), optional
 * Retry-After and extra headers. HTTP/1.1 and HTTP/2 alike; when headers have gone out already, the
 * response can only be cut: it is destroyed.
 */
export function reply(res: FrontResponse, status: number, reason: string, opts: { retryAfterS?: number; headers?: Record<string, string> } = {}): void {
  const o = out(res);
  if (o.headersSent) {
    o.destroy();
    return;
  }
  const body = `${reason.replace(/[\r\n]+/g, ' ')}\n`;
  const headers = ['content-type', 'text/plain; charset=utf-8', 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store'];
  if (opts.retryAfterS !== undefined) headers.push('retry-after', String(Math.max(0, Math.ceil(opts.retryAfterS))));
  if (opts.headers !== undefined) for (const k in opts.headers) headers.push(k, opts.headers[k]!);
  o.writeHead(status, headers);
  o.end(body);
}
