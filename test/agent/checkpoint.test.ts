// The agent's checkpoint and restore (src/agent/checkpoint.ts) against real containerd 1.6/1.7/2.1 and the
// kybernate shim, with the agent's snapshot directory and no content store: scale to zero and back (the
// counter continues, containerd shows the task running again under the kybernate runtime, exec, kill and
// delete work after), leave-running, refusals, and a full snapshot filesystem.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { ContainerdClient } from '../../src/containerd/client';
import { checkpointWorkload, restoreWorkload, type CheckpointContext } from '../../src/agent/checkpoint';
import { SnapshotDirectory } from '../../src/agent/snapshots';
import { describeMatrix } from '../e2e/support/matrix';
import { checkpointDaemonOptions, COUNTER, counterOf, counterPast, criuMissing } from '../e2e/support/checkpoint';
import { runDetached, task, waitStatus } from '../e2e/support/ctr';

const tmp = mkdtempSync(join(tmpdir(), 'kyb-agent-ck-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A tmpfs of `size` (for the full-disk case); unmounted by the returned function. */
function tmpfs(size: string): { dir: string; unmount(): void } {
  const dir = mkdtempSync(join(tmp, 'tmpfs-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  if (r.status !== 0) throw new Error(`mount tmpfs on ${dir}: ${r.stderr.toString()}`);
  return { dir, unmount: () => { spawnSync('umount', ['-l', dir]); } };
}

describeMatrix('agent checkpoint/restore', (m) => {
  let client: ContainerdClient;
  let ctx: CheckpointContext;
  beforeEach(() => {
    client = new ContainerdClient({ address: m.cd.address });
    ctx = { containerd: client, containerdState: m.cd.state, snapshots: new SnapshotDirectory(mkdtempSync(join(tmp, 'snaps-'))) };
  });
  afterEach(() => client.close());

  it('checkpoint --exit then restore: no task meanwhile, the counter continues, exec/kill/delete work after', async () => {
    const { cd, rt } = m;
    const ns = cd.namespace;
    const id = m.id('zero');
    const { pid } = await runDetached(cd, rt.runtime, id, COUNTER);
    const before = await counterPast(pid, 2);

    const ck = await checkpointWorkload(ctx, { namespace: ns, id, exit: true });
    expect(ck.snapshot).toMatchObject({ namespace: ns, containerId: id, exited: true });
    expect(ck.steps.map((s) => s.name)).toEqual(['checkpoint', 'delete-task']);
    // Scaled to zero: the container is kept, it has no task, its process is gone.
    expect(await task(cd, id)).toBeUndefined();
    expect(await client.task(ns, id)).toBeUndefined();
    expect((await client.container(ns, id)).runtime).toBe('io.containerd.kybernate.v2');
    expect((await ctx.snapshots.list(ns, id)).map((s) => s.id)).toEqual([ck.snapshot.id]);

    const r = await restoreWorkload(ctx, { namespace: ns, id });
    expect(r.snapshot.id).toBe(ck.snapshot.id);
    const t = await waitStatus(cd, id, 'RUNNING');
    const after = await counterPast(t.pid, before.n);
    expect(after.token).toBe(before.token);
    expect(counterOf(t.pid).n).toBeGreaterThan(before.n);

    const out = await cd.ctrOk(['tasks', 'exec', '--exec-id', 'probe', id, 'cat', '/tmp/n']);
    expect(out.trim().split(' ')[0]).toBe(before.token);
    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGKILL', id]);
    await waitStatus(cd, id, 'STOPPED');
    await cd.ctrOk(['tasks', 'rm', id]);
    expect(await task(cd, id)).toBeUndefined();
  });

  it('checkpoint leaving the task running: it keeps counting; restore is refused while the task runs', async () => {
    const { cd, rt } = m;
    const ns = cd.namespace;
    const id = m.id('live');
    const { pid } = await runDetached(cd, rt.runtime, id, COUNTER);
    const before = await counterPast(pid, 1);
    const ck = await checkpointWorkload(ctx, { namespace: ns, id, exit: false });
    expect(ck.snapshot.exited).toBe(false);
    expect(await task(cd, id)).toEqual({ pid, status: 'RUNNING' });
    await counterPast(pid, before.n + 1);
    await expect(restoreWorkload(ctx, { namespace: ns, id })).rejects.toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION' });
  });

  it('refusals: no task to checkpoint, no snapshot to restore, a snapshot of another container, bad ids', async () => {
    const { cd, rt } = m;
    const ns = cd.namespace;
    const a = m.id('ra');
    const b = m.id('rb');
    await runDetached(cd, rt.runtime, a, COUNTER);
    await runDetached(cd, rt.runtime, b, COUNTER);
    await expect(restoreWorkload(ctx, { namespace: ns, id: a })).rejects.toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION' });
    const ck = await checkpointWorkload(ctx, { namespace: ns, id: a, exit: true });
    await expect(checkpointWorkload(ctx, { namespace: ns, id: a, exit: true })).rejects.toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION' });
    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGKILL', b]);
    await waitStatus(cd, b, 'STOPPED');
    await expect(restoreWorkload(ctx, { namespace: ns, id: b })).rejects.toMatchObject({ code: 'KYB_ERR_NOT_FOUND' });
    await expect(restoreWorkload(ctx, { namespace: ns, id: b, snapshot: ck.snapshot.id })).rejects.toMatchObject({ code: 'KYB_ERR_NOT_FOUND' });
    await expect(checkpointWorkload(ctx, { namespace: ns, id: '../x', exit: true })).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
    await expect(restoreWorkload(ctx, { namespace: ns, id: m.id('nothing') })).rejects.toMatchObject({ code: 'KYB_ERR_NOT_FOUND' });
  });

  it('a full snapshot filesystem: a clear error, the workload keeps running, no snapshot listed, nothing left', async () => {
    const { cd, rt } = m;
    const ns = cd.namespace;
    const id = m.id('full');
    // A 64 KiB tmpfs holds the marker but not CRIU's images of even a small container.
    const fs = tmpfs('64k');
    try {
      const small: CheckpointContext = { ...ctx, snapshots: new SnapshotDirectory(fs.dir) };
      const { pid } = await runDetached(cd, rt.runtime, id, COUNTER);
      const before = await counterPast(pid, 1);
      const err = await checkpointWorkload(small, { namespace: ns, id, exit: true }).catch((e: unknown) => e);
      expect(err).toMatchObject({ message: expect.stringMatching(/criu-dump|No space left|ENOSPC|manifest/) });
      expect(await task(cd, id)).toEqual({ pid, status: 'RUNNING' });
      await counterPast(pid, before.n + 1);
      expect(await small.snapshots.list()).toEqual([]);
      expect(readdirSync(join(fs.dir, ns, id))).toEqual([]);
    } finally {
      fs.unmount();
    }
  });
}, {
  runtimes: ['kybernate'],
  start: checkpointDaemonOptions,
  skip: () => criuMissing(),
});
