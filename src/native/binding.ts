// The only module that loads kybernate.node. It is loaded on first use, so code paths that never touch
// the addon (a one-shot CLI using run()'s child_process fallback) work without a build. index.ts (the
// general calls), cuda.ts and criu.ts all reach the addon through here; nothing here imports them.
import fs from 'node:fs';
import path from 'node:path';
import { NativeError } from './errors';

/** Options of spawn(): argv0 is `file`; a `file` without '/' is searched in the env's PATH. */
export interface SpawnOptions {
  file: string;
  /** argv without argv0. */
  args: string[];
  /** "K=V" entries; the child gets exactly these. */
  env: string[];
  cwd?: string;
  /** fds for the child's 0, 1, 2; -1 = /dev/null. */
  stdio: [number, number, number];
  /** Become the child's fds 3, 4, … */
  extraFds?: number[];
  /** Sent to the child when the spawning thread (the JS thread) dies. */
  deathSignal?: number;
  setsid?: boolean;
}

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

export type MountConstantName =
  | 'MS_RDONLY' | 'MS_NOSUID' | 'MS_NODEV' | 'MS_NOEXEC' | 'MS_SYNCHRONOUS' | 'MS_REMOUNT' | 'MS_MANDLOCK'
  | 'MS_DIRSYNC' | 'MS_NOATIME' | 'MS_NODIRATIME' | 'MS_BIND' | 'MS_MOVE' | 'MS_REC' | 'MS_SILENT'
  | 'MS_PRIVATE' | 'MS_SLAVE' | 'MS_SHARED' | 'MS_RELATIME' | 'MS_STRICTATIME' | 'MS_LAZYTIME'
  | 'MS_UNBINDABLE' | 'MNT_DETACH' | 'MNT_FORCE' | 'UMOUNT_NOFOLLOW';
export type MountConstants = Readonly<Record<MountConstantName, number>>;

/** The addon's raw exports (native/addon.cc). */
export interface Binding extends MountConstants {
  setSubreaper(): void;
  startReaper(onExit: (pid: number, status: number, signal: number) => void): void;
  stopReaper(): void;
  reaperRef(ref: boolean): void;
  spawn(opts: SpawnOptions): number;
  pipe(): [number, number];
  close(fd: number): void;
  setNonBlocking(fd: number, on: boolean): void;
  listenUnix(path: string): number;
  receiveFd(listenFd: number, timeoutMs: number): Promise<number>;
  setWinsize(fd: number, cols: number, rows: number): void;
  peerCredentials(fd: number): PeerCredentials;
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  umount(target: string, flags: number): void;
  watchOomV1(dir: string, cb: () => void): number;
  unwatchOomV1(id: number): boolean;
  oomWatchActive(id: number): boolean;
}

/** Where the addon is looked for, in order. */
export function addonCandidates(dir: string = __dirname): string[] {
  const out: string[] = [];
  const fromEnv = process.env.KYBERNATE_ADDON;
  if (fromEnv) out.push(fromEnv);
  out.push(path.join(dir, 'kybernate.node')); // the bundle: dist/kybernate.node next to dist/*.cjs
  for (let d = dir; ; d = path.dirname(d)) {
    out.push(path.join(d, 'build', 'Release', 'kybernate.node'));
    if (path.dirname(d) === d) break;
  }
  return out;
}

let binding: Binding | undefined;

function load(): Binding {
  const candidates = addonCandidates();
  const found = candidates.find((p) => fs.existsSync(p));
  if (found === undefined) {
    throw new NativeError(
      `kybernate.node not found (looked at ${candidates.join(', ')}); run \`make build\` ` +
        'or set KYBERNATE_ADDON to its path',
      { code: 'KYB_ERR_NATIVE', errno: 0, op: 'load' },
    );
  }
  // process.dlopen works the same in the CommonJS bundle and under vitest's ESM loader.
  const mod = { exports: {} as Binding };
  process.dlopen(mod, found);
  return mod.exports;
}

/** The loaded addon (loaded on the first call). */
export function addon(): Binding {
  return (binding ??= load());
}

/** The loaded addon, for the wrappers of one area each (cuda.ts) that declare their own exports' types. */
export function nativeBinding(): object {
  return addon();
}
