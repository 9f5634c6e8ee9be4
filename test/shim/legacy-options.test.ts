// The legacy option types (containerd's runtime/linux/runctypes/runc.proto) that containerd 1.6/1.7
// clients send to runtimes not named io.containerd.runc.*, and what the shim makes of them. The bytes are
// written field by field with containerd's field numbers, so that the test checks our .proto against
// containerd's, not against itself.
import { Writer } from 'protobufjs/minimal';
import { describe, expect, it } from 'vitest';
import { parseCheckpointOptions } from '../../src/shim/checkpoint-options';
import { parseRuntimeOptions } from '../../src/shim/options';

type Field = [number, boolean | string | string[]];

/** Protobuf bytes of `fields` (bool → varint, string → length-delimited, string[] → repeated). */
function encode(fields: Field[]): Uint8Array {
  const w = Writer.create();
  for (const [n, v] of fields) {
    if (typeof v === 'boolean') w.uint32((n << 3) | 0).bool(v);
    else for (const s of Array.isArray(v) ? v : [v]) w.uint32((n << 3) | 2).string(s);
  }
  return w.finish();
}

const CREATE = 'containerd.linux.runc.CreateOptions';
const CHECKPOINT = 'containerd.linux.runc.CheckpointOptions';

describe('containerd.linux.runc.CreateOptions', () => {
  it('WithNoPivotRoot / WithNoNewKeyring / WithShimCgroup / criu paths map onto the runtime options', () => {
    const o = parseRuntimeOptions({
      type_url: CREATE,
      value: encode([[1, true], [8, true], [9, '/shims'], [12, '/tmp/criu-work'], [13, '/tmp/criu-image']]),
    }, 'ns');
    expect(o).toEqual({
      runcBinary: 'runc', runcRoot: '/run/containerd/runc/ns', systemdCgroup: false, noPivot: true, noNewKeyring: true,
      shimCgroup: '/shims', criuWorkPath: '/tmp/criu-work', criuImagePath: '/tmp/criu-image',
    });
  });

  it('the CRIU flags of runtime v1 become restore flags', () => {
    const o = parseRuntimeOptions({
      type_url: `types.containerd.io/${CREATE}`,
      value: encode([[2, true], [3, true], [4, true], [5, true], [7, 'soft']]),
    }, 'ns');
    expect(o.restoreCriuFlags).toEqual({ tcpEstablished: true, extUnixSk: true, shellJob: true, fileLocks: true, manageCgroupsMode: 'soft' });
    expect(o.noPivot).toBe(false);
  });

  it('empty options change nothing; bad bytes and cgroup modes are refused with KYB_ERR_INVALID_ARGUMENT', () => {
    expect(parseRuntimeOptions({ type_url: CREATE, value: new Uint8Array() }, 'ns')).toEqual(parseRuntimeOptions(null, 'ns'));
    for (const value of [new Uint8Array([0x0a, 0xff]), encode([[7, 'sometimes']])]) {
      expect(() => parseRuntimeOptions({ type_url: CREATE, value }, 'ns')).toThrow(expect.objectContaining({ code: 'KYB_ERR_INVALID_ARGUMENT' }));
    }
  });
});

describe('containerd.linux.runc.CheckpointOptions', () => {
  it('maps exit, the CRIU flags, work_path (8) and image_path (9)', () => {
    const o = parseCheckpointOptions({
      type_url: CHECKPOINT,
      value: encode([[1, true], [2, true], [3, true], [4, true], [5, true], [6, ['network', 'ipc']], [7, 'full'],
        [8, '/tmp/work'], [9, '/tmp/image']]),
    });
    expect(o).toEqual({
      exit: true, tcpEstablished: true, extUnixSk: true, shellJob: true, fileLocks: true, emptyNamespaces: ['network', 'ipc'],
      manageCgroupsMode: 'full', workPath: '/tmp/work', imagePath: '/tmp/image',
    });
  });

  it('WithCheckpointImagePath alone (what a 1.x client sends) leaves the task running', () => {
    expect(parseCheckpointOptions({ type_url: CHECKPOINT, value: encode([[9, '/tmp/image']]) }))
      .toEqual({ exit: false, tcpEstablished: false, extUnixSk: false, shellJob: false, fileLocks: false, emptyNamespaces: [], imagePath: '/tmp/image' });
  });

  it('validates as the current type does: relative work path, unknown namespace', () => {
    for (const value of [encode([[8, 'relative/work']]), encode([[6, 'nonsense']])]) {
      expect(() => parseCheckpointOptions({ type_url: CHECKPOINT, value })).toThrow(expect.objectContaining({ code: 'KYB_ERR_INVALID_ARGUMENT' }));
    }
  });
});
