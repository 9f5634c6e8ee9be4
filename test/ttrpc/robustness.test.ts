// Hostile input: random, truncated and oversized frames over raw sockets. The server must keep answering,
// drop what it cannot parse, and hold memory bounded by one frame per connection, not by what was sent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from '../../src/errors';
import { ttrpc } from '../../src/gen/proto';
import { TtrpcClient, TtrpcServer, encodeFrame, encodeHeader } from '../../src/ttrpc';
import { RawPeer, prng, tempSocket, turns } from './helpers';

let server: TtrpcServer;
let socketPath: string;
let cleanup: () => void;

beforeAll(async () => {
  const sock = tempSocket();
  socketPath = sock.path;
  server = new TtrpcServer();
  server.register('fuzz.F', { Echo: async (payload) => payload });
  await server.listen(sock.path);
  cleanup = () => { server.destroy(); sock.cleanup(); };
});
afterAll(() => cleanup());

/** A fresh client proves the server still serves; it is closed again so connection counts stay exact. */
async function assertServes(): Promise<void> {
  const client = await TtrpcClient.connect(socketPath);
  try {
    expect((await client.call('fuzz.F', 'Echo', Buffer.from('alive'))).toString()).toBe('alive');
  } finally {
    await client.close();
  }
}

async function waitForConnections(n: number): Promise<void> {
  while (server.connections !== n) await turns(1);
}

describe('robustness', () => {
  it('answers every Request and Data frame among 3000 random well-framed frames', async () => {
    const rnd = prng(0x5eed);
    const peer = await RawPeer.connect(socketPath);
    let expected = 0;
    let maxId = 0;
    for (let i = 0; i < 3000; i++) {
      const type = rnd.int(5);
      const streamId = rnd.int(2) ? rnd.int(0x100000000) : 2 * i + 1;
      maxId = Math.max(maxId, streamId);
      const payload = rnd.int(3) === 0
        ? ttrpc.Request.encode({ service: rnd.bytes(6).toString('latin1'), method: 'M', payload: rnd.bytes(rnd.int(64)) }).finish()
        : rnd.bytes(rnd.int(300));
      if (type === 1 || type === 3) expected++;
      await peer.write(encodeFrame(streamId, type, rnd.int(256), payload));
    }
    await peer.waitFrames(expected);
    expect(peer.frames.length).toBe(expected);
    for (const f of peer.frames) {
      expect(f.type).toBe(2);
      const code = ttrpc.Response.decode(f.payload).status?.code;
      expect([Status.INVALID_ARGUMENT, Status.UNIMPLEMENTED]).toContain(code);
    }
    peer.frames.length = 0;
    expect(maxId).toBeLessThan(0xffffffff);
    await peer.sendRequest(0xffffffff, { service: 'fuzz.F', method: 'Echo', payload: Buffer.from('same socket') });
    expect(Buffer.from((await peer.response(0xffffffff)).payload).toString()).toBe('same socket');
    peer.destroy();
    await waitForConnections(0);
    await assertServes();
  });

  it('drops connections that send random bytes, truncated headers or truncated payloads', async () => {
    const rnd = prng(42);
    const peers: RawPeer[] = [];
    for (let i = 0; i < 300; i++) {
      const peer = await RawPeer.connect(socketPath);
      peers.push(peer);
      switch (i % 3) {
        case 0: await peer.write(rnd.bytes(1 + rnd.int(16 << 10))); break;
        case 1: await peer.write(rnd.bytes(1 + rnd.int(9))); break;
        default: {
          const frame = encodeFrame(2 * i + 1, 1, 0, rnd.bytes(1 + rnd.int(4096)));
          await peer.write(frame.subarray(0, 10 + rnd.int(frame.length - 10)));
        }
      }
      if (i % 2) peer.socket.end();
      else peer.destroy();
    }
    await assertServes();
    for (const p of peers) p.destroy();
    await waitForConnections(0);
    await assertServes();
  });

  it('keeps memory bounded while 100 oversized frames (about 700 MiB, one of 300 MiB) stream through one connection', async () => {
    const peer = await RawPeer.connect(socketPath);
    // The first frame alone is far above the bound asserted below, so it cannot have been buffered.
    const lengths = [300 << 20, ...Array.from({ length: 99 }, () => (4 << 20) + 4096)];
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    await assertServes();
    const before = process.memoryUsage().rss;
    let peak = before;
    for (const [i, length] of lengths.entries()) {
      await peer.write(encodeHeader({ length, streamId: 2 * i + 1, type: 1, flags: 0 }));
      for (let sent = 0; sent < length; sent += chunk.length) {
        await peer.write(chunk.subarray(0, Math.min(chunk.length, length - sent)));
        if (sent % (32 << 20) === 0) peak = Math.max(peak, process.memoryUsage().rss);
      }
    }
    await peer.waitFrames(100);
    peak = Math.max(peak, process.memoryUsage().rss);
    const totalSent = lengths.reduce((a, b) => a + b + 10, 0);
    const growth = peak - before;
    expect(totalSent).toBeGreaterThan(690 << 20);
    expect(growth).toBeLessThan(128 << 20);
    expect(peer.frames.map((f) => f.streamId)).toEqual(lengths.map((_, i) => 2 * i + 1));
    for (const [i, f] of peer.frames.entries()) {
      expect(ttrpc.Response.decode(f.payload).status).toMatchObject({ code: Status.RESOURCE_EXHAUSTED,
        message: `message length ${lengths[i]} exceed maximum message size of 4194304` });
    }
    await peer.sendRequest(201, { service: 'fuzz.F', method: 'Echo', payload: Buffer.from('after oversize') });
    expect(Buffer.from((await peer.response(201)).payload).toString()).toBe('after oversize');
    console.log(`oversize: sent ${(totalSent / 2 ** 20).toFixed(0)} MiB, peak rss growth ${(growth / 2 ** 20).toFixed(1)} MiB`);
    peer.destroy();
  });
});
