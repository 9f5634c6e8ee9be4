// Tasks created over containerd's gRPC API with explicit runtime options (CreateTaskRequest.options): ctr
// sets runc options (--runc-binary, …) only for io.containerd.runc.v2, and containerd hands the task's
// options to the shim's `start` on stdin and to its Create, for every runtime name.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { containerd } from '../../../src/gen/proto';
import { snapshotMounts } from './checkpoint';
import { ContainerdClient } from './grpc';
import { TEST_IMAGE, type Containerd } from './harness';

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
