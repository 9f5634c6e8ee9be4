// Server rules on raw frames: stream ids, undecodable requests, oversized frames, Data and unknown frames.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Status } from '../../src/errors';
import { ttrpc } from '../../src/gen/proto';
import { TtrpcServer, encodeFrame, encodeHeader } from '../../src/ttrpc';
import { RawPeer, tempSocket } from './helpers';

let server: TtrpcServer;
let peer: RawPeer;
let cleanup: () => void;

beforeEach(async () => {
  const sock = tempSocket();
  server = new TtrpcServer();
  server.register('p.P', {
    Echo: async (payload) => payload,
    Hang: () => new Promise(() => {}),
  });
  await server.listen(sock.path);
  peer = await RawPeer.connect(sock.path);
  cleanup = () => { peer.destroy(); server.destroy(); sock.cleanup(); };
});
afterEach(() => cleanup());

const echo = (payload: string): ttrpc.IRequest => ({ service: 'p.P', method: 'Echo', payload: Buffer.from(payload) });

describe('stream ids', () => {
  it('rejects even ids and ids that do not increase, on that stream id, and keeps serving', async () => {
    await peer.sendRequest(2, echo('even'));
    expect((await peer.response(2)).status).toMatchObject({
      code: Status.INVALID_ARGUMENT, message: 'StreamID must be odd for client initiated streams' });

    await peer.sendRequest(7, echo('seven'));
    expect(Buffer.from((await peer.response(7)).payload).toString()).toBe('seven');
    for (const id of [7, 5]) {
      await peer.sendRequest(id, echo('again'));
      expect((await peer.response(id)).status).toMatchObject({
        code: Status.INVALID_ARGUMENT, message: 'StreamID cannot be re-used and must increment' });
    }
    await peer.sendRequest(9, echo('nine'));
    const ok = await peer.response(9);
    expect(ok.status).toBeNull();
    expect(Buffer.from(ok.payload).toString()).toBe('nine');
  });

  it('answers undecodable Request bytes with INVALID_ARGUMENT', async () => {
    await peer.write(encodeFrame(1, 1, 0, Buffer.from([0x20, 0xff]))); // a varint that never ends
    const res = await peer.response(1);
    expect(res.status?.code).toBe(Status.INVALID_ARGUMENT);
    expect(res.status?.message).toMatch(/^unmarshal request error: /);
    await peer.sendRequest(3, echo('after'));
    expect(Buffer.from((await peer.response(3)).payload).toString()).toBe('after');
  });
});

describe('oversized frames', () => {
  it('discards the payload, answers RESOURCE_EXHAUSTED on that stream, and the connection stays usable', async () => {
    const length = (4 << 20) + 1;
    await peer.write(encodeHeader({ length, streamId: 1, type: 1, flags: 0 }));
    const chunk = Buffer.alloc(64 << 10, 0xab);
    for (let sent = 0; sent < length; sent += chunk.length) await peer.write(chunk.subarray(0, Math.min(chunk.length, length - sent)));
    const res = await peer.response(1);
    expect(res.status).toMatchObject({
      code: Status.RESOURCE_EXHAUSTED, message: 'message length 4194305 exceed maximum message size of 4194304' });
    await peer.sendRequest(3, echo('still here'));
    expect(Buffer.from((await peer.response(3)).payload).toString()).toBe('still here');
  });

  it('accepts a frame of exactly 4 MiB', async () => {
    const payloadLength = (4 << 20) - 16; // 11 bytes of service and method, 1 tag, 4 length bytes
    const req = ttrpc.Request.encode({ service: 'p.P', method: 'Echo', payload: Buffer.alloc(payloadLength, 1) }).finish();
    expect(req.length).toBe(4 << 20);
    await peer.write(encodeFrame(1, 1, 0, req));
    const res = await peer.response(1);
    expect(res.status).toBeNull();
    expect(res.payload.length).toBe(payloadLength);
  });
});

describe('other frame types', () => {
  it('ignores Data for a running unary call, answers Data for an unknown stream, ignores unknown types', async () => {
    await peer.sendRequest(1, { service: 'p.P', method: 'Hang' });
    await peer.write(encodeFrame(1, 3, 0x01, Buffer.from('data')));
    await peer.write(encodeFrame(99, 3, 0x05, Buffer.alloc(0)));
    expect((await peer.response(99)).status).toMatchObject({
      code: Status.INVALID_ARGUMENT, message: 'StreamID is no longer active' });
    await peer.write(encodeFrame(11, 0x7f, 0, Buffer.from('future')));
    await peer.write(encodeFrame(13, 2, 0, Buffer.alloc(0)));
    await peer.sendRequest(15, echo('fine'));
    expect(Buffer.from((await peer.response(15)).payload).toString()).toBe('fine');
    expect(peer.frames.filter((f) => f.streamId === 1 || f.streamId === 11 || f.streamId === 13)).toEqual([]);
  });

  it('answers a request on a half-closed connection before ending it', async () => {
    await peer.sendRequest(1, echo('bye'));
    peer.socket.end();
    expect(Buffer.from((await peer.response(1)).payload).toString()).toBe('bye');
    await new Promise<void>((r) => (peer.closed ? r() : peer.socket.once('close', () => r())));
    while (server.connections > 0) await new Promise((r) => setImmediate(r));
  });
});
