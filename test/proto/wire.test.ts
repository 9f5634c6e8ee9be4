// Wire-level checks of the generated codecs against byte sequences and edge cases of the
// containerd shim contract (docs: shared research shim-protocol.md §1.4, §1.9, §2.6, gotcha 23).
import { describe, expect, it } from 'vitest';
import Long from 'long';
import { containerd as actions } from '../../src/gen/actions';
import { containerd, google, io, runtimeoptions, ttrpc } from '../../src/gen/proto';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const fromHex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

const GO_ZERO_TIME_SECONDS = -62135596800;

describe('int64 / uint64 fields', () => {
  it('round-trips Go zero time in a Timestamp (negative int64)', () => {
    // Zero-valued fields are left out here, as Go does; protobufjs writes any field that is set.
    const msg = containerd.task.v2.WaitResponse.create({
      exitedAt: { seconds: Long.fromNumber(GO_ZERO_TIME_SECONDS) },
    });
    const bytes = containerd.task.v2.WaitResponse.encode(msg).finish();
    // field 2 (Timestamp) → field 1 int64: a negative varint is always 10 bytes long.
    expect(hex(bytes)).toBe('120b08' + '8092b8c398feffffff01');
    const back = containerd.task.v2.WaitResponse.decode(bytes);
    const seconds = back.exitedAt?.seconds;
    expect(Long.isLong(seconds)).toBe(true);
    expect((seconds as Long).toString()).toBe(String(GO_ZERO_TIME_SECONDS));
    expect(back.exitedAt?.nanos).toBe(0);
  });

  it('keeps uint64 cgroup values above 2^53 exact', () => {
    const noLimit = Long.fromString('9223372036854771712', true); // 2^63 - 4096, v1 "no limit"
    const maxU64 = Long.fromString('18446744073709551615', true);
    const above53 = Long.fromString('9007199254740993', true); // 2^53 + 1, not representable as double
    const v1 = io.containerd.cgroups.v1.Metrics.encode({
      memory: { usage: { limit: noLimit, usage: above53 }, hierarchicalMemoryLimit: noLimit },
      cpu: { usage: { total: above53, perCpu: [above53, maxU64] } },
    }).finish();
    const d1 = io.containerd.cgroups.v1.Metrics.decode(v1);
    expect((d1.memory?.usage?.limit as Long).toString()).toBe('9223372036854771712');
    expect((d1.memory?.usage?.usage as Long).toString()).toBe('9007199254740993');
    expect((d1.memory?.hierarchicalMemoryLimit as Long).toString()).toBe('9223372036854771712');
    expect((d1.cpu?.usage?.perCpu ?? []).map((v) => (v as Long).toUnsigned().toString())).toEqual([
      '9007199254740993',
      '18446744073709551615',
    ]);

    const v2 = io.containerd.cgroups.v2.Metrics.encode({
      memory: { usageLimit: maxU64, usage: above53 },
      pids: { current: Long.fromNumber(3, true), limit: maxU64 },
    }).finish();
    const d2 = io.containerd.cgroups.v2.Metrics.decode(v2);
    expect((d2.memory?.usageLimit as Long).toUnsigned().toString()).toBe('18446744073709551615');
    expect((d2.memory?.usage as Long).toString()).toBe('9007199254740993');
    expect((d2.pids?.current as Long).toNumber()).toBe(3);
  });
});

describe('BootstrapParams', () => {
  const LogLevel = containerd.runtime.bootstrap.v1.LogLevel;
  const Params = containerd.runtime.bootstrap.v1.BootstrapParams;

  it('encodes negative LogLevel values as 10-byte varints and decodes them back', () => {
    for (const [level, varint] of [
      [LogLevel.LOG_LEVEL_DEBUG, 'fcffffffffffffffff01'],
      [LogLevel.LOG_LEVEL_TRACE, 'f8ffffffffffffffff01'],
    ] as const) {
      const bytes = Params.encode({ logLevel: level }).finish();
      expect(hex(bytes)).toBe('18' + varint);
      expect(bytes.length).toBe(11);
      expect(Params.decode(bytes).logLevel).toBe(level);
    }
    expect(LogLevel.LOG_LEVEL_DEBUG).toBe(-4);
    expect(LogLevel.LOG_LEVEL_TRACE).toBe(-8);
  });

  it('keeps an unknown (open enum) log level value', () => {
    const bytes = Params.encode({ logLevel: -6 as never }).finish();
    expect(Params.decode(bytes).logLevel).toBe(-6);
  });

  it('round-trips the optional socket_dir and its presence', () => {
    const withDir = Params.decode(Params.encode({ instanceId: 'c1', socketDir: '' }).finish());
    expect(withDir.socketDir).toBe('');
    expect(Object.prototype.hasOwnProperty.call(withDir, 'socketDir')).toBe(true);
    const without = Params.decode(Params.encode({ instanceId: 'c1' }).finish());
    expect(without.socketDir == null || !Object.prototype.hasOwnProperty.call(without, 'socketDir')).toBe(true);
  });

  it('decodes a legacy Any stdin without error, so instance_id/namespace must be validated', () => {
    // What containerd < 2.3 writes on the stdin of `start` when runtime options exist.
    const options = containerd.runc.v1.Options.encode({ binaryName: 'runc', root: '/run/x' }).finish();
    const anyBytes = google.protobuf.Any.encode({ type_url: 'containerd.runc.v1.Options', value: options }).finish();
    const misread = Params.decode(anyBytes);
    expect(misread.instanceId).toBe('containerd.runc.v1.Options');
    expect(Buffer.from(misread.namespace, 'binary').length).toBeGreaterThan(0);
    // The shim accepts BootstrapParams only when both fields equal the -id / -namespace flags.
    const looksLikeBootstrap = misread.instanceId === 'my-container' && misread.namespace === 'default';
    expect(looksLikeBootstrap).toBe(false);

    // And the other direction: a real BootstrapParams decodes as an Any too.
    const real = Params.encode({ instanceId: 'my-container', namespace: 'default' }).finish();
    const asAny = google.protobuf.Any.decode(real);
    expect(asAny.type_url).toBe('my-container');
    expect(Buffer.from(asAny.value).toString()).toBe('default');
  });

  it('BootstrapResult carries version, address, protocol and metadata', () => {
    const R = containerd.runtime.bootstrap.v1.BootstrapResult;
    const bytes = R.encode({
      version: 2,
      address: 'unix:///run/containerd/s/ab',
      protocol: 'ttrpc',
      metadata: { k: 'v' },
    }).finish();
    const back = R.decode(bytes);
    expect(back.version).toBe(2);
    expect(back.address).toBe('unix:///run/containerd/s/ab');
    expect(back.protocol).toBe('ttrpc');
    expect(back.metadata).toEqual({ k: 'v' });
  });
});

describe('byte-exact examples', () => {
  it('DeleteResponse of the delete action (§1.9)', () => {
    const expected = '08 92 21 10 89 01 1a 08 08 80 f2 d6 ca 06 10 05';
    const bytes = containerd.task.v2.DeleteResponse.encode({
      pid: 4242,
      exitStatus: 137,
      exitedAt: { seconds: Long.fromNumber(1767225600), nanos: 5 },
    }).finish();
    expect(hex(bytes)).toBe(expected.replace(/ /g, ''));
    // The delete action prints it from the small actions module: the same bytes must come out of both.
    expect(hex(actions.task.v2.DeleteResponse.encode({ pid: 4242, exitStatus: 137, exitedAt: { seconds: Long.fromNumber(1767225600), nanos: 5 } }).finish())).toBe(expected.replace(/ /g, ''));
    const back = actions.task.v2.DeleteResponse.decode(fromHex(expected));
    expect(back.pid).toBe(4242);
    expect(back.exitStatus).toBe(137);
    expect((back.exitedAt?.seconds as Long).toNumber()).toBe(1767225600);
    expect(back.exitedAt?.nanos).toBe(5);
  });

  it('ttrpc Request payload of Connect{id:"abc"} in namespace default (§2.6)', () => {
    const expected =
      '0a17' + hex(Buffer.from('containerd.task.v2.Task')) +
      '1207' + hex(Buffer.from('Connect')) +
      '1a05' + '0a03616263' +
      '2a25' + '0a1a' + hex(Buffer.from('containerd-namespace-ttrpc')) + '1207' + hex(Buffer.from('default'));
    const payload = containerd.task.v2.ConnectRequest.encode({ id: 'abc' }).finish();
    const req = ttrpc.Request.encode({
      service: 'containerd.task.v2.Task',
      method: 'Connect',
      payload,
      metadata: [{ key: 'containerd-namespace-ttrpc', value: 'default' }],
    }).finish();
    expect(hex(req)).toBe(expected);
    expect(req.length).toBe(0x50);

    const back = ttrpc.Request.decode(fromHex(expected));
    expect(back.service).toBe('containerd.task.v2.Task');
    expect(containerd.task.v2.ConnectRequest.decode(back.payload).id).toBe('abc');
    expect((back.timeoutNano as Long).isZero()).toBe(true);
  });

  it('ConnectResponse and a NOT_FOUND status payload (§2.6)', () => {
    const resp = containerd.task.v2.ConnectResponse.encode({ shimPid: 1234, taskPid: 5678 }).finish();
    const frame = ttrpc.Response.encode({ payload: resp }).finish();
    expect(hex(frame)).toBe('120608d20910ae2c');
    const err = ttrpc.Response.encode({ status: { code: 5, message: 'container not created: not found' } }).finish();
    expect(hex(err)).toBe('0a2408051220' + hex(Buffer.from('container not created: not found')));
  });
});

describe('unknown fields and type names', () => {
  it('skips unknown fields of every wire type', () => {
    // StateResponse{id:"c"} followed by fields 50 (varint), 51 (fixed64), 52 (bytes), 53 (fixed32).
    const known = containerd.task.v2.StateResponse.encode({ id: 'c', pid: 7 }).finish();
    const extra = fromHex('9003 2a' + '9903 0102030405060708' + 'a203 03616263' + 'ad03 01020304');
    const back = containerd.task.v2.StateResponse.decode(Buffer.concat([known, extra]));
    expect(back.id).toBe('c');
    expect(back.pid).toBe(7);
  });

  it('decodes an Envelope carrying a TaskExit', () => {
    const event = containerd.events.TaskExit.encode({
      containerId: 'c1',
      id: 'c1',
      pid: 42,
      exitStatus: 137,
      exitedAt: { seconds: Long.fromNumber(1), nanos: 2 },
    }).finish();
    const fwd = containerd.services.events.ttrpc.v1.ForwardRequest.encode({
      envelope: {
        timestamp: { seconds: Long.fromNumber(1767225600), nanos: 0 },
        namespace: 'default',
        topic: '/tasks/exit',
        event: { type_url: 'containerd.events.TaskExit', value: event },
      },
    }).finish();
    const env = containerd.services.events.ttrpc.v1.ForwardRequest.decode(fwd).envelope;
    expect(env?.topic).toBe('/tasks/exit');
    expect(env?.event?.type_url).toBe('containerd.events.TaskExit');
    const exit = containerd.events.TaskExit.decode(env!.event!.value!);
    expect(exit.exitStatus).toBe(137);
  });

  it('getTypeUrl gives the bare full names used on the wire', () => {
    expect(io.containerd.cgroups.v1.Metrics.getTypeUrl('')).toBe('/io.containerd.cgroups.v1.Metrics');
    expect(containerd.events.TaskOOM.getTypeUrl('')).toBe('/containerd.events.TaskOOM');
    expect(runtimeoptions.v1.Options.getTypeUrl('')).toBe('/runtimeoptions.v1.Options');
    expect(containerd.runc.v1.CheckpointOptions.getTypeUrl('')).toBe('/containerd.runc.v1.CheckpointOptions');
  });

  it('has the task status enum and the introspection types', () => {
    expect(containerd.v1.types.Status.PAUSING).toBe(5);
    const info = containerd.types.RuntimeInfo.decode(
      containerd.types.RuntimeInfo.encode({
        name: 'io.containerd.kybernate.v2',
        version: { version: '0.1.0', revision: 'abc' },
        annotations: { 'containerd.io/runtime-allow-mounts': 'mount-helper' },
      }).finish(),
    );
    expect(info.version?.revision).toBe('abc');
    expect(info.annotations['containerd.io/runtime-allow-mounts']).toBe('mount-helper');
  });
});
