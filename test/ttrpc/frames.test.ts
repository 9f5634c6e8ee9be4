// Byte-exact framing: the worked examples of shim-protocol.md §2.6, produced and consumed by our code.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { errNotFound, Status, StatusError } from '../../src/errors';
import { ttrpc } from '../../src/gen/proto';
import { FrameDecoder, MAX_MESSAGE_SIZE, TtrpcClient, TtrpcServer, encodeFrame, encodeHeader } from '../../src/ttrpc';
import { RawPeer, deferred, tempSocket } from './helpers';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ascii = (s: string) => Buffer.from(s, 'ascii').toString('hex');

// containerd → shim, stream 1, Connect{id:"abc"}, namespace "default".
const CONNECT_REQUEST = hex(
  '00000050 00000001 01 00' +
  `0a17${ascii('containerd.task.v2.Task')} 1207${ascii('Connect')} 1a05 0a03616263` +
  `2a25 0a1a${ascii('containerd-namespace-ttrpc')} 1207${ascii('default')}`,
);
const CONNECT_RESPONSE = hex('00000008 00000001 02 00 1206 08d209 10ae2c');
const NOT_FOUND_RESPONSE = hex(`00000026 00000003 02 00 0a24 0805 1220${ascii('container not created: not found')}`);
const CONNECT_RESPONSE_PAYLOAD = hex('08d209 10ae2c'); // ConnectResponse{shim_pid:1234, task_pid:5678}

describe('frame codec', () => {
  it('decodes the §2.6 Connect request byte for byte, whatever the chunking', () => {
    expect(CONNECT_REQUEST.length).toBe(90);
    for (let split = 0; split <= CONNECT_REQUEST.length; split++) {
      const d = new FrameDecoder();
      const out = [...d.write(CONNECT_REQUEST.subarray(0, split)), ...d.write(CONNECT_REQUEST.subarray(split))];
      expect(out).toHaveLength(1);
      const r = out[0]!;
      if (r.kind !== 'frame') throw new Error('expected a frame');
      expect(r.frame).toMatchObject({ streamId: 1, type: 1, flags: 0 });
      const req = ttrpc.Request.decode(r.frame.payload);
      expect(req.service).toBe('containerd.task.v2.Task');
      expect(req.method).toBe('Connect');
      expect(Buffer.from(req.payload).toString('hex')).toBe('0a03616263');
      expect(req.metadata).toEqual([{ key: 'containerd-namespace-ttrpc', value: 'default' }]);
      expect(d.partial).toBe(false);
    }
  });

  it('decodes byte-at-a-time streams of several frames including a zero-length one', () => {
    const empty = hex('00000000 00000005 02 00');
    const all = Buffer.concat([CONNECT_RESPONSE, empty, NOT_FOUND_RESPONSE]);
    const d = new FrameDecoder();
    const frames = [];
    for (const b of all) frames.push(...d.write(Buffer.from([b])));
    expect(frames.map((r) => (r.kind === 'frame' ? [r.frame.streamId, r.frame.payload.length] : r.kind)))
      .toEqual([[1, 8], [5, 0], [3, 38]]);
    const nf = frames[2]!;
    if (nf.kind !== 'frame') throw new Error('expected a frame');
    expect(ttrpc.Response.decode(nf.frame.payload).status).toMatchObject({ code: 5, message: 'container not created: not found' });
  });

  it('encodes the §2.6 frames exactly', () => {
    const connect = ttrpc.Request.encode({
      service: 'containerd.task.v2.Task', method: 'Connect', payload: hex('0a03616263'),
      metadata: [{ key: 'containerd-namespace-ttrpc', value: 'default' }],
    }).finish();
    expect(encodeFrame(1, 1, 0, connect).equals(CONNECT_REQUEST)).toBe(true);
    expect(encodeFrame(1, 2, 0, ttrpc.Response.encode({ payload: CONNECT_RESPONSE_PAYLOAD }).finish())
      .equals(CONNECT_RESPONSE)).toBe(true);
    expect(encodeHeader({ length: 0, streamId: 5, type: 2, flags: 0 }).toString('hex')).toBe('00000000000000050200');
    expect(() => encodeFrame(1, 1, 0, Buffer.alloc(MAX_MESSAGE_SIZE + 1))).toThrow(RangeError);
  });

  it('skips an oversized payload without buffering it and reports its header afterwards', () => {
    const d = new FrameDecoder(16);
    const out = [
      ...d.write(hex('00000400 00000007 01 00')),
      ...d.write(Buffer.alloc(1000)),
    ];
    expect(out).toEqual([]);
    expect(d.partial).toBe(true);
    const rest = d.write(Buffer.concat([Buffer.alloc(24), hex('00000000 00000009 02 00')]));
    expect(rest).toEqual([
      { kind: 'oversize', header: { length: 1024, streamId: 7, type: 1, flags: 0 } },
      { kind: 'frame', frame: { streamId: 9, type: 2, flags: 0, payload: Buffer.alloc(0) } },
    ]);
  });
});

describe('wire bytes on real sockets', () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => { for (const c of cleanups.splice(0)) c(); });

  it('the server answers the §2.6 request with the §2.6 response, NOT_FOUND error and empty frames', async () => {
    const sock = tempSocket();
    const server = new TtrpcServer();
    cleanups.push(() => { server.destroy(); sock.cleanup(); });
    server.register('containerd.task.v2.Task', {
      Connect: async (payload, ctx) => {
        expect(payload.toString('hex')).toBe('0a03616263');
        expect(ctx.metadata.get('containerd-namespace-ttrpc')).toEqual(['default']);
        return CONNECT_RESPONSE_PAYLOAD;
      },
      State: async () => { throw errNotFound('container not created'); },
      Shutdown: async () => new Uint8Array(0),
    });
    await server.listen(sock.path);
    const peer = await RawPeer.connect(sock.path);
    cleanups.push(() => peer.destroy());

    await peer.write(CONNECT_REQUEST);
    await peer.write(encodeFrame(3, 1, 0, ttrpc.Request.encode({ service: 'containerd.task.v2.Task', method: 'State' }).finish()));
    await peer.write(encodeFrame(5, 1, 0, ttrpc.Request.encode({ service: 'containerd.task.v2.Task', method: 'Shutdown' }).finish()));
    await peer.waitFrames(3);
    const bytes = peer.frames.map((f) => encodeFrame(f.streamId, f.type, f.flags, f.payload).toString('hex')).sort();
    expect(bytes).toEqual([
      CONNECT_RESPONSE.toString('hex'),
      NOT_FOUND_RESPONSE.toString('hex'),
      '00000000000000050200',
    ].sort());
  });

  it('the client sends the §2.6 request bytes, timeout_nano and decodes the §2.6 responses', async () => {
    const sock = tempSocket();
    const received: Buffer[] = [];
    const got = deferred();
    const raw = net.createServer((s) => {
      s.on('data', (c: Buffer) => {
        received.push(c);
        const all = Buffer.concat(received);
        if (all.length >= CONNECT_REQUEST.length) {
          s.write(Buffer.concat([NOT_FOUND_RESPONSE, CONNECT_RESPONSE]));
          got.resolve();
        }
      });
    });
    await new Promise<void>((r) => raw.listen(sock.path, r));
    const client = await TtrpcClient.connect(sock.path);
    cleanups.push(() => { client.destroy(); raw.close(); sock.cleanup(); });

    const connect = client.call('containerd.task.v2.Task', 'Connect', hex('0a03616263'),
      { metadata: { 'containerd-namespace-ttrpc': 'default' } });
    const state = client.call('containerd.task.v2.Task', 'State', new Uint8Array(0), { timeoutMs: 5000 });
    await got.promise;
    expect((await connect).equals(CONNECT_RESPONSE_PAYLOAD)).toBe(true);
    const err = await state.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StatusError);
    expect(err).toMatchObject({ status: Status.NOT_FOUND, message: 'container not created: not found' });

    const all = Buffer.concat(received);
    expect(all.subarray(0, 90).equals(CONNECT_REQUEST)).toBe(true);
    const d = new FrameDecoder();
    const frames = d.write(all.subarray(90));
    const second = frames[0]!;
    if (second.kind !== 'frame') throw new Error('expected a frame');
    expect(second.frame.streamId).toBe(3);
    const req = ttrpc.Request.decode(second.frame.payload);
    expect(req.timeoutNano.toNumber()).toBe(5_000_000_000);
    expect(req.payload.length).toBe(0);
  });
});
