// Checkpoint and Restore as the agent's clients see them (the operations themselves are tested in
// checkpoint.test.ts): the RPCs through the agent's queue, the CHECKPOINTED state with its snapshot in
// List, Get and `kybernate ps`, kept across an agent restart, ListSnapshots and DeleteSnapshot, the bytes
// counted in the metrics; against real containerd 1.6/1.7/2.1, the kybernate shim and CRIU.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { AgentClient } from '../../src/agent-api/client';
import { kybernate as pb } from '../../src/gen/proto';
import { COUNTER, checkpointDaemonOptions, counterPast, criuMissing } from '../e2e/support/checkpoint';
import { runDetached, task, waitStatus } from '../e2e/support/ctr';
import { describeMatrix } from '../e2e/support/matrix';
import { bundle, failure, kybernate, startAgent, type Agent } from './support';

const S = pb.agent.v1.WorkloadState;

beforeAll(() => bundle(), 120_000);

describeMatrix('agent checkpointed workloads', (ctx) => {
  let agent: Agent;
  let client: AgentClient;
  beforeAll(async () => {
    agent = await startAgent({ cd: ctx.cd });
    client = agent.client();
  });
  afterAll(async () => {
    client?.close();
    await agent?.stop();
  });

  it('Checkpoint with exit: CHECKPOINTED with its snapshot (also after an agent restart); Restore: RUNNING again', async () => {
    const { cd } = ctx;
    const ns = cd.namespace;
    const id = ctx.id('zero');
    const { pid } = await runDetached(cd, ctx.rt.runtime, id, COUNTER);
    const before = await counterPast(pid, 1);

    const ck = await client.checkpoint({ namespace: ns, id, exit: true }, { timeoutMs: 120_000 });
    expect(ck.snapshot).toMatchObject({ namespace: ns, containerId: id, exited: true });
    expect(ck.snapshot?.id).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(ck.workload).toMatchObject({ id, state: S.CHECKPOINTED, pid: 0, taskStatus: '' });
    expect(ck.workload?.snapshot?.id).toBe(ck.snapshot?.id);
    expect(await task(cd, id)).toBeUndefined();

    const listed = (await client.listSnapshots({ namespace: ns, id })).snapshots ?? [];
    expect(listed.map((s) => s.id)).toEqual([ck.snapshot?.id]);
    const ps = await kybernate(['ps', '-n', ns, '--agent', agent.socket]);
    const short = ck.snapshot!.id!.slice('sha256:'.length, 'sha256:'.length + 12);
    expect(ps.stdout.split('\n').find((l) => l.includes(` ${id} `))).toMatch(new RegExp(`\\sCHECKPOINTED\\s+-\\s+${short}\\s+\\d+[smhd] ago$`));

    // Level-based: a new agent finds the same state in containerd and the snapshot directory.
    client.close();
    await agent.kill();
    agent = await startAgent({ cd, dir: agent.dir });
    client = agent.client();
    expect(await client.get({ namespace: ns, id })).toMatchObject({ state: S.CHECKPOINTED, snapshot: { id: ck.snapshot?.id } });

    const r = await client.restore({ namespace: ns, id }, { timeoutMs: 120_000 });
    expect(r.snapshot?.id).toBe(ck.snapshot?.id);
    expect(r.workload).toMatchObject({ state: S.RUNNING });
    const t = await waitStatus(cd, id, 'RUNNING');
    expect((await counterPast(t.pid, before.n)).token).toBe(before.token);
    // Running again, with a snapshot still on disk: RUNNING is what the task says.
    expect(await client.get({ namespace: ns, id })).toMatchObject({ state: S.RUNNING, pid: t.pid, snapshot: { id: ck.snapshot?.id } });

    const metrics = await (await fetch(`http://${agent.metrics}/metrics`)).text();
    expect(metrics).toMatch(/^kybernate_agent_operations_total\{kind="restore",result="ok"\} 1$/m);
    expect(Number(/^kybernate_agent_snapshot_bytes_read_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThan(0);

    const del = await client.deleteSnapshot({ snapshot: ck.snapshot!.id!.slice(0, 'sha256:'.length + 8) });
    expect(del.snapshot?.id).toBe(ck.snapshot?.id);
    expect((await client.listSnapshots({ namespace: ns })).snapshots ?? []).toEqual([]);
    expect(await failure(client.deleteSnapshot({ snapshot: ck.snapshot!.id! }))).toMatchObject({ code: 'KYB_ERR_NOT_FOUND', status: 5 });
  });
}, { runtimes: ['kybernate'], start: checkpointDaemonOptions, skip: () => criuMissing() });
