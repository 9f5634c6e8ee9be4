// The legacy option types containerd 1.6/1.7 clients send to runtimes not named io.containerd.runc.*
// (containerd.linux.runc.CreateOptions / CheckpointOptions, runtime v1's runctypes): client/task_opts*.go
// builds them for WithNoPivotRoot (`ctr run --no-pivot`), WithNoNewKeyring, WithShimCgroup, WithUIDOwner,
// WithRestoreImagePath and WithCheckpointImagePath. Kybernate only: the runtime is named otherwise, and
// containerd's own runc shim under another name refuses them the same way. containerd 2.x clients send
// containerd.runc.v1 types to every runtime.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, expect, it } from 'vitest';
import { containerd } from '../../src/gen/proto';
import { describeMatrix } from './support/matrix';
import { LOOP, ppid, runDetached, task, waitStatus } from './support/ctr';
import {
  COUNTER, checkpointDaemonOptions, counterPast, createLease, criuMissing, criuTar, deleteLease, deleteTaskOf,
  removeDaemonRuntimeDirs, restoreTask,
} from './support/checkpoint';
import { defaultRuncRoot } from '../../src/shim/bundle-state';
import { checkpointWith, createContainer, createTask, startTask, withShimCgroup } from './support/task-options';

afterAll(removeDaemonRuntimeDirs);

describeMatrix('legacy runc option types', (ctx) => {
  const leases: string[] = [];
  afterEach(async () => {
    for (const l of leases.splice(0)) await deleteLease(ctx.cd, l);
  });

  it('ctr run --no-pivot (CreateOptions.no_pivot_root): the container runs, and runc was told --no-pivot', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('nopivot');
    await runDetached(cd, rt.runtime, id, ['sleep', '1000'], ['--no-pivot']);
    // libcontainer records the create flags in its state; --no-pivot becomes no_pivot_root.
    const state = JSON.parse(readFileSync(join(defaultRuncRoot(cd.namespace), id, 'state.json'), 'utf8')) as { config?: { no_pivot_root?: boolean } };
    expect(state.config?.no_pivot_root).toBe(true);
  });

  it('CreateOptions.shim_cgroup (WithShimCgroup): start moves the new shim into the cgroup', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('legacy-shimcg');
    await withShimCgroup(cd, id, `kyb-legacy-shimcg-${process.pid}-${cd.version}`, async (cgroup) => {
      await createContainer(cd, rt.runtime, id, LOOP);
      const options = {
        type_url: 'containerd.linux.runc.CreateOptions',
        value: containerd.linux.runc.CreateOptions.encode({ shimCgroup: cgroup }).finish(),
      };
      const pid = await createTask(cd, id, options);
      await startTask(cd, id);
      return ppid(pid);
    });
  });

  it.skipIf(criuMissing() !== undefined)('Tasks.Checkpoint with CheckpointOptions{exit}: the task stops and its image restores', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('legacy-ckpt');
    const before = await runDetached(cd, rt.runtime, id, COUNTER);
    const seen = await counterPast(before.pid, 1);
    leases.push(id);
    const options = {
      type_url: 'containerd.linux.runc.CheckpointOptions',
      value: containerd.linux.runc.CheckpointOptions.encode({ exit: true }).finish(),
    };
    const descriptors = await checkpointWith(cd, id, options, await createLease(cd, id));
    await waitStatus(cd, id, 'STOPPED');
    await deleteTaskOf(cd, id);
    await restoreTask(cd, id, criuTar(descriptors));
    const after = await task(cd, id);
    expect(after?.status).toBe('RUNNING');
    expect((await counterPast(after!.pid, seen.n, 'restored counter')).token).toBe(seen.token);
  });
}, {
  runtimes: ['kybernate'],
  start: () => checkpointDaemonOptions(),
  skip: (v) => (v.startsWith('2.') ? 'containerd 2.x clients send containerd.runc.v1 option types to every runtime' : undefined),
});
