// The activator's data path against real loopback servers, without the daemon: the front (HTTP/1.1 and
// h2c on one port), forward() over pooled upstream connections, tunnel() for upgrades, and drain(). Each
// test sets what the front does with its requests (ctx); upstream servers count the connections we open.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { Readable } from 'node:stream';
import { Client } from 'undici';
import { WebSocket, WebSocketServer } from 'ws';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { listenFront, type Front } from '../../src/activator/listener';
import { UpstreamPools } from '../../src/activator/pools';
import { forward, reply, type ForwardResult } from '../../src/activator/proxy';
import { tunnel } from '../../src/activator/tunnel';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

const cleanups: Array<() => unknown> = [];

/**
 * An upstream on loopback, the front's target from now on (ctx.upstream): `handler` answers; it counts
 * connections accepted and open. Closed after the test.
 */
async function upstream(handler: Handler): Promise<{ server: http.Server; address: string; accepted: () => number; open: () => number }> {
  const server = http.createServer(handler);
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  server.on('connection', (s) => { accepted++; sockets.add(s); s.once('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(async () => { for (const s of sockets) s.destroy(); await new Promise((r) => server.close(r)); });
  ctx.upstream = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return { server, address: ctx.upstream, accepted: () => accepted, open: () => sockets.size };
}

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
const until = async (what: string, ok: () => boolean): Promise<void> => {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(ok(), what).toBe(true);
};

// What the front does with each request, set per test.
const ctx = { upstream: '', pools: new UpstreamPools(), responseStartMs: 10_000, headers: undefined as Record<string, string> | undefined };
const results: ForwardResult[] = [];
const tunnels: Promise<{ outcome: string }>[] = [];
let front: Front;
let base: string;

beforeAll(async () => {
  front = await listenFront('127.0.0.1', 0, {
    request: (req, res) => {
      if (req.url === '/reply') return reply(res, 503, 'asleep: waking', { retryAfterS: 2, headers: { 'x-why': 'test' } });
      void forward(req, res, { ...ctx }).then((r) => results.push(r));
    },
    upgrade: (req, socket, head) => { tunnels.push(tunnel(req, socket, head, ctx.upstream)); },
  });
  base = `http://${front.address}`;
});
afterAll(() => front.close(1000));
beforeEach(() => { ctx.pools = new UpstreamPools(); ctx.responseStartMs = 10_000; ctx.headers = undefined; results.length = 0; });
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
  await ctx.pools.close(100);
});

describe('HTTP/1.1 through the front', () => {
  it('reuses one upstream connection for sequential requests, passes extra response headers', async () => {
    const up = await upstream((req, res) => res.end(`you asked ${req.url}`));
    ctx.headers = { 'x-kybernate-wake-ms': '12' };
    const client = new Client(base);
    for (let i = 0; i < 5; i++) {
      const r = await client.request({ path: `/n${i}`, method: 'GET' });
      expect(await r.body.text()).toBe(`you asked /n${i}`);
      expect(r.headers['x-kybernate-wake-ms']).toBe('12');
    }
    expect(up.accepted()).toBe(1);
    expect(results.map((r) => r.outcome)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
    await client.close();
  });

  it('streams a 20 MiB chunked request body and a chunked response body, byte for byte', async () => {
    let seen: http.IncomingHttpHeaders = {};
    await upstream((req, res) => { seen = req.headers; res.writeHead(200, { 'content-type': 'application/octet-stream' }); req.pipe(res); });
    const chunks = Array.from({ length: 320 }, () => randomBytes(64 * 1024));
    const client = new Client(base);
    const r = await client.request({ path: '/echo', method: 'POST', body: Readable.from(chunks) });
    const hash = createHash('sha256');
    let n = 0;
    for await (const c of r.body) { hash.update(c); n += c.length; }
    expect(n).toBe(20 * 1024 * 1024);
    expect(hash.digest('hex')).toBe(sha(Buffer.concat(chunks)));
    expect(seen['transfer-encoding']).toBe('chunked');
    expect(r.headers['transfer-encoding']).toBe('chunked');
    await client.close();
  });

  it('flushes each server-sent event before the upstream writes the next', async () => {
    const got: Array<() => void> = [];
    const arrived = Array.from({ length: 5 }, (_, i) => new Promise<void>((r) => { got[i] = r; }));
    await upstream(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let i = 0; i < 5; i++) {
        res.write(`data: token ${i}\n\n`);
        await arrived[i]; // never resolves if the proxy holds the event back
      }
      res.end();
    });
    const client = new Client(base);
    const r = await client.request({ path: '/sse', method: 'GET' });
    let text = '';
    for await (const c of r.body) {
      text += c.toString();
      const events = text.split('\n\n').length - 1;
      for (let i = 0; i < events; i++) got[i]!();
    }
    expect(text).toBe([0, 1, 2, 3, 4].map((i) => `data: token ${i}\n\n`).join(''));
    await client.close();
  });

  it('drops hop-by-hop headers both ways, adds X-Forwarded-*, passes Host', async () => {
    let seen: http.IncomingHttpHeaders = {};
    await upstream((req, res) => {
      seen = req.headers;
      res.writeHead(200, { Connection: 'X-Resp-Hop', 'X-Resp-Hop': '1', 'Proxy-Authenticate': 'Basic', 'X-Kept': 'yes' });
      res.end('ok');
    });
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get(`${base}/h`, {
        headers: {
          Host: 'app.example', Connection: 'keep-alive, X-Req-Hop', 'X-Req-Hop': '1', 'Keep-Alive': 'timeout=9', TE: 'trailers',
          'Proxy-Authorization': 'Basic eA==', 'X-Forwarded-For': '10.0.0.1', 'X-Other': 'kept',
        },
      }, resolve).on('error', reject);
    });
    res.resume();
    expect(seen).toMatchObject({ host: 'app.example', 'x-other': 'kept', 'x-forwarded-for': '10.0.0.1, 127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'app.example' });
    for (const h of ['x-req-hop', 'keep-alive', 'te', 'proxy-authorization']) expect(seen[h], h).toBeUndefined();
    expect(res.headers['x-kept']).toBe('yes');
    expect(res.headers['x-resp-hop']).toBeUndefined();
    expect(res.headers['proxy-authenticate']).toBeUndefined();
    expect(res.headers['keep-alive'], 'the front\'s own, not the upstream\'s').toBe('timeout=65');
  });

  it('Expect: 100-continue: the front says continue, the body goes upstream without Expect', async () => {
    let expect100: string | undefined;
    await upstream(async (req, res) => { expect100 = req.headers.expect; res.end(`got ${Buffer.concat(await req.toArray())}`); });
    const sock = net.connect(Number(front.address.split(':')[1]), '127.0.0.1');
    sock.write('POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
    let text = '';
    sock.on('data', (d) => { text += d.toString(); });
    await until('100 Continue', () => text.startsWith('HTTP/1.1 100 Continue\r\n\r\n'));
    sock.write('hello');
    await until('the answer', () => text.endsWith('got hello'));
    expect(expect100).toBeUndefined();
    sock.destroy();
  });

  it('answers pipelined requests in order on one connection', async () => {
    await upstream((req, res) => setTimeout(() => res.end(`body of ${req.url}`), req.url === '/p1' ? 150 : req.url === '/p2' ? 50 : 0));
    const sock = net.connect(Number(front.address.split(':')[1]), '127.0.0.1');
    sock.write(['/p1', '/p2', '/p3'].map((p) => `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
    let text = '';
    sock.on('data', (d) => { text += d.toString(); });
    await until('three responses', () => (text.match(/body of \/p\d/g) ?? []).length === 3);
    expect(text.match(/body of \/p\d/g)).toEqual(['body of /p1', 'body of /p2', 'body of /p3']);
    sock.destroy();
  });
});

describe('failures', () => {
  it('an upstream that refuses connections: 502 with a one-line reason', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    ctx.upstream = `127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
    await new Promise((r) => probe.close(r));
    const r = await fetch(`${base}/x`, { method: 'POST', body: 'payload' });
    expect(r.status).toBe(502);
    expect(r.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    const body = await r.text();
    expect(body).toMatch(new RegExp(`^upstream ${ctx.upstream}: .*ECONNREFUSED.*\\n$`));
    expect(body.split('\n')).toHaveLength(2);
    expect(results).toEqual([{ status: 502, outcome: 'upstream_error' }]);
  });

  it('no response headers within responseStartMs: 504', async () => {
    await upstream(() => { /* never answers */ });
    ctx.responseStartMs = 300;
    const r = await fetch(`${base}/hang`);
    expect(r.status).toBe(504);
    expect(await r.text()).toContain('did not start its response within 300 ms');
    expect(results).toEqual([{ status: 504, outcome: 'timeout' }]);
  });

  it('a client that leaves mid-response aborts the upstream request', async () => {
    let upstreamSawAbort!: () => void;
    const aborted = new Promise<void>((r) => { upstreamSawAbort = r; });
    await upstream((_req, res) => {
      res.writeHead(200);
      res.write('first chunk');
      res.once('close', () => { if (!res.writableFinished) upstreamSawAbort(); });
    });
    const client = new Client(base);
    const r = await client.request({ path: '/stream', method: 'GET' });
    for await (const c of r.body) { expect(c.toString()).toBe('first chunk'); break; } // break destroys the body
    await client.destroy();
    await aborted;
    await until('the forward resolved', () => results.length === 1);
    expect(results[0]).toEqual({ status: 200, outcome: 'client_aborted' });
  });

  it('reply(): status, one-line reason, Retry-After and extra headers', async () => {
    const r = await fetch(`${base}/reply`);
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('2');
    expect(r.headers.get('x-why')).toBe('test');
    expect(await r.text()).toBe('asleep: waking\n');
  });
});

describe('drain()', () => {
  it('closes every upstream connection; a request in flight still completes', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => { release = r; });
    let arrived = false;
    const up = await upstream(async (req, res) => {
      if (req.url === '/slow') { arrived = true; res.write('part 1, '); await released; }
      res.end('done');
    });
    const client = new Client(base, { pipelining: 0 });
    const clients = [new Client(base), new Client(base)];
    await Promise.all(clients.map(async (c) => (await c.request({ path: '/idle', method: 'GET' })).body.text()));
    expect(up.open()).toBe(2); // two idle pooled connections
    const inflight = client.request({ path: '/slow', method: 'GET' }).then((r) => r.body.text());
    await until('the slow request is at the upstream', () => arrived);
    let drained = 0;
    const drain = ctx.pools.drain(up.address).then(() => { drained++; });
    const second = ctx.pools.drain(up.address).then(() => { drained++; }); // waits for the first
    await until('the idle connections closed', () => up.open() === 1);
    expect(drained).toBe(0);
    release();
    expect(await inflight).toBe('part 1, done');
    await Promise.all([drain, second]);
    await until('no connection of ours left', () => up.open() === 0);
    // The next request opens a fresh pool.
    expect(await (await clients[0]!.request({ path: '/again', method: 'GET' })).body.text()).toBe('done');
    for (const c of [client, ...clients]) await c.close();
  });

  it('a request still in flight after graceMs is cut, and the drain ends', async () => {
    const up = await upstream((_req, res) => { res.write('never ends'); });
    const client = new Client(base);
    const r = await client.request({ path: '/forever', method: 'GET' });
    await ctx.pools.drain(up.address, 200);
    await expect(r.body.text()).rejects.toThrow();
    await until('the forward resolved', () => results.length === 1);
    expect(results[0]).toEqual({ status: 200, outcome: 'upstream_error' });
    await until('no connection of ours left', () => up.open() === 0);
    await client.destroy();
  });
});

describe('upgrades and h2c', () => {
  it('a WebSocket echoes through the tunnel, with X-Forwarded-For on the upgrade request', async () => {
    let xff: string | undefined;
    const up = await upstream((_req, res) => res.end());
    const wss = new WebSocketServer({ server: up.server });
    wss.on('connection', (ws, req) => { xff = req.headers['x-forwarded-for'] as string; ws.on('message', (m) => ws.send(`echo ${m}`)); });
    tunnels.length = 0;
    const ws = new WebSocket(`ws://${front.address}/ws`);
    await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
    const echoed = new Promise<string>((r) => ws.once('message', (m) => r(m.toString())));
    ws.send('hello');
    expect(await echoed).toBe('echo hello');
    expect(xff).toBe('127.0.0.1');
    ws.close();
    expect(await tunnels[0]).toEqual({ outcome: 'ok' });
    wss.close();
  });

  it('an upgrade to an upstream that is down: 502 on the raw socket', async () => {
    ctx.upstream = '127.0.0.1:1';
    tunnels.length = 0;
    const ws = new WebSocket(`ws://${front.address}/ws`);
    const status = await new Promise<number>((r) => ws.once('unexpected-response', (_req, res) => r(res.statusCode!)));
    expect(status).toBe(502);
    expect(await tunnels[0]).toEqual({ outcome: 'upstream_error' });
  });

  it('an upgrade the upstream answers without 101 is relayed whole, then closed', async () => {
    await upstream((_req, res) => { res.writeHead(426, { 'content-type': 'text/plain' }); res.end('no websockets here'); });
    tunnels.length = 0;
    const ws = new WebSocket(`ws://${front.address}/ws`);
    const res = await new Promise<http.IncomingMessage>((r) => ws.once('unexpected-response', (_req, m) => r(m)));
    let body = '';
    for await (const c of res) body += c;
    expect([res.statusCode, body]).toEqual([426, 'no websockets here']);
    expect(await tunnels[0]).toEqual({ outcome: 'refused' });
  });

  it('h2c with prior knowledge: GET and POST go upstream as HTTP/1.1', async () => {
    const seen: Array<{ version: string; host?: string; proto?: string; body: string }> = [];
    await upstream((req, res) => {
      let body = '';
      req.on('data', (d) => { body += d; }).on('end', () => {
        seen.push({ version: req.httpVersion, host: req.headers.host, proto: req.headers['x-forwarded-proto'] as string, body });
        res.setHeader('set-cookie', ['a=1', 'b=2']);
        res.end(`${req.method} ${req.url} ${body.length}`);
      });
    });
    const session = http2.connect(base);
    const call = (headers: http2.OutgoingHttpHeaders, body?: string): Promise<{ status: number; text: string; headers: http2.IncomingHttpHeaders }> => new Promise((resolve, reject) => {
      const s = session.request(headers, { endStream: body === undefined });
      let text = '';
      let h: http2.IncomingHttpHeaders = {};
      s.on('response', (hh) => { h = hh; }).on('data', (d) => { text += d; }).on('error', reject);
      s.on('end', () => resolve({ status: Number(h[':status']), text, headers: h }));
      if (body !== undefined) s.end(body);
    });
    const get = await call({ ':path': '/g?q=1' });
    expect(get).toMatchObject({ status: 200, text: 'GET /g?q=1 0' });
    expect(get.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect((await call({ ':method': 'POST', ':path': '/p' }, 'x'.repeat(100_000))).text).toBe('POST /p 100000');
    expect(seen[0]).toEqual({ version: '1.1', host: front.address, proto: 'http', body: '' });
    expect((await call({ ':path': '/reply' })).status).toBe(503);
    session.close();
  });
});

describe('the front\'s close()', () => {
  it('ends idle connections at once, lets a response in flight finish, then resolves', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => { release = r; });
    let arrived = false;
    await upstream(async (req, res) => { if (req.url === '/busy') { arrived = true; await released; } res.end('late'); });
    const own = await listenFront('127.0.0.1', 0, { request: (req, res) => void forward(req, res, { ...ctx }), upgrade: (_q, s) => s.destroy() });
    const silent = net.connect(Number(own.address.split(':')[1]), '127.0.0.1');
    const idle = net.connect(Number(own.address.split(':')[1]), '127.0.0.1');
    idle.write('GET /quick HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => idle.once('data', r)); // answered; the connection stays open, idle
    const idleClosed = Promise.all([silent, idle].map((s) => new Promise((r) => s.once('close', r))));
    const busy = fetch(`http://${own.address}/busy`).then((r) => r.text());
    await until('the request is at the upstream', () => arrived);
    let closed = false;
    const closing = own.close(10_000).then(() => { closed = true; });
    await idleClosed;
    expect(closed).toBe(false);
    release();
    expect(await busy).toBe('late');
    await closing;
  });
});
