// CheckpointOptions as containerd sends them (an Any, or nothing) and what the shim makes of them.
import { describe, expect, it } from 'vitest';
import { containerd } from '../../src/gen/proto';
import { CHECKPOINT_DEFAULT_ANNOTATION, checkpointDefault, parseCheckpointOptions } from '../../src/shim/checkpoint-options';

function any(o: containerd.runc.v1.ICheckpointOptions, typeUrl = 'containerd.runc.v1.CheckpointOptions') {
  return { type_url: typeUrl, value: containerd.runc.v1.CheckpointOptions.encode(o).finish() };
}

describe('parseCheckpointOptions', () => {
  it('nil options (containerd 1.x for non-runc runtimes) mean: leave running, no CRIU extras', () => {
    expect(parseCheckpointOptions(null)).toEqual({ exit: false, emptyNamespaces: [] });
    expect(parseCheckpointOptions({ type_url: '', value: new Uint8Array() })).toEqual({ exit: false, emptyNamespaces: [] });
  });

  it('nil options take the exit the container\'s default gives; options always win over it', () => {
    expect(parseCheckpointOptions(null, { exit: true })).toEqual({ exit: true, emptyNamespaces: [] });
    expect(parseCheckpointOptions(any({ exit: false }), { exit: true }).exit).toBe(false);
    expect(parseCheckpointOptions(any({ exit: true }), { exit: false }).exit).toBe(true);
  });

  it('maps every field the runc shim honours, with or without a type URL host', () => {
    const o = parseCheckpointOptions(any({
      exit: true, openTcp: true, externalUnixSockets: true, terminal: true, fileLocks: true, emptyNamespaces: ['network'],
      cgroupsMode: 'soft', workPath: '/tmp/w', parentPath: '/tmp/p', imagePath: '/tmp/i',
    }, 'type.googleapis.com/containerd.runc.v1.CheckpointOptions'));
    expect(o).toEqual({
      exit: true, tcpEstablished: true, extUnixSk: true, shellJob: true, fileLocks: true, emptyNamespaces: ['network'],
      manageCgroupsMode: 'soft', workPath: '/tmp/w', parentPath: '/tmp/p', imagePath: '/tmp/i',
    });
  });

  it('refuses other option types, bad bytes, unknown namespaces, relative paths and cgroup modes', () => {
    const bad = [
      { type_url: 'containerd.runc.v1.Options', value: new Uint8Array() },
      { type_url: 'containerd.runc.v1.CheckpointOptions', value: new Uint8Array([0x0a, 0xff]) },
      any({ emptyNamespaces: ['net; rm -rf /'] }),
      any({ workPath: 'relative/dir' }),
      any({ parentPath: '../up' }),
      any({ cgroupsMode: 'everything' }),
    ];
    for (const b of bad) {
      let err: unknown;
      try { parseCheckpointOptions(b); } catch (e) { err = e; }
      expect((err as { code?: string }).code, JSON.stringify(b.type_url)).toBe('KYB_ERR_INVALID_ARGUMENT');
    }
  });
});

describe('checkpointDefault (what a request without options means)', () => {
  it('exit in Docker\'s namespace (moby), leave running elsewhere (runc shim, CRI, ctr 1.x)', () => {
    expect(checkpointDefault('moby', {}).exit).toBe(true);
    for (const ns of ['default', 'k8s.io', 'kybernate-test', 'moby2']) expect(checkpointDefault(ns, {}).exit, ns).toBe(false);
  });

  it('the annotation decides in any namespace; other values are refused', () => {
    expect(checkpointDefault('moby', { [CHECKPOINT_DEFAULT_ANNOTATION]: 'leave-running' }).exit).toBe(false);
    expect(checkpointDefault('k8s.io', { [CHECKPOINT_DEFAULT_ANNOTATION]: 'exit' }).exit).toBe(true);
    for (const bad of ['true', 'Exit', '', 1]) {
      let err: unknown;
      try { checkpointDefault('moby', { [CHECKPOINT_DEFAULT_ANNOTATION]: bad }); } catch (e) { err = e; }
      expect((err as { code?: string }).code, String(bad)).toBe('KYB_ERR_INVALID_ARGUMENT');
      expect((err as Error).message).toContain('want exit or leave-running');
    }
  });
});
