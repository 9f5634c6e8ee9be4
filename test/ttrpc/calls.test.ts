// Client ↔ server calls over a unix socket: routing, metadata, typed layer, concurrency, timeouts.
import { statSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { KybernateError, Status, StatusError } from '../../src/errors';
import { google } from '../../src/gen/proto';
import { TtrpcClient, TtrpcServer, registerService, unary, type CallContext } from '../../src/ttrpc';
import { deferred, tempSocket } from './helpers';

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0)) c(); });

async function setup(register: (s: TtrpcServer) => void): Promise<{ server: TtrpcServer; client: TtrpcClient; path: string }> {
  const sock = tempSocket();
  const server = new TtrpcServer();
  register(server);
  await server.listen(sock.path);
  const client = await TtrpcClient.connect(sock.path);
  cleanups.push(() => { client.destroy(); server.destroy(); sock.cleanup(); });
  return { server, client, path: sock.path };
}

const rejection = (p: Promise<unknown>) => p.then(() => { throw new Error('expected a rejection'); }, (e: unknown) => e);

describe('calls', () => {
  it('creates the socket with mode 0600 and round-trips payload and metadata', async () => {
    let seen: CallContext | undefined;
    const { client, path } = await setup((s) => s.register('echo.v1.Echo', {
      Echo: async (payload, ctx) => { seen = ctx; return Buffer.concat([Buffer.from('echo:'), payload]); },
    }));
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const out = await client.call('echo.v1.Echo', 'Echo', Buffer.from('hi'),
      { metadata: { 'Containerd-Namespace-Ttrpc': 'k8s.io', traceparent: ['a', 'b'] } });
    expect(out.toString()).toBe('echo:hi');
    expect(seen?.service).toBe('echo.v1.Echo');
    expect(seen?.method).toBe('Echo');
    expect(seen?.streamId).toBe(1);
    expect([...seen!.metadata]).toEqual([['containerd-namespace-ttrpc', ['k8s.io']], ['traceparent', ['a', 'b']]]);
    expect(seen?.signal.aborted).toBe(false);
    await client.call('echo.v1.Echo', 'Echo', Buffer.from('x'));
    expect(seen?.streamId).toBe(3);
  });

  it('answers unknown services and methods with UNIMPLEMENTED naming them', async () => {
    const { client } = await setup((s) => s.register('a.A', { M: async () => new Uint8Array(0) }));
    expect(await rejection(client.call('b.B', 'M', new Uint8Array(0))))
      .toMatchObject({ status: Status.UNIMPLEMENTED, message: 'service b.B' });
    expect(await rejection(client.call('a.A', 'Nope', new Uint8Array(0))))
      .toMatchObject({ status: Status.UNIMPLEMENTED, message: 'method Nope' });
    expect(await rejection(client.call('a.A', 'constructor', new Uint8Array(0))))
      .toMatchObject({ status: Status.UNIMPLEMENTED, message: 'method constructor' });
    expect((await client.call('a.A', 'M', new Uint8Array(0))).length).toBe(0);
  });

  it('maps handler errors through toStatus', async () => {
    const { client } = await setup((s) => s.register('e.E', {
      Kyb: async () => { throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', 'cannot pause a stopped task'); },
      Enoent: async () => { throw Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' }); },
      Plain: () => { throw new Error('boom'); },
      Status: async () => { throw new StatusError(Status.ABORTED, 'aborted here'); },
    }));
    const call = (m: string) => rejection(client.call('e.E', m, new Uint8Array(0)));
    expect(await call('Kyb')).toMatchObject({ status: Status.FAILED_PRECONDITION, message: 'cannot pause a stopped task' });
    expect(await call('Enoent')).toMatchObject({ status: Status.NOT_FOUND, message: 'ENOENT: no such file' });
    expect(await call('Plain')).toMatchObject({ status: Status.UNKNOWN, message: 'boom' });
    expect(await call('Status')).toMatchObject({ status: Status.ABORTED, message: 'aborted here' });
  });

  it('serves one typed table under two service names and rejects undecodable requests', async () => {
    const table = {
      Describe: unary(google.rpc.Status, google.rpc.Status, (req, ctx) => ({
        code: req.code + 1, message: `${ctx.service}:${req.message}`,
      })),
    };
    const { client } = await setup((s) => registerService(s, ['containerd.task.v2.Task', 'containerd.task.v3.Task'], table));
    for (const svc of ['containerd.task.v2.Task', 'containerd.task.v3.Task']) {
      const res = await client.request(svc, 'Describe', google.rpc.Status, google.rpc.Status, { code: 41, message: 'x' });
      expect(res).toMatchObject({ code: 42, message: `${svc}:x` });
    }
    // field 1 (code) with a varint that never ends.
    const err = await rejection(client.call('containerd.task.v2.Task', 'Describe', Buffer.from([0x08, 0xff])));
    expect(err).toMatchObject({ status: Status.INVALID_ARGUMENT });
    expect((err as Error).message).toMatch(/^unmarshal containerd.task.v2.Task\/Describe request: /);
  });

  it('answers 200 concurrent calls out of order while a never-ending call stays open', async () => {
    const gates = new Map<number, () => void>();
    const waitStarted = deferred();
    const allArrived = deferred();
    const { client } = await setup((s) => s.register('c.C', {
      Wait: (_p, ctx) => {
        waitStarted.resolve();
        return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
      },
      Slow: async (payload) => {
        const n = payload.readUInt32BE(0);
        await new Promise<void>((resolve) => {
          gates.set(n, resolve);
          if (gates.size === 200) allArrived.resolve();
        });
        return payload;
      },
    }));
    const wait = client.call('c.C', 'Wait', new Uint8Array(0));
    await waitStarted.promise;
    const order: number[] = [];
    const calls = Array.from({ length: 200 }, (_, n) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n);
      return client.call('c.C', 'Slow', b).then((out) => { order.push(out.readUInt32BE(0)); });
    });
    await allArrived.promise;
    expect(client.pendingCalls).toBe(201);
    // Release in reverse: every response must reach its own caller regardless of arrival order.
    const release = [...gates.keys()].sort((a, b) => b - a);
    for (const n of release) gates.get(n)!();
    await Promise.all(calls);
    expect(order).toEqual(release);
    expect(client.pendingCalls).toBe(1);
    client.destroy();
    expect(await rejection(wait)).toMatchObject({ status: Status.UNAVAILABLE, message: 'ttrpc: closed' });
  });

  it('times out locally with DEADLINE_EXCEEDED and the handler sees its signal abort', async () => {
    const aborted = deferred<unknown>();
    const { client } = await setup((s) => s.register('t.T', {
      Hang: (_p, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => {
        aborted.resolve(ctx.signal.reason);
        reject(ctx.signal.reason);
      })),
      Quick: async () => Buffer.from('ok'),
    }));
    const err = await rejection(client.call('t.T', 'Hang', new Uint8Array(0), { timeoutMs: 30 }));
    expect(err).toBeInstanceOf(StatusError);
    expect(err).toMatchObject({ status: Status.DEADLINE_EXCEEDED });
    const reason = await aborted.promise;
    expect(reason).toMatchObject({ code: 'KYB_ERR_DEADLINE' });
    expect((await client.call('t.T', 'Quick', new Uint8Array(0), { timeoutMs: 10_000 })).toString()).toBe('ok');
  });

  it('cancels a call locally through an AbortSignal', async () => {
    const { client } = await setup((s) => s.register('t.T', { Hang: () => new Promise(() => {}) }));
    const ac = new AbortController();
    const p = client.call('t.T', 'Hang', new Uint8Array(0), { signal: ac.signal });
    ac.abort();
    expect(await rejection(p)).toMatchObject({ status: Status.CANCELLED });
    expect(client.pendingCalls).toBe(0);
  });

  it('refuses to send a request above 4 MiB', async () => {
    const { client } = await setup((s) => s.register('big.B', { Big: async () => new Uint8Array(0) }));
    const err = await rejection(client.call('big.B', 'Big', Buffer.alloc(4 << 20)));
    expect(err).toMatchObject({ status: Status.RESOURCE_EXHAUSTED });
    expect((err as Error).message).toMatch(/^message length \d+ exceed maximum message size of 4194304$/);
  });

  it('answers RESOURCE_EXHAUSTED when a response would exceed 4 MiB, and stays usable', async () => {
    const { client } = await setup((s) => s.register('big.B', {
      Huge: async () => Buffer.alloc(4 << 20),
      Fine: async () => Buffer.alloc((4 << 20) - 16, 7),
    }));
    expect(await rejection(client.call('big.B', 'Huge', new Uint8Array(0))))
      .toMatchObject({ status: Status.RESOURCE_EXHAUSTED });
    const fine = await client.call('big.B', 'Fine', new Uint8Array(0));
    expect(fine.length).toBe((4 << 20) - 16);
    expect(fine.every((b) => b === 7)).toBe(true);
  });
});
