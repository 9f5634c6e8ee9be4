// Tasks created over containerd's gRPC API with explicit runtime options (CreateTaskRequest.options): ctr
// sets runc options (--runc-binary, …) only for io.containerd.runc.v2, and containerd hands the task's
// options to the shim's `start` on stdin and to its Create, for every runtime name.
import {
  chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, statfsSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { containerd } from '../../../src/gen/proto';
import { snapshotMounts } from './checkpoint';
import { ContainerdClient } from './grpc';
import { expect } from 'vitest';
import { TEST_IMAGE, type Containerd } from './harness';
import { removeContainer, waitFor } from './ctr';

const tasksApi = containerd.services.tasks.v1;

export interface AnyOptions { type_url: string; value: Uint8Array }

export function runcOptions(o: containerd.runc.v1.IOptions): AnyOptions {
  return { type_url: 'containerd.runc.v1.Options', value: containerd.runc.v1.Options.encode(o).finish() };
}

/**
 * `ctr containers create` of the test image: a container (and its snapshot) without a task. `--` keeps
 * 1.x's ctr from reordering the command's own flags (`sh -c`) in front as its flags (`-c` = --config).
 */
export async function createContainer(cd: Containerd, runtime: string, id: string, cmd: string[]): Promise<void> {
  await cd.ctrOk(['containers', 'create', '--runtime', runtime, '--', TEST_IMAGE, id, ...cmd]);
}

async function withClient<T>(cd: Containerd, fn: (c: ContainerdClient) => Promise<T>): Promise<T> {
  const c = new ContainerdClient(cd.address, cd.namespace);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Tasks.Create of container `id` on its own snapshot with `options`, stdio on /dev/null; resolves to the pid. */
export function createTask(cd: Containerd, id: string, options?: AnyOptions): Promise<number> {
  return withClient(cd, async (c) => {
    const rootfs = await snapshotMounts(cd, id);
    const res = await c.unary('/containerd.services.tasks.v1.Tasks/Create', tasksApi.CreateTaskRequest,
      tasksApi.CreateTaskResponse, { containerId: id, rootfs, ...(options ? { options } : {}) });
    return res.pid;
  });
}

export function startTask(cd: Containerd, id: string): Promise<number> {
  return withClient(cd, async (c) => (await c.unary('/containerd.services.tasks.v1.Tasks/Start', tasksApi.StartRequest,
    tasksApi.StartResponse, { containerId: id })).pid);
}

/** Resolves to the message of `p`'s rejection; throws if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('the call succeeded');
}

/** A directory of executable shell scripts (runc wrappers), removed by remove(). */
export class ScriptDir {
  readonly dir = mkdtempSync(join(tmpdir(), 'kyb-wrappers-'));

  /** Writes `name` as `#!/bin/sh` + body, mode 0755; returns its path. */
  script(name: string, body: string): string {
    const file = join(this.dir, name);
    writeFileSync(file, `#!/bin/sh\n${body}\n`);
    chmodSync(file, 0o755);
    return file;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Tasks.Checkpoint of `id` with `options` as given (any type); resolves to the descriptors. */
export function checkpointWith(cd: Containerd, id: string, options: AnyOptions, lease: string): Promise<containerd.types.IDescriptor[]> {
  const c = new ContainerdClient(cd.address, cd.namespace, lease);
  return c.unary('/containerd.services.tasks.v1.Tasks/Checkpoint', tasksApi.CheckpointTaskRequest,
    tasksApi.CheckpointTaskResponse, { containerId: id, options }).then((r) => r.descriptors).finally(() => c.close());
}

// --- cgroups: v2 when /sys/fs/cgroup is cgroup2, else the v1 hierarchies the test needs ---

const CGROUP2_MAGIC = 0x63677270;
const unified = statfsSync('/sys/fs/cgroup').type === CGROUP2_MAGIC;
/** Hierarchies a v1 test cgroup is made in (cpuset would need cpus/mems before a process may join). */
const V1_HIERARCHIES = ['memory', 'pids'];

function cgroupDirs(name: string): string[] {
  return unified ? [join('/sys/fs/cgroup', name)] : V1_HIERARCHIES.map((h) => join('/sys/fs/cgroup', h, name));
}

/** /proc/<pid>/cgroup as hierarchy (controllers, or '' for v2) → path. */
function cgroupsOf(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
    const [, ctl, p] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    if (ctl !== undefined && p !== undefined) out.set(ctl, p);
  }
  return out;
}

function empty(dir: string): boolean {
  return readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() === '';
}

/**
 * Makes cgroup `name` (v2, or in V1_HIERARCHIES), runs `fn` with its path ("/name"), which starts
 * container `id` and resolves to its shim's pid, and asserts that the shim is in the cgroup. Afterwards
 * the container is removed, and the cgroup once the shim has left it by exiting.
 */
export async function withShimCgroup(cd: Containerd, id: string, name: string, fn: (cgroup: string) => Promise<number>): Promise<void> {
  const dirs = cgroupDirs(name);
  for (const d of dirs) mkdirSync(d);
  try {
    const groups = cgroupsOf(await fn(`/${name}`));
    if (unified) expect(groups.get('')).toBe(`/${name}`);
    else for (const h of V1_HIERARCHIES) expect(groups.get(h)).toBe(`/${name}`);
  } finally {
    await removeContainer(cd, id);
    for (const d of dirs) {
      await waitFor(`cgroup ${d} to empty`, () => empty(d), 20_000);
      rmdirSync(d);
    }
  }
}
