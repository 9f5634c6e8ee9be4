// An HTTP/1.1 Upgrade (WebSocket or any other protocol) passed through: the client's request goes to the
// upstream on a connection of its own (never a pooled one: it becomes the tunnel), and once the upstream
// answers 101 the two sockets are piped both ways until both are closed.
//
// Invariants:
// - The upstream sees the client's request as it was (Upgrade and Connection included) plus
//   X-Forwarded-*, then the bytes the client sent after it (`head`), in that order.
// - A non-101 answer is relayed whole (node's parser finds its end) with "Connection: close", and then
//   both sockets are closed: that connection was for the upgrade only.
// - tunnel() never rejects; it resolves once both sockets are closed. An error on either side destroys
//   both; an orderly end of one side ends the other once what is in flight was written.
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { parseHostPort } from '../hostport';
import { requestHeaders } from './headers';

/** The upstream did not accept the TCP connection within this long (undici's default for requests too). */
const CONNECT_TIMEOUT_MS = 10_000;

/** 'refused': the upstream answered, but not with 101; 'client_aborted': the client left before it answered. */
export type TunnelOutcome = 'ok' | 'upstream_error' | 'refused' | 'client_aborted';

/** Passes the upgrade `req` (its socket and the bytes read past its head) to `upstream` ("host:port"). */
export function tunnel(req: http.IncomingMessage, socket: Duplex, head: Buffer, upstream: string): Promise<{ outcome: TunnelOutcome }> {
  return new Promise((resolve) => {
    let outcome: TunnelOutcome | undefined;
    let open = 2; // sockets not yet closed: the client's and ours to the upstream
    const settle = (o: TunnelOutcome): void => { outcome ??= o; };
    const closed = (): void => { if (--open === 0) resolve({ outcome: outcome ?? 'client_aborted' }); };
    socket.on('error', () => socket.destroy());
    socket.once('close', closed);

    const hp = parseHostPort(upstream);
    if (hp === undefined) {
      settle('upstream_error');
      closed();
      badGateway(socket, `upstream address ${upstream} is not HOST:PORT`);
      return;
    }
    const conn = net.connect({ host: hp.host, port: hp.port, noDelay: true });
    conn.on('error', () => conn.destroy());
    conn.once('close', closed);
    conn.setTimeout(CONNECT_TIMEOUT_MS, () => conn.destroy(new Error(`connect to ${upstream} timed out after ${CONNECT_TIMEOUT_MS} ms`)));
    conn.once('connect', () => {
      conn.setTimeout(0);
      // node queued the request head on this socket (on the next tick after http.request()), long
      // before it connected; this write is queued behind it.
      if (head.length > 0) conn.write(head);
    });
    const up = http.request({
      method: req.method, path: req.url, createConnection: () => conn,
      headers: requestHeaders(req.rawHeaders, req.socket.remoteAddress, true),
    });
    up.end();

    // The client left before the upstream answered: nothing to relay.
    const onClientGone = (): void => { settle('client_aborted'); conn.destroy(); };
    socket.once('close', onClientGone);

    up.on('upgrade', (res, upSocket, upHead) => {
      socket.off('close', onClientGone);
      settle('ok');
      socket.write(`HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}\r\n${headerLines(res.rawHeaders)}\r\n`, 'latin1');
      if (upHead.length > 0) socket.write(upHead);
      upSocket.pipe(socket);
      socket.pipe(upSocket);
      // One side gone: end the other once its pending writes are out; an error destroys it at once.
      upSocket.once('close', (hadError: boolean) => (hadError ? socket.destroy() : endThenDestroy(socket)));
      socket.once('close', () => endThenDestroy(upSocket));
    });
    up.on('response', (res) => {
      socket.off('close', onClientGone);
      settle('refused');
      const raw = res.rawHeaders.filter((_, i, a) => !DROP_ON_RELAY.has(a[i - (i % 2)]!.toLowerCase()));
      socket.write(`HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n${headerLines(raw)}connection: close\r\n\r\n`, 'latin1');
      res.pipe(socket, { end: false });
      res.once('end', () => { endThenDestroy(socket); conn.destroy(); });
      res.once('error', () => { socket.destroy(); conn.destroy(); });
    });
    up.on('error', (err) => {
      socket.off('close', onClientGone);
      if (outcome === undefined) {
        settle('upstream_error');
        badGateway(socket, `upstream ${upstream}: ${err.message}`);
      } else if (outcome !== 'ok') {
        socket.destroy();
      }
      conn.destroy();
    });
  });
}

/** Headers a relayed non-101 answer loses: its body is delimited by our close instead. */
const DROP_ON_RELAY: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'transfer-encoding']);

function headerLines(raw: string[]): string {
  let s = '';
  for (let i = 0; i < raw.length; i += 2) s += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return s;
}

function endThenDestroy(s: Duplex): void {
  if (s.destroyed) return;
  s.end(() => s.destroy());
}

function badGateway(socket: Duplex, reason: string): void {
  const body = `${reason.replace(/[\r\n]+/g, ' ')}\n`;
  if (socket.destroyed) return;
  socket.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`, () => socket.destroy());
}
