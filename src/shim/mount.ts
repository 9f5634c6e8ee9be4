// Rootfs mounts from CreateTaskRequest.rootfs, applied with mount(2) through the addon. Option strings are
// split into mount flags and filesystem data the way containerd's mount package does.
import * as fs from 'node:fs';
import { KybernateError } from '../errors';
import * as native from '../native';

export interface MountSpec { type: string; source: string; target?: string; options: string[] }

type FlagOp = [clear: boolean, flag: number];

function flagTable(): Map<string, FlagOp> {
  const M = native.MS;
  return new Map<string, FlagOp>([
    ['async', [true, M.SYNCHRONOUS]], ['atime', [true, M.NOATIME]], ['bind', [false, M.BIND]],
    ['defaults', [false, 0]], ['dev', [true, M.NODEV]], ['diratime', [true, M.NODIRATIME]],
    ['dirsync', [false, M.DIRSYNC]], ['exec', [true, M.NOEXEC]], ['mand', [false, M.MANDLOCK]],
    ['noatime', [false, M.NOATIME]], ['nodev', [false, M.NODEV]], ['nodiratime', [false, M.NODIRATIME]],
    ['noexec', [false, M.NOEXEC]], ['nomand', [true, M.MANDLOCK]], ['norelatime', [true, M.RELATIME]],
    ['nostrictatime', [true, M.STRICTATIME]], ['nosuid', [false, M.NOSUID]], ['rbind', [false, M.BIND | M.REC]],
    ['relatime', [false, M.RELATIME]], ['remount', [false, M.REMOUNT]], ['ro', [false, M.RDONLY]],
    ['rw', [true, M.RDONLY]], ['strictatime', [false, M.STRICTATIME]], ['suid', [true, M.NOSUID]],
    ['sync', [false, M.SYNCHRONOUS]], ['lazytime', [false, M.LAZYTIME]],
  ]);
}

/** Splits mount options into flags and the data string passed to the filesystem. */
export function parseOptions(options: readonly string[]): { flags: number; data: string } {
  const table = flagTable();
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    const op = table.get(o);
    if (!op) { data.push(o); continue; }
    flags = op[0] ? flags & ~op[1] : flags | op[1];
  }
  return { flags, data: data.join(',') };
}

function mountOne(m: MountSpec, target: string): void {
  const { flags, data } = parseOptions(m.options);
  const M = native.MS;
  native.mount(m.source, target, m.type === 'bind' ? '' : m.type, flags, data);
  // A read-only bind needs a second, remounting call: MS_BIND ignores the other flags.
  if ((flags & M.BIND) !== 0 && (flags & M.RDONLY) !== 0) {
    native.mount('', target, '', flags | M.REMOUNT, '');
  }
}

/** Mounts every rootfs mount onto target in order; undoes what it did on failure. */
export function mountAll(mounts: readonly MountSpec[], target: string): void {
  fs.mkdirSync(target, { recursive: true, mode: 0o711 });
  let done = 0;
  try {
    for (const m of mounts) {
      if (m.type === '' && m.source === '') throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'rootfs mount without type and source');
      mountOne(m, target);
      done++;
    }
  } catch (err) {
    for (let i = 0; i < done; i++) tryUnmount(target);
    if (KybernateError.is(err)) throw err;
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `failed to mount rootfs component ${JSON.stringify(mounts[done])}: ${(err as Error).message}`, { cause: err });
  }
}

function tryUnmount(target: string): boolean {
  try {
    native.umount(target, native.MNT_DETACH);
    return true;
  } catch {
    return false;
  }
}

/** Unmounts everything stacked on target (bounded: a loop guard, not a retry policy). */
export function unmountAll(target: string): void {
  for (let i = 0; i < 64 && tryUnmount(target); i++);
}
