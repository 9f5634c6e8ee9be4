// Helpers for the checkpoint/restore e2e files: the daemon environment CRIU needs here, a counter
// container, containerd's Tasks.Checkpoint/Create/Start over gRPC with explicit CheckpointOptions, the
// content store through ctr, and a file-lock holder built from the host's flock.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { extract as tarExtract, pack as tarPack, type Header as TarHeader } from 'tar-stream';
import { containerd } from '../../../src/gen/proto';
import * as testApi from '../../../src/gen/cri';
import { ContainerdClient } from './grpc';
import { binDir, type Containerd, type StartOptions } from './harness';
import { readInContainer, shimSocket, shimTaskService, task, waitFor } from './ctr';
import { TtrpcClient } from '../../../src/ttrpc';

const tasksApi = containerd.services.tasks.v1;
const contentApi = testApi.containerd.services.content.v1;
const Empty = { decode: (): Record<string, never> => ({}) };

/**
 * Environment for this suite's daemons, inherited by the shims, runc and criu. CRIU dumps hang on this
 * kind of VM because the parasite's hardware breakpoint never fires; CRIU_FAULT=130 makes criu run
 * without hardware breakpoints (a little slower, harmless where they work), and our shim asks for the
 * same through KYBERNATE_CRIU_NO_BREAKPOINTS. Set unconditionally: probing needs a dump, which is
 * what hangs.
 */
export const CRIU_DAEMON_ENV: Record<string, string> = { CRIU_FAULT: '130', KYBERNATE_CRIU_NO_BREAKPOINTS: '1' };

const runtimeDirs: string[] = [];

/**
 * Options for a daemon of this suite: CRIU_DAEMON_ENV, and XDG_RUNTIME_DIR in a directory of its own,
 * where containerd makes the temporary checkpoint directories (1.x never removes the ones it unpacks a
 * restore into); removeDaemonRuntimeDirs() deletes them once the daemons are stopped.
 */
export function checkpointDaemonOptions(): StartOptions {
  const dir = mkdtempSync(join(tmpdir(), 'kyb-e2e-xdg-'));
  runtimeDirs.push(dir);
  return { env: { ...CRIU_DAEMON_ENV, XDG_RUNTIME_DIR: dir } };
}

export function removeDaemonRuntimeDirs(): void {
  for (const d of runtimeDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

function onPath(name: string): boolean {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  return dirs.some((d) => d !== '' && existsSync(join(d, name)));
}

/** Why container checkpoints cannot work on this machine, if they cannot. */
export function criuMissing(): string | undefined {
  if (!onPath('criu')) return 'criu not found on PATH (apt-get install -t trixie criu, or run `make setup`)';
  // CRIU locks the network of a dumped task with iptables-restore; without it every dump fails.
  if (!onPath('iptables-restore')) return 'iptables-restore not found (apt-get install iptables, or run `make setup`)';
  return undefined;
}

/**
 * Why CRIU cannot dump TCP sockets here, if it cannot. Kernels from 6.16 on answer getsockopt(SO_PASSCRED)
 * (and SO_PASSSEC) on an inet socket with EOPNOTSUPP, and CRIU 4.1's dump_socket_opts treats that as
 * fatal (dump.log: "sockets: Can't get 1:16 opt: Operation not supported"). Probed with python3, which
 * has getsockopt (node has not); without python3 the test runs and says for itself.
 */
export function inetSocketDumpBroken(): string | undefined {
  const python = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => existsSync(p));
  if (!python) return undefined;
  const probe = 'import socket,sys\ntry:\n socket.socket().getsockopt(socket.SOL_SOCKET, 16)\nexcept OSError as e:\n sys.exit(e.errno)';
  const r = spawnSync(python, ['-c', probe], { timeout: 10_000 });
  if (r.status !== 95) return undefined;
  // CRIU 4.2 treats that refusal as "option not there" (make setup installs 4.2.1 for this reason).
  const v = criuVersion().split('.').map(Number);
  if ((v[0] ?? 0) > 4 || ((v[0] ?? 0) === 4 && (v[1] ?? 0) >= 2)) return undefined;
  return `this kernel (${release()}) refuses getsockopt(SO_PASSCRED) on inet sockets (EOPNOTSUPP), which CRIU `
    + `${criuVersion()} cannot dump past ("sockets: Can't get 1:16 opt: Operation not supported")`;
}

function criuVersion(): string {
  const r = spawnSync('criu', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return /Version:\s*(\S+)/.exec(r.stdout ?? '')?.[1] ?? '(unknown version)';
}

/**
 * A shell loop writing "<token> <n>" to /tmp/n in the container's rw layer, n increasing. The token is
 * drawn once at start and lives only in the shell's memory, so a restored process keeps it while a
 * process started afresh would draw another.
 */
export const COUNTER = ['sh', '-c',
  't=$(cat /proc/sys/kernel/random/uuid); i=0; while true; do i=$((i+1)); echo "$t $i" > /tmp/n; sleep 0.1; done'];

export interface Count { token: string; n: number }

/** The counter of a COUNTER container whose init is `pid`; n = 0 while the file is empty or missing. */
export function counterOf(pid: number): Count {
  let text = '';
  try {
    text = readInContainer(pid, '/tmp/n').trim();
  } catch {
    // not written yet, or the process is gone
  }
  const [token = '', n = '0'] = text.split(' ');
  return { token, n: Number(n) || 0 };
}

/** Waits until the counter of `pid` exceeds `above`; resolves to the value seen. */
export function counterPast(pid: number, above: number, what = 'counter'): Promise<Count> {
  return waitFor(`${what} to pass ${above}`, () => {
    const c = counterOf(pid);
    return c.n > above ? c : undefined;
  }, 30_000);
}

// --- containerd's Tasks service with explicit options ---

export type CheckpointOpts = containerd.runc.v1.ICheckpointOptions;
export type Descriptor = containerd.types.IDescriptor;

/** A failed gRPC call: the status code containerd answered with and its message. */
export interface CallFailure { code: number; details: string; message: string }

/** The gRPC status of a rejected ContainerdClient call. */
export function callFailure(err: unknown): CallFailure {
  const cause = (err as { cause?: grpc.ServiceError }).cause;
  if (!cause || typeof cause.code !== 'number') throw err;
  return { code: cause.code, details: cause.details, message: (err as Error).message };
}

/** Resolves to the failure of `p`; throws if it succeeds. */
export async function failureOf(p: Promise<unknown>): Promise<CallFailure> {
  try {
    await p;
  } catch (err) {
    return callFailure(err);
  }
  throw new Error('the call succeeded');
}

function client(cd: Containerd, lease?: string): ContainerdClient {
  return new ContainerdClient(cd.address, cd.namespace, lease);
}

async function withClient<T>(cd: Containerd, lease: string | undefined, fn: (c: ContainerdClient) => Promise<T>): Promise<T> {
  const c = client(cd, lease);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/**
 * Tasks.Checkpoint of `id` with `opts` as containerd.runc.v1.CheckpointOptions, sent as is to the shim
 * by every containerd version (ctr 1.x sends options only for runc runtime names). No Pause around it,
 * unlike containerd's client. Without image_path the images go to the content store and the
 * descriptors (criu tar, spec) come back; `lease` keeps them from the garbage collector.
 */
export async function checkpointTask(cd: Containerd, id: string, opts: CheckpointOpts, lease?: string):
  Promise<containerd.types.IDescriptor[]> {
  const options = {
    type_url: 'containerd.runc.v1.CheckpointOptions',
    value: containerd.runc.v1.CheckpointOptions.encode(opts).finish(),
  };
  const res = await withClient(cd, lease, (c) => c.unary('/containerd.services.tasks.v1.Tasks/Checkpoint',
    tasksApi.CheckpointTaskRequest, tasksApi.CheckpointTaskResponse, { containerId: id, options }));
  return res.descriptors;
}

/**
 * Checkpoint of `id` straight into `dir`, never through the content store. containerd 2.x hands any shim
 * the request's image_path (and imports nothing: the descriptors come back empty); 1.x reads image_path
 * only for runtimes named io.containerd.runc.* and would give the shim a directory of its own, so there
 * the call goes to the shim's Task service directly, as containerd (or the node agent) would send it.
 */
export async function checkpointToDir(cd: Containerd, id: string, dir: string, exit: boolean): Promise<containerd.types.IDescriptor[]> {
  if (!cd.version.startsWith('1.')) return checkpointTask(cd, id, { exit, imagePath: dir });
  const options = {
    type_url: 'containerd.runc.v1.CheckpointOptions',
    value: containerd.runc.v1.CheckpointOptions.encode({ exit, imagePath: dir }).finish(),
  };
  const shim = await TtrpcClient.connect(shimSocket(cd, id));
  try {
    await shim.request(shimTaskService(cd, id), 'Checkpoint', containerd.task.v2.CheckpointTaskRequest, Empty,
      { id, path: dir, options }, { metadata: { 'containerd-namespace-ttrpc': cd.namespace }, timeoutMs: 90_000 });
  } finally {
    shim.destroy();
  }
  return [];
}

export const CRIU_TAR_MEDIA_TYPE = 'application/vnd.containerd.container.criu.checkpoint.criu.tar';

/** The CRIU image tarball among Tasks.Checkpoint's descriptors. */
export function criuTar(descriptors: containerd.types.IDescriptor[]): Descriptor {
  const d = descriptors.find((x) => x.mediaType === CRIU_TAR_MEDIA_TYPE);
  if (!d) throw new Error(`no ${CRIU_TAR_MEDIA_TYPE} among ${descriptors.map((x) => x.mediaType).join(', ')}`);
  return d;
}

/**
 * Creates the task of the existing container `id` from the checkpoint `checkpoint` (a criu tar in the
 * content store: containerd unpacks it and hands the shim Create{checkpoint: dir}), on the container's
 * own snapshot, with stdio on /dev/null; then starts it. Resolves to the pid Start reports.
 */
export async function restoreTask(cd: Containerd, id: string, checkpoint: Descriptor): Promise<number> {
  const rootfs = await snapshotMounts(cd, id);
  return withClient(cd, undefined, async (c) => {
    await c.unary('/containerd.services.tasks.v1.Tasks/Create', tasksApi.CreateTaskRequest, tasksApi.CreateTaskResponse,
      { containerId: id, rootfs, checkpoint });
    const res = await c.unary('/containerd.services.tasks.v1.Tasks/Start', tasksApi.StartRequest, tasksApi.StartResponse,
      { containerId: id });
    return res.pid;
  });
}

/**
 * The mounts of snapshot `key` (ctr names a container's snapshot after the container), parsed from
 * `ctr snapshots mounts`, whose lines read `mount -t TYPE SOURCE TARGET -o OPT,OPT`.
 */
export async function snapshotMounts(cd: Containerd, key: string): Promise<containerd.types.IMount[]> {
  const out = await cd.ctrOk(['snapshots', 'mounts', '/rootfs', key]);
  const mounts: containerd.types.IMount[] = [];
  for (const line of out.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const m = /^mount -t (\S+) (\S+) \/rootfs(?: -o (\S+))?$/.exec(line);
    if (!m) throw new Error(`unexpected line from ctr snapshots mounts: ${line}`);
    mounts.push({ type: m[1], source: m[2], options: m[3] ? m[3].split(',') : [] });
  }
  if (mounts.length === 0) throw new Error(`snapshot ${key} has no mounts`);
  return mounts;
}

/** Stops (SIGKILL) and deletes the task of `id` if it has one, keeping the container and its snapshot. */
export async function deleteTaskOf(cd: Containerd, id: string): Promise<void> {
  const t = await task(cd, id);
  if (!t) return;
  // A task created from a checkpoint whose Start failed has no process (pid 0): containerd deletes it as it is.
  if (t.status !== 'STOPPED' && !(t.status === 'CREATED' && t.pid === 0)) {
    await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
    await waitFor(`task ${id} to stop`, async () => (await task(cd, id))?.status === 'STOPPED');
  }
  await cd.ctrOk(['tasks', 'rm', id]);
}

// --- leases, images and content through ctr ---

/** A lease (no expiry) that holds what is written under it; `ctr leases rm` frees it. */
export async function createLease(cd: Containerd, id: string): Promise<string> {
  await cd.ctrOk(['leases', 'create', '--id', id, '--expires', '0']);
  return id;
}

export async function deleteLease(cd: Containerd, id: string): Promise<void> {
  await cd.ctr(['leases', 'rm', id]);
}

/** Names of the checkpoint images containerd's client made for container `id`. */
export async function checkpointImages(cd: Containerd, id: string): Promise<string[]> {
  const out = await cd.ctrOk(['images', 'ls', '-q']);
  return out.split('\n').map((l) => l.trim()).filter((n) => n.startsWith(`containerd.io/checkpoint/${id}:`));
}

/** Removes images, never throwing (cleanup). */
export async function removeImages(cd: Containerd, names: string[]): Promise<void> {
  if (names.length > 0) await cd.ctr(['images', 'rm', ...names]);
}

function ctrBinary(cd: Containerd, args: string[], input?: Buffer): Promise<Buffer> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (cd.snapshotter !== 'overlayfs') env.CONTAINERD_SNAPSHOTTER = cd.snapshotter;
  const argv = ['--address', cd.address, '--namespace', cd.namespace, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(join(binDir(cd.version), 'ctr'), argv, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`ctr ${args.join(' ')} exited ${code}: ${Buffer.concat(err).toString().trim()}`));
    });
    child.stdin.on('error', () => { /* ctr failed before reading its input; its exit status says why */ });
    child.stdin.end(input ?? Buffer.alloc(0));
  });
}

/** The bytes of blob `digest` in the content store. */
export function contentGet(cd: Containerd, digest: string): Promise<Buffer> {
  return ctrBinary(cd, ['content', 'get', digest]);
}

/**
 * Writes `data` into the content store under `ref`, held by `lease` (Content.Write committed in one
 * message on a call that carries the lease, so that the garbage collector can never see it unreferenced;
 * `ctr content ingest` holds a lease of its own only until it exits). Resolves to its digest; `contentRm`
 * removes it, deleting the lease frees it.
 */
export async function contentPut(cd: Containerd, ref: string, data: Buffer, lease: string): Promise<string> {
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const c = new ContainerdClient(cd.address, cd.namespace, lease);
  try {
    const res = await c.stream('/containerd.services.content.v1.Content/Write', contentApi.WriteContentRequest,
      contentApi.WriteContentResponse, [{ action: contentApi.WriteAction.COMMIT, ref, total: Long.fromNumber(data.length), expected: digest, offset: Long.ZERO, data }]);
    if (res.digest !== digest) throw new Error(`content write of ${ref} committed ${res.digest}, not ${digest}`);
  } finally {
    c.close();
  }
  return digest;
}

export async function contentRm(cd: Containerd, digest: string): Promise<void> {
  await cd.ctr(['content', 'rm', digest]);
}

// --- a file lock held inside a container ---

/**
 * The test image's busybox has no flock applet, so the host's flock (util-linux, dynamically linked
 * against glibc only) runs in the container through the host's loader: its library directory and the
 * binary are bind-mounted read-only. The real directories, not the /lib symlinks: CRIU cannot restore
 * bind mounts whose host source is a symlink.
 */
const HOST_LIBDIR = '/usr/lib/x86_64-linux-gnu';
const HOST_FLOCK = '/usr/bin/flock';

export function flockMissing(): string | undefined {
  for (const f of [HOST_FLOCK, join(HOST_LIBDIR, 'ld-linux-x86-64.so.2')]) {
    if (!existsSync(f)) return `${f} not found (the busybox test image has no flock applet; the host's flock is used)`;
  }
  return undefined;
}

/** `ctr run` flags that make FLOCK usable in the container. */
export const FLOCK_MOUNTS = [
  '--mount', `type=bind,src=${HOST_LIBDIR},dst=/hostlib,options=rbind:ro`,
  '--mount', `type=bind,src=${HOST_FLOCK},dst=/hostbin/flock,options=rbind:ro`,
];

/** argv prefix running the host's flock inside a container started with FLOCK_MOUNTS. */
export const FLOCK = ['/hostlib/ld-linux-x86-64.so.2', '--library-path', '/hostlib', '/hostbin/flock'];

/** A container init holding an exclusive flock on /tmp/lock for as long as it runs the counter loop. */
export const LOCKED_COUNTER = [...FLOCK, '/tmp/lock', ...COUNTER];

// --- checkpoint tarballs (the criu tar containerd keeps in its content store) ---

export interface TarEntry { header: TarHeader; data: Buffer }

/** Every entry of a tar archive, in order, with its contents. */
export async function readTar(archive: Buffer): Promise<TarEntry[]> {
  const ex = tarExtract();
  const entries: TarEntry[] = [];
  const done = (async () => {
    for await (const entry of ex) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      entries.push({ header: entry.header, data: Buffer.concat(chunks) });
    }
  })();
  ex.end(archive);
  await done;
  return entries;
}

/** A tar archive of `entries`, each header's size taken from its data. */
export async function writeTar(entries: TarEntry[]): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => { chunks.push(c as Buffer); });
  const ended = new Promise<void>((resolve, reject) => { p.on('end', () => resolve()); p.on('error', reject); });
  for (const e of entries) p.entry({ ...e.header, size: e.data.length }, e.data);
  p.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/** The base name of a tar entry ("./pages-1.img" → "pages-1.img"). */
export function entryName(e: TarEntry): string {
  return e.header.name.replace(/^(\.\/)+/, '').replace(/\/$/, '');
}
