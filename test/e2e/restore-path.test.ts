// A restore from a snapshot directory without containerd's content store, on every containerd version:
// the checkpoint goes straight into a directory (containerd 2.x: Tasks.Checkpoint{image_path}; 1.x, which
// passes image_path only to runtimes named io.containerd.runc.*: the shim's own Task.Checkpoint, as the
// node agent calls it), and the task is created from it with Tasks.Create{options: runc Options
// {criu_image_path}} — containerd 2.x hands the shim that path as `checkpoint`, 1.x only in the options.
// Either way nothing of the snapshot passes through the content store.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { containerd } from '../../src/gen/proto';
import { ContainerdClient } from './support/grpc';
import { describeMatrix } from './support/matrix';
import { checkpointDaemonOptions, checkpointToDir, COUNTER, counterOf, counterPast, criuMissing, failureOf, snapshotMounts, deleteTaskOf } from './support/checkpoint';
import { runDetached, task, waitFor, waitStatus } from './support/ctr';
import type { Containerd } from './support/harness';

const tasksApi = containerd.services.tasks.v1;
const tmp = mkdtempSync(join(tmpdir(), 'kyb-restore-path-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Checkpoint --exit of `id` into `dir`, never through the content store. */
async function checkpointInto(cd: Containerd, id: string, dir: string): Promise<void> {
  const descriptors = await checkpointToDir(cd, id, dir, true);
  // With image_path containerd imports nothing.
  expect(descriptors).toEqual([]);
}

/** Tasks.Create of `id` from `dir` through runc options' criu_image_path, then Start; the new pid. */
async function createFrom(cd: Containerd, id: string, dir: string): Promise<number> {
  const rootfs = await snapshotMounts(cd, id);
  const options = { type_url: 'containerd.runc.v1.Options', value: containerd.runc.v1.Options.encode({ criuImagePath: dir }).finish() };
  const c = new ContainerdClient(cd.address, cd.namespace);
  try {
    await c.unary('/containerd.services.tasks.v1.Tasks/Create', tasksApi.CreateTaskRequest, tasksApi.CreateTaskResponse,
      { containerId: id, rootfs, options });
    const res = await c.unary('/containerd.services.tasks.v1.Tasks/Start', tasksApi.StartRequest, tasksApi.StartResponse, { containerId: id });
    return res.pid;
  } finally {
    c.close();
  }
}

describeMatrix('restore from a directory', (ctx) => {
  it('checkpoint --exit into a directory, then Tasks.Create{criu_image_path} of the same container: the counter goes on', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('dir');
    const { pid } = await runDetached(cd, rt.runtime, id, COUNTER);
    const before = await counterPast(pid, 2);
    const dir = mkdtempSync(join(tmp, `${cd.version}-`));
    await checkpointInto(cd, id, dir);
    expect(readdirSync(dir)).toContain('kybernate-manifest.json');
    await waitStatus(cd, id, 'STOPPED');
    await deleteTaskOf(cd, id);
    expect(await task(cd, id)).toBeUndefined();

    const restored = await createFrom(cd, id, dir);
    expect(restored).toBeGreaterThan(0);
    expect(await task(cd, id)).toEqual({ pid: restored, status: 'RUNNING' });
    // The same counter (its token) from where it stopped on, not a fresh start.
    const after = await counterPast(restored, before.n);
    expect(after.token).toBe(before.token);
    expect(counterOf(restored).n).toBeGreaterThan(before.n);
  });

  it('a task restored without IO can be checkpointed and restored again (its null stdio are pipes CRIU can dump)', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('again');
    const { pid } = await runDetached(cd, rt.runtime, id, COUNTER);
    let seen = await counterPast(pid, 1);
    for (let cycle = 0; cycle < 3; cycle++) {
      const dir = mkdtempSync(join(tmp, `${cd.version}-again-${cycle}-`));
      await checkpointInto(cd, id, dir);
      await waitStatus(cd, id, 'STOPPED');
      await deleteTaskOf(cd, id);
      const restored = await createFrom(cd, id, dir);
      const now = await counterPast(restored, seen.n);
      expect(now.token, `cycle ${cycle}`).toBe(seen.token);
      seen = now;
    }
  });

  it('Tasks.Create{criu_image_path} of a directory without a snapshot fails, names the manifest, and leaves no task', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('nodir');
    await runDetached(cd, rt.runtime, id, COUNTER);
    await deleteTaskOf(cd, id);
    const empty = mkdtempSync(join(tmp, 'empty-'));
    const failure = await failureOf(createFrom(cd, id, empty));
    // The shim answers DATA_LOSS; containerd 1.x knows no such class and passes it on as UNKNOWN.
    expect(failure.code).toBe(cd.version.startsWith('1.') ? 2 : 15);
    expect(failure.details).toMatch(/kybernate-manifest\.json/);
    await waitFor('no task', async () => (await task(cd, id)) === undefined);
  });
}, {
  runtimes: ['kybernate'],
  start: checkpointDaemonOptions,
  skip: () => criuMissing(),
});
