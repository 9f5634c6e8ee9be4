// An agent SIGKILLed in the middle of an operation, then started again (issue 10, Deliver 4): every
// workload ends running or checkpointed, never half-way, and nothing incomplete is listed. Against real
// containerd 1.6/1.7/2.1, the kybernate shim and CRIU.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { ContainerdClient } from '../../src/containerd/client';
import { containerd as cpb, kybernate as pb } from '../../src/gen/proto';
import { COUNTER, checkpointDaemonOptions, counterPast, criuMissing } from '../e2e/support/checkpoint';
import { runDetached, task, waitFor, waitStatus } from '../e2e/support/ctr';
import { describeMatrix } from '../e2e/support/matrix';
import { bundle, startAgent, type Agent } from './support';

const S = pb.agent.v1.WorkloadState;
const INCOMPLETE = 'kybernate-checkpoint.incomplete';
const MANIFEST = 'kybernate-manifest.json';

beforeAll(() => bundle(), 120_000);

/** The snapshot directories of ns/id in the agent's snapshot directory. */
function snapshotDirs(agent: Agent, ns: string, id: string): string[] {
  const parent = join(agent.dir, 'snapshots', ns, id);
  return existsSync(parent) ? readdirSync(parent).filter((n) => /^\d{13}-[0-9a-f]{8}$/.test(n)).map((n) => join(parent, n)) : [];
}

describeMatrix('agent killed mid-operation', (ctx) => {
  const agents: Agent[] = [];
  afterEach(async () => { for (const a of agents.splice(0)) await a.kill().catch(() => undefined); });
  const start = async (dir?: string): Promise<Agent> => {
    const a = await startAgent({ cd: ctx.cd, ...(dir ? { dir } : {}) });
    agents.push(a);
    return a;
  };

  it('killed while the shim writes a checkpoint --exit: the shim finishes it; the new agent shows CHECKPOINTED and restores it', async () => {
    const { cd } = ctx;
    const ns = cd.namespace;
    const id = ctx.id('mid-ck');
    const { pid } = await runDetached(cd, ctx.rt.runtime, id, COUNTER);
    const before = await counterPast(pid, 1);
    const first = await start();
    const client = first.client();
    const pending = client.checkpoint({ namespace: ns, id, exit: true }, { timeoutMs: 120_000 }).catch((e: unknown) => e);
    // The shim has begun: the directory it writes is marked incomplete.
    await waitFor('the checkpoint to begin', () => snapshotDirs(first, ns, id).some((d) => existsSync(join(d, INCOMPLETE))), 30_000, 5);
    await first.kill();
    client.close();
    await pending;
    // The shim carries on alone: the snapshot completes and the task ends.
    await waitFor('the snapshot to complete', () => snapshotDirs(first, ns, id).some((d) => existsSync(join(d, MANIFEST)) && !existsSync(join(d, INCOMPLETE))), 60_000);
    await waitFor('the task to stop', async () => (await task(cd, id))?.status !== 'RUNNING');

    const second = await start(first.dir);
    const c2 = second.client();
    try {
      const w = await c2.get({ namespace: ns, id });
      expect(w.state).toBe(S.CHECKPOINTED);
      expect((await c2.listSnapshots({ namespace: ns, id })).snapshots).toHaveLength(1);
      await c2.restore({ namespace: ns, id }, { timeoutMs: 120_000 });
      const t = await waitStatus(cd, id, 'RUNNING');
      expect((await counterPast(t.pid, before.n)).token).toBe(before.token);
    } finally {
      c2.close();
    }
  });

  it('a restore cut between Tasks.Create and Tasks.Start: the next agent deletes the unstarted task; the workload is CHECKPOINTED and restores', async () => {
    const { cd } = ctx;
    const ns = cd.namespace;
    const id = ctx.id('cut-restore');
    const { pid } = await runDetached(cd, ctx.rt.runtime, id, COUNTER);
    const before = await counterPast(pid, 1);
    const first = await start();
    const c1 = first.client();
    const ck = await c1.checkpoint({ namespace: ns, id, exit: true }, { timeoutMs: 120_000 });
    c1.close();
    await first.kill();
    // What the killed agent had done of its restore: the task created from the snapshot, not started.
    const cd2 = new ContainerdClient({ address: cd.address });
    try {
      const options = { typeUrl: 'containerd.runc.v1.Options', value: cpb.runc.v1.Options.encode({ criuImagePath: ck.snapshot!.path! }).finish() };
      await cd2.createTask(ns, { containerId: id, options });
      expect(await cd2.task(ns, id)).toMatchObject({ status: 'created', pid: 0 });
    } finally {
      cd2.close();
    }
    const second = await start(first.dir);
    const c2 = second.client();
    try {
      expect(await task(cd, id)).toBeUndefined();
      expect(await c2.get({ namespace: ns, id })).toMatchObject({ state: S.CHECKPOINTED, snapshot: { id: ck.snapshot?.id } });
      await c2.restore({ namespace: ns, id }, { timeoutMs: 120_000 });
      const t = await waitStatus(cd, id, 'RUNNING');
      expect((await counterPast(t.pid, before.n)).token).toBe(before.token);
    } finally {
      c2.close();
    }
  });

  it('killed during a restore: the restore completes or is undone; the workload ends RUNNING or CHECKPOINTED, never half-way', async () => {
    const { cd } = ctx;
    const ns = cd.namespace;
    const id = ctx.id('mid-restore');
    const { pid } = await runDetached(cd, ctx.rt.runtime, id, COUNTER);
    const before = await counterPast(pid, 1);
    const first = await start();
    const c1 = first.client();
    await c1.checkpoint({ namespace: ns, id, exit: true }, { timeoutMs: 120_000 });
    const pending = c1.restore({ namespace: ns, id }, { timeoutMs: 120_000 }).catch((e: unknown) => e);
    // Killed as soon as containerd has the task, somewhere in Create or Start.
    await waitFor('the restore to reach containerd', async () => (await task(cd, id)) !== undefined, 30_000, 5);
    await first.kill();
    c1.close();
    await pending;

    const second = await start(first.dir);
    const c2 = second.client();
    try {
      // Settled: a Start the shim was in the middle of runs to its end.
      const w = await waitFor('a settled state', async () => {
        const x = await c2.get({ namespace: ns, id });
        return x.state === S.RUNNING || x.state === S.CHECKPOINTED ? x : undefined;
      }, 60_000);
      if (w.state === S.CHECKPOINTED) await c2.restore({ namespace: ns, id }, { timeoutMs: 120_000 });
      const t = await waitStatus(cd, id, 'RUNNING');
      expect(t.pid).toBeGreaterThan(0);
      expect((await counterPast(t.pid, before.n)).token).toBe(before.token);
    } finally {
      c2.close();
    }
  });
}, {
  runtimes: ['kybernate'],
  start: checkpointDaemonOptions,
  skip: () => criuMissing(),
});
