// The Request envelope on the wire: what a server accepts and rejects, byte for byte. The rules are those of
// containerd/ttrpc's server (server.go: proto.Unmarshal of the Request; an error answers InvalidArgument
// "unmarshal request error: ..." on that stream) with protobuf-go's proto3 decoding: truncated fields, bad
// tags, reserved wire types and invalid UTF-8 in strings are errors; unknown fields and known fields of
// another wire type are skipped.
import Long from 'long';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Status } from '../../src/errors';
import { google, ttrpc } from '../../src/gen/proto';
import { TtrpcClient, TtrpcServer, encodeFrame, registerService, unary } from '../../src/ttrpc';
import { decodeRequest } from '../../src/ttrpc/request-codec';
import { RawPeer, tempSocket } from './helpers';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ascii = (s: string) => Buffer.from(s, 'ascii').toString('hex');

// service "p.P", method "Echo": the prefix of every well-formed request below.
const ECHO = `0a03${ascii('p.P')} 1204${ascii('Echo')}`;

let server: TtrpcServer;
let peer: RawPeer;
let socketPath: string;
let cleanup: () => void;

beforeEach(async () => {
  const sock = tempSocket();
  socketPath = sock.path;
  server = new TtrpcServer();
  server.register('p.P', { Echo: async (payload) => payload });
  // A typed method: its payload is decoded by the generated class (google.rpc.Status: code, message).
  registerService(server, 't.T', { Get: unary(google.rpc.Status, google.rpc.Status, (req) => req) });
  await server.listen(sock.path);
  peer = await RawPeer.connect(sock.path);
  cleanup = () => { peer.destroy(); server.destroy(); sock.cleanup(); };
});
afterEach(() => cleanup());

/** Sends `payload` as the Request frame of stream `id` and returns the decoded Response. */
async function send(id: number, payload: string): Promise<ttrpc.Response> {
  await peer.write(encodeFrame(id, 1, 0, hex(payload)));
  return peer.response(id);
}

describe('malformed Request envelopes', () => {
  // Each answers InvalidArgument on its stream (as containerd's ttrpc does), never a call of some other method.
  const cases: [string, string, RegExp][] = [
    ['field 1 (service) announcing 23 bytes with 5 present', '0a17636f6e7461', /service.*23 bytes.*5/],
    ['a payload (field 3) cut short', `${ECHO} 1a0a 0102`, /payload.*10 bytes.*2/],
    ['a tag whose varint never ends', `${ECHO} a0`, /truncated varint/],
    ['field number 0', `${ECHO} 0000`, /field number 0/],
    ['wire type 7 (reserved)', `${ECHO} 0f`, /wire type 7/],
    ['wire type 6 (reserved)', `${ECHO} 0e`, /wire type 6/],
    ['an end-group with no group open', `${ECHO} 4c`, /end group/],
    ['a group closed by another field number', `${ECHO} 4b 54`, /end group/],
    ['a group that never ends', `${ECHO} 4b 5001`, /group/],
    ['a timeout (field 4) varint of 11 bytes', `${ECHO} 20 ffffffffffffffffffff01`, /varint/],
    ['an unknown fixed64 cut short', `${ECHO} 49 01020304`, /8 bytes.*4/],
    ['an unknown fixed32 cut short', `${ECHO} 4d 0102`, /4 bytes.*2/],
    ['a service name that is not UTF-8', `0a02c328 1204${ascii('Echo')}`, /service.*UTF-8/],
    ['a metadata entry (field 5) cut short', `${ECHO} 2a08 0a02${ascii('ab')}`, /metadata.*8 bytes.*4/],
    ['a metadata key that is not UTF-8', `${ECHO} 2a04 0a02ff41`, /metadata.*key.*UTF-8/],
    ['a metadata entry whose value is cut short', `${ECHO} 2a04 0a01${ascii('k')} 12`, /truncated varint/],
  ];
  for (const [name, payload, detail] of cases) {
    it(`answers ${name} with InvalidArgument and keeps serving`, async () => {
      const res = await send(1, payload);
      expect(res.status?.code).toBe(Status.INVALID_ARGUMENT);
      expect(res.status?.message).toMatch(/^unmarshal request error: /);
      expect(res.status?.message).toMatch(detail);
      await peer.sendRequest(3, { service: 'p.P', method: 'Echo', payload: Buffer.from('after') });
      expect(Buffer.from((await peer.response(3)).payload).toString()).toBe('after');
    });
  }

  it('uses up the stream id of a rejected Request, as containerd\'s ttrpc does', async () => {
    expect((await send(5, '0a17636f6e7461')).status?.code).toBe(Status.INVALID_ARGUMENT);
    await peer.sendRequest(5, { service: 'p.P', method: 'Echo', payload: Buffer.from('again') });
    expect((await peer.response(5)).status).toMatchObject({
      code: Status.INVALID_ARGUMENT, message: 'StreamID cannot be re-used and must increment' });
  });

  it('checks the stream id before the payload (an even id is named as such even when the payload is bad)', async () => {
    expect((await send(2, '0a17636f6e7461')).status).toMatchObject({
      code: Status.INVALID_ARGUMENT, message: 'StreamID must be odd for client initiated streams' });
  });

  it('answers a typed method\'s truncated string field with InvalidArgument, not a shortened string', async () => {
    // google.rpc.Status{message: 10 bytes announced, 3 present}.
    const res = await send(1, `0a03${ascii('t.T')} 1203${ascii('Get')} 1a05 120a${ascii('abc')}`);
    expect(res.status?.code).toBe(Status.INVALID_ARGUMENT);
    expect(res.status?.message).toMatch(/^unmarshal t\.T\/Get request: /);
  });
});

describe('well-formed Request envelopes', () => {
  it('skips unknown fields of every wire type and known fields of another wire type', async () => {
    const unknown = '48 ac02' + '49 0102030405060708' + '4a03 616263' + '4b 5001 5a01 00 4c' + '4d 01020304';
    const wrongType = '08 05' + '1d 01020304'; // service as a varint, payload as a fixed32: skipped
    const res = await send(1, `${ECHO} ${unknown} ${wrongType} 1a02 6869`);
    expect(res.status).toBeNull();
    expect(Buffer.from(res.payload).toString()).toBe('hi');
  });

  it('decodes every field; the last of a repeated scalar wins and metadata accumulates in order', () => {
    const bytes = hex(`0a01${ascii('x')} ${ECHO} 1a02 6869 20 ffffffffffffffffff01 20 80ade204` +
      `2a06 0a01${ascii('a')} 1201${ascii('1')} 2a06 0a01${ascii('a')} 1201${ascii('2')} 2a03 0a01${ascii('b')}`);
    const req = decodeRequest(bytes);
    expect(req).toMatchObject({ service: 'p.P', method: 'Echo', timeoutNano: 10_000_000 });
    expect(req.payload.toString()).toBe('hi');
    expect(req.metadata).toEqual([{ key: 'a', value: '1' }, { key: 'a', value: '2' }, { key: 'b', value: '' }]);
    // The same bytes protobufjs writes decode to what was written, negative int64 timeouts included.
    const written = ttrpc.Request.encode({ service: 's', method: 'm', payload: Buffer.from([0]), timeoutNano: Long.fromNumber(-1) }).finish();
    expect(decodeRequest(written)).toMatchObject({ service: 's', method: 'm', timeoutNano: -1 });
    expect(decodeRequest(new Uint8Array(0))).toEqual({ service: '', method: '', payload: Buffer.alloc(0), timeoutNano: 0, metadata: [] });
  });

  it('serves calls from our own client unchanged', async () => {
    const client = await TtrpcClient.connect(socketPath);
    try {
      expect((await client.call('p.P', 'Echo', Buffer.from('x'), { timeoutMs: 5000, metadata: { k: ['v', 'w'] } })).toString()).toBe('x');
      expect(await client.request('t.T', 'Get', google.rpc.Status, google.rpc.Status, { code: 7, message: 'ü' }))
        .toMatchObject({ code: 7, message: 'ü' });
    } finally {
      await client.close();
    }
  });
});
