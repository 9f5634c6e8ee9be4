// The front: one TCP port that speaks HTTP/1.1 (node's http server: keep-alive, pipelining, upgrades) and
// h2c with prior knowledge (node's http2 server, compat API), told apart per connection by its first bytes.
//
// Invariants:
// - A connection goes to the HTTP/2 server only if it starts with the 24-byte connection preface, which no
//   HTTP/1.x request line can (the method PRI exists only for the preface); anything else is HTTP/1.1.
// - The sniffed bytes are put back (unshift) before either server sees the socket: nothing is lost.
// - Every accepted socket is tracked until it closes, whatever it became (HTTP/1.1, HTTP/2, a tunnel), so
//   close() can end all of them after its grace period.
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { KybernateError } from '../errors';
import { formatHostPort } from '../hostport';

export type FrontRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type FrontResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface FrontHandlers {
  /** HTTP/1.1 and h2c (compat API) requests alike. */
  request(req: FrontRequest, res: FrontResponse): void;
  /** An HTTP/1.1 Upgrade request (WebSocket or any other): the socket is the handler's from now on. */
  upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
}

export interface Front {
  /** host:port actually bound (the port resolved when 0 was asked for). */
  address: string;
  /** Stops accepting, ends idle connections, waits for the rest up to graceMs, then destroys them. */
  close(graceMs?: number): Promise<void>;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const DEFAULT_GRACE_MS = 5_000;
/**
 * Idle client connections are kept this long: above the 60 s idle timeout of common load balancers, so
 * they close first and never send a request onto a connection we are closing.
 */
const KEEP_ALIVE_MS = 65_000;
/** Request head not complete within this: 408 (slow clients cannot hold sockets forever). */
const HEADERS_TIMEOUT_MS = 66_000;
/** A new connection that sends nothing at all for this long is closed. */
const FIRST_BYTES_TIMEOUT_MS = HEADERS_TIMEOUT_MS;
/** While closing: how often HTTP/1.1 connections whose response just ended are looked for and closed. */
const CLOSE_SWEEP_MS = 25;

export async function listenFront(host: string, port: number, handlers: FrontHandlers, opts: { graceMs?: number } = {}): Promise<Front> {
  // requestTimeout 0: a request body may stream for as long as it likes (uploads, audio); a stalled one is
  // the upstream's to time out. noDelay: every response chunk (a token) leaves at once.
  const h1 = http.createServer({ noDelay: true, requestTimeout: 0, headersTimeout: HEADERS_TIMEOUT_MS }, handlers.request);
  h1.keepAliveTimeout = KEEP_ALIVE_MS;
  h1.on('upgrade', handlers.upgrade);
  const h2 = http2.createServer({}, handlers.request);
  // A session without a frame for KEEP_ALIVE_MS is closed gracefully (GOAWAY): streams under way, a quiet
  // event stream among them, finish; node's default would destroy it.
  h2.setTimeout(KEEP_ALIVE_MS);
  h2.on('timeout', (s: http2.Http2Session) => s.close());
  const sessions = new Set<http2.Http2Session>();
  h2.on('session', (s) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });

  // The HTTP/1.1 server owns the port (so node tracks its connections for closeIdleConnections and its
  // timeouts), but its own 'connection' listener runs only for connections the sniffer finds HTTP/1.1.
  const [h1Connection] = h1.listeners('connection') as Array<(socket: net.Socket) => void>;
  h1.removeAllListeners('connection');
  const sockets = new Set<net.Socket>();
  const sniffing = new Set<net.Socket>(); // accepted, no request yet: idle
  h1.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    sniffing.add(socket);
    socket.once('close', () => { sockets.delete(socket); sniffing.delete(socket); });
    sniff(socket, (isH2) => {
      sniffing.delete(socket);
      if (isH2) h2.emit('connection', socket);
      else h1Connection!.call(h1, socket);
    });
  });

  await new Promise<void>((resolve, reject) => {
    h1.once('error', reject);
    h1.listen(port, host, () => {
      h1.off('error', reject);
      resolve();
    });
  }).catch((err: Error) => {
    throw new KybernateError('KYB_ERR_UNAVAILABLE', `cannot listen on ${formatHostPort({ host, port })}: ${err.message}`, { cause: err });
  });
  const bound = h1.address() as net.AddressInfo;
  const address = formatHostPort({ host: bound.address, port: bound.port });

  let closing: Promise<void> | undefined;
  const close = (graceMs = opts.graceMs ?? DEFAULT_GRACE_MS): Promise<void> => (closing ??= (async () => {
    const closed = new Promise<void>((resolve) => h1.close(() => resolve())); // also ends idle HTTP/1.1 connections
    // Requests that arrive on a connection still open get "Connection: close" with their response.
    h1.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => { res.shouldKeepAlive = false; });
    for (const s of sniffing) s.destroy();
    for (const s of sessions) s.close(); // GOAWAY: streams under way finish, no new ones
    // node keeps a connection whose response was under way at close() open for its keep-alive time, and
    // tells no one when it turns idle: look for such connections until all are gone.
    const sweep = setInterval(() => h1.closeIdleConnections(), CLOSE_SWEEP_MS);
    const timer = setTimeout(() => {
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
    }, graceMs);
    try {
      await closed;
    } finally {
      clearInterval(sweep);
      clearTimeout(timer);
    }
  })());
  return { address, close };
}

/**
 * Reads a new connection's first bytes (more only while they could still be the preface), puts them back,
 * and tells `then` whether the connection is HTTP/2. A socket that errs or stays silent is destroyed.
 */
function sniff(socket: net.Socket, then: (isH2: boolean) => void): void {
  let seen: Buffer | undefined;
  const onError = (): void => { socket.destroy(); };
  const onTimeout = (): void => { socket.destroy(); };
  const onData = (chunk: Buffer): void => {
    seen = seen === undefined ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    const maybeH2 = seen.compare(PREFACE, 0, n, 0, n) === 0;
    if (maybeH2 && seen.length < PREFACE.length) return; // a prefix of the preface: wait for the rest
    socket.off('data', onData).off('error', onError).off('timeout', onTimeout);
    socket.setTimeout(0);
    socket.pause();
    socket.unshift(seen);
    then(maybeH2);
    // The HTTP/1.1 server reads on from here (its parser takes the unshifted bytes first); the HTTP/2
    // session has already taken them (socket.read()) and reads the socket itself.
    if (!maybeH2) socket.resume();
  };
  socket.on('data', onData).on('error', onError).on('timeout', onTimeout);
  socket.setTimeout(FIRST_BYTES_TIMEOUT_MS);
}
