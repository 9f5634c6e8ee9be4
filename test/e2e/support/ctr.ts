// Helpers over `ctr` output and /proc that every e2e file uses.
import { existsSync, readFileSync, readlinkSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { peerCredentials } from '../../../src/native';
import { TEST_IMAGE, type Containerd } from './harness';

export interface TaskInfo { pid: number; status: string }

/** Parses `ctr tasks ls` (columns TASK PID STATUS). */
export async function tasks(cd: Containerd): Promise<Map<string, TaskInfo>> {
  const out = await cd.ctrOk(['tasks', 'ls']);
  const map = new Map<string, TaskInfo>();
  for (const line of out.split('\n').slice(1)) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id && pid && status) map.set(id, { pid: Number(pid), status });
  }
  return map;
}

export async function task(cd: Containerd, id: string): Promise<TaskInfo | undefined> {
  return (await tasks(cd)).get(id);
}

/** Polls `fn` until it returns a value other than undefined/false, or throws after the deadline. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitStatus(cd: Containerd, id: string, status: string, timeoutMs = 20_000): Promise<TaskInfo> {
  return waitFor(`task ${id} to be ${status}`, async () => {
    const t = await task(cd, id);
    return t?.status === status ? t : undefined;
  }, timeoutMs);
}

/** `ctr run -d` of the test image; resolves once the task is RUNNING. */
export async function runDetached(cd: Containerd, runtime: string, id: string, cmd: string[],
  extra: string[] = []): Promise<TaskInfo> {
  await cd.ctrOk(['run', '-d', '--runtime', runtime, ...extra, TEST_IMAGE, id, ...cmd]);
  return waitStatus(cd, id, 'RUNNING');
}

/** A container whose init loops forever and exits 7 on SIGTERM (pid 1 ignores signals it has no handler for). */
export const LOOP = ['sh', '-c', 'trap "exit 7" TERM; while true; do sleep 0.05; done'];

const CLEANUP_TIMEOUT_MS = 15_000;

/** Best-effort removal of a container and its task; never throws, and a wedged shim costs seconds, not minutes. */
export async function removeContainer(cd: Containerd, id: string): Promise<void> {
  const o = { timeoutMs: CLEANUP_TIMEOUT_MS };
  const t = await task(cd, id).catch(() => undefined);
  if (t) {
    if (t.status === 'PAUSED') await cd.ctr(['tasks', 'resume', id], o);
    // A task created from a checkpoint whose Start failed has no process (pid 0) to kill.
    if (t.status !== 'STOPPED' && !(t.status === 'CREATED' && t.pid === 0)) {
      await cd.ctr(['tasks', 'kill', '-a', '-s', 'SIGKILL', id], o);
      await waitStatus(cd, id, 'STOPPED', 10_000).catch(() => undefined);
    }
    // containerd deletes a created task with pid 0 as it is; 1.6's forced delete waits ~15 s for it first.
    await cd.ctr(['tasks', 'rm', ...(t.status === 'CREATED' && t.pid === 0 ? [] : ['-f']), id], o);
  }
  await cd.ctr(['containers', 'rm', id], o);
}

export function bundleDir(cd: Containerd, id: string): string {
  return join(cd.state, 'io.containerd.runtime.v2.task', cd.namespace, id);
}

/** The shim socket path containerd dials for `id` (plain `address` file, or 2.x `bootstrap.json`). */
export function shimSocket(cd: Containerd, id: string): string {
  const dir = bundleDir(cd, id);
  let addr: string;
  if (existsSync(join(dir, 'address'))) addr = readFileSync(join(dir, 'address'), 'utf8').trim();
  else addr = (JSON.parse(readFileSync(join(dir, 'bootstrap.json'), 'utf8')) as { address: string }).address;
  return addr.replace(/^unix:\/\//, '');
}

export function ppid(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^PPid:\s+(\d+)/m.exec(status);
  if (!m) throw new Error(`no PPid for ${pid}`);
  return Number(m[1]);
}

export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** True while `pid` exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Shim server processes of `shimName` that belong to this containerd (by -address or by cwd in its state). */
/** Socket paths of every task bundle of this containerd (all namespaces): where its shims listen. */
function shimSocketPaths(cd: Containerd): Set<string> {
  const out = new Set<string>();
  const root = join(cd.state, 'io.containerd.runtime.v2.task');
  for (const ns of existsSync(root) ? readdirSync(root) : []) {
    for (const id of readdirSync(join(root, ns))) {
      const dir = join(root, ns, id);
      try {
        if (existsSync(join(dir, 'address'))) out.add(readFileSync(join(dir, 'address'), 'utf8').trim().replace(/^unix:\/\//, ''));
        else if (existsSync(join(dir, 'bootstrap.json'))) {
          out.add((JSON.parse(readFileSync(join(dir, 'bootstrap.json'), 'utf8')) as { address: string }).address.replace(/^unix:\/\//, ''));
        }
      } catch { /* removed meanwhile */ }
    }
  }
  return out;
}

/** Inodes of the listening unix sockets bound at `paths` (from /proc/net/unix). */
function listeningInodes(paths: Set<string>): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path; flags 00010000 = __SO_ACCEPTCON (listening)
    if (f.length >= 8 && f[3] === '00010000' && paths.has(f[7]!)) out.add(f[6]!);
  }
  return out;
}

function holdsSocket(pid: number, inodes: Set<string>): boolean {
  if (inodes.size === 0) return false;
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        return m !== null && inodes.has(m[1]!);
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

/**
 * The pid of the process listening on the unix socket at `path`, if one accepts: SO_PEERCRED of a connection
 * names the process that called listen() (a socket renamed into place is not listed under its path in
 * /proc/net/unix, so that file cannot tell).
 */
export function listenerPid(path: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const c = connect(path);
    const finish = (pid: number | undefined): void => { clearTimeout(t); c.destroy(); resolve(pid); };
    const t = setTimeout(() => finish(undefined), 1_000);
    c.once('error', () => finish(undefined));
    c.once('connect', () => {
      const fd = (c as unknown as { _handle?: { fd?: number } })._handle?.fd;
      try {
        finish(fd !== undefined && fd >= 0 ? peerCredentials(fd).pid : undefined);
      } catch {
        finish(undefined);
      }
    });
  });
}

/**
 * Shim server processes of this containerd: named `shimName` and started for it (its address among their
 * flags, or still in one of its bundles), or listening on one of its tasks' shim sockets (a kybernate spare
 * that was claimed has neither the flags nor the cwd).
 */
export function shimProcesses(cd: Containerd, shimName: string): number[] {
  const out: number[] = [];
  let inodes: Set<string> | undefined;
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    const argv = cmdline(pid);
    if (!argv.some((a) => a.includes(shimName))) continue;
    // `start`/`delete` invocations are short-lived helpers, not the server.
    if (argv.includes('start') || argv.includes('delete')) continue;
    let cwd = '';
    try { cwd = readlinkSync(`/proc/${pid}/cwd`); } catch { /* gone */ }
    if (argv.includes(cd.address) || cwd.startsWith(cd.state + '/')) out.push(pid);
    else if (holdsSocket(pid, inodes ??= listeningInodes(shimSocketPaths(cd)))) out.push(pid);
  }
  return out;
}

/** The memory limit in bytes of the cgroup `pid` is in (v1 memory controller, or v2). */
export function memoryLimit(pid: number): number {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const v1 = lines.map((l) => l.split(':')).find((p) => p[1]?.split(',').includes('memory'));
  if (v1) return Number(readFileSync(join('/sys/fs/cgroup/memory', v1[2]!, 'memory.limit_in_bytes'), 'utf8').trim());
  const v2 = lines.find((l) => l.startsWith('0::'));
  if (!v2) throw new Error(`no memory cgroup for ${pid}`);
  const raw = readFileSync(join('/sys/fs/cgroup', v2.slice(3), 'memory.max'), 'utf8').trim();
  return raw === 'max' ? Number.POSITIVE_INFINITY : Number(raw);
}

/** Reads a file inside the container of `pid` from the host, through /proc/<pid>/root. */
export function readInContainer(pid: number, path: string): string {
  return readFileSync(join(`/proc/${pid}/root`, path), 'utf8');
}

/** The Task service the shim of `id` serves: v3 when its start result said so (containerd 2.x writes it down). */
export function shimTaskService(cd: Containerd, id: string): string {
  const file = join(bundleDir(cd, id), 'bootstrap.json');
  const version = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { version?: number }).version ?? 2 : 2;
  return `containerd.task.v${version}.Task`;
}
