// The front ↔ spare wire (src/shim/spare/protocol.ts) and the spare's environment rule (launch.ts).
import { describe, expect, it } from 'vitest';
import { environmentMismatch } from '../../src/shim/spare/launch';
import {
  ANSWER_DONE, ANSWER_FALL_BACK, FrameError, decodeAnswer, decodeRequest, encodeAnswer, encodeRequest, type SpareRequest,
} from '../../src/shim/spare/protocol';

const req: SpareRequest = {
  build: '0123456789abcdef', cwd: '/run/containerd/io.containerd.runtime.v2.task/default/c1',
  argv: ['-namespace', 'default', '-id', 'c1', '-address', '/run/containerd/containerd.sock', 'start'],
  env: ['PATH=/usr/bin', 'TTRPC_ADDRESS=/run/containerd/containerd.sock.ttrpc', 'EMPTY='], stdin: Buffer.from([0, 1, 2, 255, 0]),
};

describe('spare protocol', () => {
  it('round-trips a request and both answers, NUL bytes and UTF-8 included', () => {
    expect(decodeRequest(encodeRequest(req))).toEqual(req);
    const u = { ...req, argv: ['-id', 'zé\u{1F600}', 'start'], stdin: Buffer.alloc(0) };
    expect(decodeRequest(encodeRequest(u))).toEqual(u);
    const done = { kind: ANSWER_DONE, exitCode: 3, stdout: Buffer.from([0, 9, 0]), stderr: Buffer.from('oops\n') } as const;
    expect(decodeAnswer(encodeAnswer(done))).toEqual(done);
    const back = { kind: ANSWER_FALL_BACK, reason: 'claimed' } as const;
    expect(decodeAnswer(encodeAnswer(back))).toEqual(back);
  });

  it('tells a frame that is not whole yet from garbage, at every cut', () => {
    const full = encodeRequest(req);
    for (let n = 0; n < full.length; n++) {
      let err: unknown;
      try { decodeRequest(full.subarray(0, n)); } catch (e) { err = e; }
      expect(err, `cut at ${n}`).toBeInstanceOf(FrameError);
      expect((err as FrameError).incomplete, `cut at ${n}`).toBe(true);
    }
  });

  it('refuses a wrong magic, a wrong version, trailing bytes and absurd lengths as not incomplete', () => {
    const full = encodeRequest(req);
    const bad = (b: Buffer): FrameError => { try { decodeRequest(b); } catch (e) { return e as FrameError; } throw new Error('decoded'); };
    const magic = Buffer.from(full); magic.write('XXXX', 0, 'latin1');
    expect(bad(magic).incomplete).toBe(false);
    const version = Buffer.from(full); version.writeUInt32BE(2, 4);
    expect(bad(version).message).toMatch(/protocol version 2/);
    expect(bad(Buffer.concat([full, Buffer.from([0])])).message).toMatch(/after the request/);
    const huge = Buffer.from(full); huge.writeUInt32BE(0xffffffff, 8);
    expect(bad(huge).incomplete).toBe(false);
    expect(() => decodeAnswer(Buffer.from('KYBR\0\0\0\x07', 'latin1'))).toThrow(/unknown answer kind 7/);
  });
});

describe('which environments a spare may serve', () => {
  it('only one exec\'d with the same loader, Node and libuv variables', () => {
    const boot = { PATH: '/a', LD_PRELOAD: '/lib/x.so', NODE_OPTIONS: '--x', TTRPC_ADDRESS: '/a.ttrpc' };
    expect(environmentMismatch(boot, { ...boot, PATH: '/b', TTRPC_ADDRESS: '/b.ttrpc', NAMESPACE: 'k8s.io' })).toBeUndefined();
    expect(environmentMismatch(boot, { ...boot, LD_PRELOAD: '/lib/y.so' })).toMatch(/LD_PRELOAD/);
    expect(environmentMismatch(boot, { PATH: '/a', NODE_OPTIONS: '--x' })).toMatch(/LD_PRELOAD=".*", this start has null/);
    expect(environmentMismatch({}, { LD_LIBRARY_PATH: '/x' })).toMatch(/LD_LIBRARY_PATH/);
    expect(environmentMismatch({}, { UV_THREADPOOL_SIZE: '8' })).toMatch(/UV_THREADPOOL_SIZE/);
    expect(environmentMismatch({}, { KYBERNATE_ADDON: '/x.node' })).toMatch(/KYBERNATE_ADDON/);
    expect(environmentMismatch({}, { KYBERNATE_TRACE: '/t' })).toBeUndefined();
  });
});
