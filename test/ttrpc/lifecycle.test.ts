// close() and destroy() on both sides, and what pending calls and handlers observe.
import { existsSync } from 'node:fs';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Status } from '../../src/errors';
import { ttrpc } from '../../src/gen/proto';
import { FrameDecoder, TtrpcClient, TtrpcServer, encodeFrame, type CallContext } from '../../src/ttrpc';
import { deferred, tempSocket, turns } from './helpers';

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0)) c(); });

const rejection = (p: Promise<unknown>) => p.then(() => { throw new Error('expected a rejection'); }, (e: unknown) => e);

/** A server whose Gate method waits for the test to release it. */
async function gatedServer() {
  const sock = tempSocket();
  const server = new TtrpcServer();
  const started: { release(v: Uint8Array): void; ctx: CallContext }[] = [];
  const startedOne = { wake: deferred() };
  server.register('g.G', {
    Gate: (_p, ctx) => new Promise((resolve, reject) => {
      started.push({ release: resolve, ctx });
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
      startedOne.wake.resolve();
    }),
    Now: async () => Buffer.from('now'),
  });
  await server.listen(sock.path);
  cleanups.push(() => { server.destroy(); sock.cleanup(); });
  const nextStarted = async () => { await startedOne.wake.promise; startedOne.wake = deferred(); return started.at(-1)!; };
  return { server, path: sock.path, nextStarted };
}

async function connect(path: string): Promise<TtrpcClient> {
  const c = await TtrpcClient.connect(path);
  cleanups.push(() => c.destroy());
  return c;
}

describe('server lifecycle', () => {
  it('close() waits for in-flight handlers, refuses new calls, then closes connections and the socket file', async () => {
    const { server, path, nextStarted } = await gatedServer();
    const client = await connect(path);
    const idle = await connect(path);
    const call = client.call('g.G', 'Gate', new Uint8Array(0));
    const gate = await nextStarted();
    const clientClosed = deferred();
    const idleClosed = deferred();
    client.on('close', () => clientClosed.resolve());
    idle.on('close', () => idleClosed.resolve());

    let closed = false;
    const closing = server.close().then(() => { closed = true; });
    await idleClosed.promise; // an idle connection is closed at once
    await turns(10);
    expect(closed).toBe(false);
    expect(client.isClosed).toBe(false);
    expect(await rejection(client.call('g.G', 'Now', new Uint8Array(0))))
      .toMatchObject({ status: Status.UNAVAILABLE, message: 'ttrpc: server closed' });
    await expect(TtrpcClient.connect(path)).rejects.toMatchObject({ code: 'ENOENT' });

    gate.release(Buffer.from('done'));
    expect((await call).toString()).toBe('done');
    await closing;
    await clientClosed.promise;
    expect(server.connections).toBe(0);
    expect(existsSync(path)).toBe(false);
    expect(gate.ctx.signal.aborted).toBe(false);
  });

  it('destroy() closes connections now: pending calls reject UNAVAILABLE and handlers see the abort', async () => {
    const { server, path, nextStarted } = await gatedServer();
    const client = await connect(path);
    const call = client.call('g.G', 'Gate', new Uint8Array(0));
    const gate = await nextStarted();
    server.destroy();
    expect(await rejection(call)).toMatchObject({ status: Status.UNAVAILABLE, message: 'ttrpc: closed' });
    await new Promise<void>((r) => (gate.ctx.signal.aborted ? r() : gate.ctx.signal.addEventListener('abort', () => r())));
    expect(gate.ctx.signal.reason).toMatchObject({ code: 'KYB_ERR_CANCELLED' });
    expect(await rejection(client.call('g.G', 'Now', new Uint8Array(0)))).toMatchObject({ status: Status.UNAVAILABLE });
  });

  it('adopts an existing net.Server and sockets handed to handleConnection', async () => {
    const sock = tempSocket();
    const server = new TtrpcServer();
    server.register('g.G', { Now: async () => Buffer.from('now') });
    const adopted = net.createServer();
    await new Promise<void>((r) => adopted.listen(sock.path, r));
    server.serve(adopted);
    cleanups.push(() => { server.destroy(); sock.cleanup(); });
    const a = await connect(sock.path);
    expect((await a.call('g.G', 'Now', new Uint8Array(0))).toString()).toBe('now');

    const [left, right] = await socketPair();
    server.handleConnection(right);
    const b = new TtrpcClient(left);
    cleanups.push(() => b.destroy());
    expect((await b.call('g.G', 'Now', new Uint8Array(0))).toString()).toBe('now');
    expect(server.connections).toBe(2);
    await Promise.all([a.close(), b.close()]);
    while (server.connections > 0) await turns(1);
    await server.close();
  });
});

describe('server listening', () => {
  it('refuses a path that is in use and leaves that socket alone', async () => {
    const { path } = await gatedServer();
    const other = new TtrpcServer();
    await expect(other.listen(path)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    const client = await connect(path);
    expect((await client.call('g.G', 'Now', new Uint8Array(0))).toString()).toBe('now');
  });

  it('stops reading from a peer that does not read its responses, and resumes when it does', async () => {
    const server = new TtrpcServer();
    server.register('e.E', { Echo: async (p) => p });
    cleanups.push(() => server.destroy());
    const [left, right] = await socketPair();
    cleanups.push(() => left.destroy());
    server.handleConnection(right);
    left.pause();
    const payload = Buffer.alloc(256 << 10, 3);
    const n = 64;
    for (let i = 0; i < n; i++) {
      left.write(encodeFrame(2 * i + 1, 1, 0, ttrpc.Request.encode({ service: 'e.E', method: 'Echo', payload }).finish()));
    }
    while (!right.isPaused()) await turns(1);
    const decoder = new FrameDecoder();
    let answered = 0;
    left.on('data', (c: Buffer) => { answered += decoder.write(c).length; });
    left.resume();
    while (answered < n) await turns(1);
    expect(right.isPaused()).toBe(false);
  });
});

describe('client lifecycle', () => {
  it('close() waits for pending calls, refuses new ones, then closes', async () => {
    const { path, nextStarted } = await gatedServer();
    const client = await connect(path);
    const call = client.call('g.G', 'Gate', new Uint8Array(0));
    const gate = await nextStarted();
    let closed = false;
    const closing = client.close().then(() => { closed = true; });
    expect(await rejection(client.call('g.G', 'Now', new Uint8Array(0))))
      .toMatchObject({ status: Status.UNAVAILABLE, message: 'ttrpc: closed' });
    await turns(10);
    expect(closed).toBe(false);
    gate.release(Buffer.from('late'));
    expect((await call).toString()).toBe('late');
    await closing;
    expect(client.isClosed).toBe(true);
    expect(client.close()).toBe(client.close());
  });

  it('destroy() rejects every pending call and emits close', async () => {
    const { path, nextStarted } = await gatedServer();
    const client = await connect(path);
    const calls = [0, 1, 2].map(() => client.call('g.G', 'Gate', new Uint8Array(0)));
    await nextStarted();
    const closeEvent = deferred();
    client.on('close', () => closeEvent.resolve());
    client.destroy();
    for (const c of calls) expect(await rejection(c)).toMatchObject({ status: Status.UNAVAILABLE, message: 'ttrpc: closed' });
    await closeEvent.promise;
    expect(client.pendingCalls).toBe(0);
  });

  it('connect() to a missing socket rejects with the socket error', async () => {
    const sock = tempSocket();
    cleanups.push(() => sock.cleanup());
    await expect(TtrpcClient.connect(sock.path)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

function socketPair(): Promise<[net.Socket, net.Socket]> {
  const sock = tempSocket();
  return new Promise((resolve, reject) => {
    const srv = net.createServer((right) => {
      srv.close();
      sock.cleanup();
      resolve([left, right]);
    });
    let left!: net.Socket;
    srv.listen(sock.path, () => { left = net.createConnection(sock.path); left.on('error', reject); });
  });
}
