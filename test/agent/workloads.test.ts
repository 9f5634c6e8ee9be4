// The agent's view of the node against real containerd (1.6, 1.7, 2.1) and kybernate shims: List and Get,
// `kybernate ps`, states as containerd changes them (and the Events stream's StateChanged), containers
// without a running task, Gpus and Health, and an agent SIGKILLed and started again (the view is
// level-based: nothing is lost).
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { AgentClient } from '../../src/agent-api/client';
import type { ResponseOf } from '../../src/agent-api/definition';
import { kybernate as pb } from '../../src/gen/proto';
import { fromTimestamp } from '../../src/timestamp';
import { LOOP, runDetached, waitFor, waitStatus } from '../e2e/support/ctr';
import { RUNC_RUNTIME, TEST_IMAGE } from '../e2e/support/harness';
import { describeMatrix } from '../e2e/support/matrix';
import { bundle, failure, kybernate, startAgent, type Agent } from './support';

const S = pb.agent.v1.WorkloadState;
type Workload = ResponseOf<'Get'>;

beforeAll(() => bundle(), 120_000);

const brief = (w: Workload) => ({ id: w.id, state: S[w.state ?? 0], pid: w.pid ?? 0 });

describeMatrix('agent workloads', (ctx) => {
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

  const mine = async (): Promise<Workload[]> => (await client.list({ namespace: ctx.cd.namespace })).workloads ?? [];

  it('List and Get show a kybernate container RUNNING with its pid, not a runc one; a missing one is NOT_FOUND', async () => {
    const { cd } = ctx;
    const id = ctx.id('web');
    const t = await runDetached(cd, ctx.rt.runtime, id, LOOP);
    const other = ctx.id('runc');
    await runDetached(cd, RUNC_RUNTIME, other, LOOP);

    const listed = await mine();
    expect(listed.map(brief)).toContainEqual({ id, state: 'RUNNING', pid: t.pid });
    expect(listed.map((w) => w.id)).not.toContain(other);
    expect((await client.list({})).workloads?.map((w) => `${w.namespace}/${w.id}`)).toContain(`${cd.namespace}/${id}`);

    const w = await client.get({ namespace: cd.namespace, id });
    expect(w).toMatchObject({ namespace: cd.namespace, id, state: S.RUNNING, pid: t.pid, image: TEST_IMAGE, taskStatus: 'running', operation: '' });
    // Since when: the init's start, read from /proc, not later than now.
    expect(fromTimestamp(w.since)!.getTime()).toBeLessThanOrEqual(Date.now());

    expect(await failure(client.get({ namespace: cd.namespace, id: 'no-such-container' }))).toMatchObject({ code: 'KYB_ERR_NOT_FOUND', status: 5 });
    const runc = await failure(client.get({ namespace: cd.namespace, id: other }));
    expect(runc).toMatchObject({ code: 'KYB_ERR_NOT_FOUND', status: 5 });
    expect(runc.message).toContain('io.containerd.runc.v2');
  });

  it('kybernate ps: --json, and the table', async () => {
    const { cd } = ctx;
    const id = ctx.id('ps');
    const t = await runDetached(cd, ctx.rt.runtime, id, LOOP);
    const j = await kybernate(['ps', '--agent', agent.socket, '-n', cd.namespace, '--json']);
    expect(j.code).toBe(0);
    const out = JSON.parse(j.stdout) as { ok: boolean; workloads: Array<Record<string, unknown>> };
    expect(out.ok).toBe(true);
    expect(out.workloads.find((x) => x.id === id)).toMatchObject({
      namespace: cd.namespace, id, state: 'RUNNING', pid: t.pid, gpuMemoryBytes: 0, snapshot: null, image: TEST_IMAGE, operation: '',
    });
    const table = await kybernate(['ps', '--agent', agent.socket, '-A']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAMESPACE\s+ID\s+STATE\s+GPU MEM\s+SNAPSHOT\s+SINCE$/);
    expect(lines.find((l) => l.split(/\s+/)[1] === id)).toMatch(new RegExp(`^${cd.namespace}\\s+${id}\\s+RUNNING\\s+-\\s+-\\s+\\d+[smhd] ago$`));
  });

  it('a paused container is PAUSED, and the Events stream reports RUNNING → PAUSED → RUNNING', async () => {
    const { cd } = ctx;
    const id = ctx.id('pause');
    await runDetached(cd, ctx.rt.runtime, id, LOOP);
    const events = client.events({ namespace: cd.namespace });
    const seen: Array<{ from: string; to: string }> = [];
    events.on((e) => {
      if (e.id === id && e.state) seen.push({ from: S[e.state.from ?? 0], to: S[e.state.to ?? 0] });
    });
    try {
      await events.ready;
      await cd.ctrOk(['tasks', 'pause', id]);
      await waitStatus(cd, id, 'PAUSED');
      await waitFor('StateChanged to PAUSED', () => seen.some((s) => s.to === 'PAUSED'));
      expect((await client.get({ namespace: cd.namespace, id })).state).toBe(S.PAUSED);
      await cd.ctrOk(['tasks', 'resume', id]);
      await waitFor('StateChanged back to RUNNING', () => seen.some((s) => s.from === 'PAUSED' && s.to === 'RUNNING'));
      expect(seen.filter((s) => s.from === 'RUNNING' || s.from === 'PAUSED')).toEqual([
        { from: 'RUNNING', to: 'PAUSED' }, { from: 'PAUSED', to: 'RUNNING' },
      ]);
    } finally {
      events.close();
    }
  });

  it('containers without a running task are STOPPED: never started, and exited', async () => {
    const { cd } = ctx;
    const created = ctx.id('created');
    await cd.ctrOk(['containers', 'create', '--runtime', ctx.rt.runtime, TEST_IMAGE, created, 'true']);
    const exited = ctx.id('exited');
    await cd.ctrOk(['run', '-d', '--runtime', ctx.rt.runtime, TEST_IMAGE, exited, 'true']);
    await waitStatus(cd, exited, 'STOPPED');
    for (const id of [created, exited]) {
      expect(await client.get({ namespace: cd.namespace, id })).toMatchObject({ id, state: S.STOPPED, pid: 0 });
    }
    expect((await client.get({ namespace: cd.namespace, id: exited })).taskStatus).toBe('stopped');
    expect((await client.get({ namespace: cd.namespace, id: created })).taskStatus).toBe('');
  });

  it('Gpus says why there are none; Health reports containerd and the workloads', async () => {
    const g = await client.gpus({});
    expect(g.gpus ?? []).toEqual([]);
    expect(g.unavailable).toMatch(/\S/);
    const h = await client.health({});
    expect(h.containerd).toBe(true);
    expect(h.containerdVersion).toMatch(new RegExp(`^v?${ctx.version.replace('.', '\\.')}\\.`));
    expect(h.workloads).toBe((await client.list({})).workloads?.length ?? 0);
  });

  it('SIGKILL and a restart: List shows the same workloads in the same states', async () => {
    const { cd } = ctx;
    const running = ctx.id('keep-running');
    const paused = ctx.id('keep-paused');
    const stopped = ctx.id('keep-stopped');
    await runDetached(cd, ctx.rt.runtime, running, LOOP);
    await runDetached(cd, ctx.rt.runtime, paused, LOOP);
    await cd.ctrOk(['tasks', 'pause', paused]);
    await cd.ctrOk(['containers', 'create', '--runtime', ctx.rt.runtime, TEST_IMAGE, stopped, 'true']);
    const ids = new Set([running, paused, stopped]);
    const before = (await mine()).filter((w) => ids.has(w.id ?? '')).map(brief);
    expect(before.map((w) => w.state).sort()).toEqual(['PAUSED', 'RUNNING', 'STOPPED']);

    client.close();
    await agent.kill();
    agent = await startAgent({ cd, dir: agent.dir });
    client = agent.client();
    const after = (await mine()).filter((w) => ids.has(w.id ?? '')).map(brief);
    expect(after).toEqual(before);
    await cd.ctrOk(['tasks', 'resume', paused]);
  });
}, { runtimes: ['kybernate'] });
