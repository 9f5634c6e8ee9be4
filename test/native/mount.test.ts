// mount(2)/umount2(2) of a real tmpfs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as native from '../../src/native';
import { isRoot } from './helpers';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-mount-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const mountsAt = (target: string) =>
  fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4] === target);

describe('mount constants', () => {
  it('exports the MS_* flags and umount2 flags with their Linux values', () => {
    const c = native.mountConstants();
    expect(c).toMatchObject({ MS_RDONLY: 1, MS_NOSUID: 2, MS_NODEV: 4, MS_BIND: 4096, MS_REC: 16384, MS_PRIVATE: 1 << 18 });
    expect([c.MNT_FORCE, c.MNT_DETACH, c.UMOUNT_NOFOLLOW]).toEqual([native.MNT_FORCE, native.MNT_DETACH, native.UMOUNT_NOFOLLOW]);
    expect(native.MS.BIND).toBe(c.MS_BIND);
    expect(native.MS.LAZYTIME).toBe(c.MS_LAZYTIME);
  });
});

describe.skipIf(!isRoot)(`mount/umount${isRoot ? '' : ' (skipped: needs root for mount(2))'}`, () => {
  it('mounts a tmpfs with flags and data, then unmounts it', () => {
    const target = path.join(tmp, 'mnt');
    fs.mkdirSync(target);
    native.mount('kyb-test', target, 'tmpfs', native.MS.NOSUID | native.MS.NODEV, 'size=1m,mode=0700');
    try {
      const [line] = mountsAt(target);
      expect(line).toMatch(/ - tmpfs kyb-test /);
      expect(line.split(' ')[5]).toMatch(/nosuid,nodev/);
      expect(fs.statSync(target).mode & 0o777).toBe(0o700);
      fs.writeFileSync(path.join(target, 'f'), 'x');
      native.mount('', target, '', native.MS.REMOUNT | native.MS.RDONLY, '');
      expect(() => fs.writeFileSync(path.join(target, 'g'), 'x')).toThrow(/EROFS/);
    } finally {
      native.umount(target, 0);
    }
    expect(mountsAt(target)).toEqual([]);
  });

  it('bind-mounts and lazily detaches', () => {
    const src = path.join(tmp, 'src');
    const target = path.join(tmp, 'bind');
    fs.mkdirSync(src);
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(src, 'marker'), 'here');
    native.mount(src, target, '', native.MS.BIND, '');
    expect(fs.readFileSync(path.join(target, 'marker'), 'utf8')).toBe('here');
    native.umount(target, native.MNT_DETACH);
    expect(fs.existsSync(path.join(target, 'marker'))).toBe(false);
  });

  it('reports failures as NativeError with the target path', () => {
    const missing = path.join(tmp, 'missing');
    expect(() => native.mount('none', missing, 'tmpfs', 0, '')).toThrow(
      expect.objectContaining({ name: 'NativeError', code: 'ENOENT', op: 'mount', path: missing }),
    );
    expect(() => native.umount(tmp, 0)).toThrow(expect.objectContaining({ code: 'EINVAL', op: 'umount', path: tmp }));
  });
});
