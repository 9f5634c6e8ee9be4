// The addon's general calls (spawn, fds, mounts, the reaper, OOM watches), plus the CUDA and CRIU
// wrappers as `cuda` and `criu`. kybernate.node itself is loaded by binding.ts, on first use.
import {
  addon,
  type Binding,
  type MountConstantName,
  type MountConstants,
  type PeerCredentials,
  type SpawnOptions,
} from './binding';
import { NativeError } from './errors';

export { NativeError } from './errors';
export * as cuda from './cuda';
export * as criu from './criu';
export { addonCandidates, nativeBinding } from './binding';
export type { MountConstants, PeerCredentials, SpawnOptions } from './binding';

/** Runs a synchronous native call; its failures become NativeError (stack: this call). */
function sync<T>(fn: (b: Binding) => T): T {
  const b = addon();
  try {
    return fn(b);
  } catch (err) {
    throw NativeError.from(err);
  }
}

/** prctl(PR_SET_CHILD_SUBREAPER, 1): orphans of our descendants are re-parented to us. */
export const setSubreaper = (): void => sync((b) => b.setSubreaper());
/** Starts the one reaper thread (idempotent); onExit gets status = code or 128+signal. */
export const startReaper = (onExit: (pid: number, status: number, signal: number) => void): void =>
  sync((b) => b.startReaper(onExit));
/** Stops and joins the reaper thread (tests). */
export const stopReaper = (): void => sync((b) => b.stopReaper());
/** While ref'd, the reaper keeps the event loop alive (someone waits for an exit). */
export const reaperRef = (ref: boolean): void => sync((b) => b.reaperRef(ref));
/** fork+execve on the JS thread; throws NativeError (ENOENT, EACCES, …) if the exec fails. */
export const spawn = (opts: SpawnOptions): number => sync((b) => b.spawn(opts));
/** pipe2(O_CLOEXEC) → [read, write]. */
export const pipe = (): [number, number] => sync((b) => b.pipe());
/** close(2); EINTR counts as closed (Linux frees the fd either way). */
export const close = (fd: number): void => sync((b) => b.close(fd));
/** Sets or clears O_NONBLOCK. */
export const setNonBlocking = (fd: number, on: boolean): void => sync((b) => b.setNonBlocking(fd, on));
/** A listening unix socket (mode 0600, CLOEXEC) for runc --console-socket. */
export const listenUnix = (socketPath: string): number => sync((b) => b.listenUnix(socketPath));
/** ioctl(TIOCSWINSZ). */
export const setWinsize = (fd: number, cols: number, rows: number): void =>
  sync((b) => b.setWinsize(fd, cols, rows));
/** SO_PEERCRED of a connected unix socket. */
export const peerCredentials = (fd: number): PeerCredentials => sync((b) => b.peerCredentials(fd));
/** mount(2); empty source/fstype/data are passed as NULL. */
export const mount = (source: string, target: string, fstype: string, flags: number, data = ''): void =>
  sync((b) => b.mount(source, target, fstype, flags, data));
/** umount2(2). */
export const umount = (target: string, flags = 0): void => sync((b) => b.umount(target, flags));
/** cgroup v1 OOM notification for a memory cgroup dir; cb runs once per OOM event. */
export const watchOomV1 = (memoryCgroupDir: string, cb: () => void): number =>
  sync((b) => b.watchOomV1(memoryCgroupDir, cb));
/** False if the watch was already gone (unwatched, or its cgroup was removed). */
export const unwatchOomV1 = (id: number): boolean => sync((b) => b.unwatchOomV1(id));
/** Whether an OOM watch is still registered (it ends by itself when the cgroup is removed). */
export const oomWatchActive = (id: number): boolean => sync((b) => b.oomWatchActive(id));

/**
 * Accepts one connection on a listenUnix() socket and returns the fd it carries (CLOEXEC).
 * Rejects with code ETIMEDOUT after timeoutMs. The wait holds a libuv threadpool thread and works on
 * its own dup of listenFd, so closing listenFd does not end it early.
 */
export async function receiveFd(listenFd: number, timeoutMs: number): Promise<number> {
  const site = new Error();
  try {
    return await sync((b) => b.receiveFd(listenFd, timeoutMs));
  } catch (err) {
    throw NativeError.from(err, site);
  }
}

type MsName = { [K in MountConstantName]: K extends `MS_${infer N}` ? N : never }[MountConstantName];

/** Mount flags without their prefix (MS.BIND = MS_BIND), read from the addon on first access. */
export const MS: Readonly<Record<MsName, number>> = new Proxy({} as Record<MsName, number>, {
  get: (_t, key) =>
    typeof key === 'string' ? (addon() as unknown as Record<string, number | undefined>)[`MS_${key}`] : undefined,
});

// umount2 flags: Linux UAPI values, fixed by the kernel ABI (test/native checks them against the addon).
export const MNT_FORCE = 1;
export const MNT_DETACH = 2;
export const UMOUNT_NOFOLLOW = 8;

/** Every MS_*, MNT_* and UMOUNT_* constant the addon exports, as named in C. */
export function mountConstants(): MountConstants {
  return addon();
}
