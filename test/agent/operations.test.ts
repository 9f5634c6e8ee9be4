// Operations through the agent against real containerd (1.6, 1.7, 2.1) and kybernate shims, on the fake
// libcuda (test/native/fixtures/fake-libcuda.c, as in test/e2e/operations.test.ts): Suspend and Resume
// (states, GPU memory from the nvidia-smi stand-in, events, metrics, the CLI through the agent), refusals
// with their codes, one operation per workload in arrival order with a waiting caller's deadline dropping
// it, and a retried request id that never runs twice.
//
// Determinism: the fake holds every call of an operation after logging it (hold/release), so an operation
// is stopped in the driver while the next requests are sent; verdicts read results, events, the agent's
// log and the fake's call log, never a time.
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import type { AgentClient } from '../../src/agent-api/client';
import type { RequestOf } from '../../src/agent-api/definition';
import { kybernate as pb } from '../../src/gen/proto';
import { fromTimestamp } from '../../src/timestamp';
import { LOOP, runDetached, waitFor } from '../e2e/support/ctr';
import { describeMatrix } from '../e2e/support/matrix';
import {
  GPU_MIB, MIB, begins, daemonOptions, driverCalls, driverViolations, hold, hostSleepMissing, prepare, release, releaseAll,
  startCuda, tmp,
} from '../e2e/support/operations';
import { failure, kybernate, startAgent, type Agent } from './support';

const S = pb.agent.v1.WorkloadState;
const lacks = hostSleepMissing() ?? prepare();
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const sorted = (xs: readonly number[]): number[] => [...xs].sort((a, b) => a - b);
type Event = pb.agent.v1.IEvent;

describeMatrix('agent operations', (ctx) => {
  let agent: Agent;
  let client: AgentClient;
  beforeAll(async () => {
    // The nvidia-smi stand-in (first on the daemon's PATH) and what it reads, for the GPU memory columns.
    const e = daemonOptions(ctx.version).env!;
    agent = await startAgent({ cd: ctx.cd, env: { PATH: e.PATH!, FAKE_CUDA_MARKER: e.FAKE_CUDA_MARKER!, FAKE_CUDA_STATE_DIR: e.FAKE_CUDA_STATE_DIR! } });
    client = agent.client();
  });
  afterAll(async () => {
    client?.close();
    await agent?.stop();
  });
  afterEach(releaseAll);

  const ref = (id: string): RequestOf<'Get'> => ({ namespace: ctx.cd.namespace, id });

  /** Every event of `id` from now on, once the agent has subscribed the stream. */
  async function watch(id: string): Promise<{ events: Event[]; close(): void }> {
    const stream = client.events({ namespace: ctx.cd.namespace });
    const events: Event[] = [];
    stream.on((e) => { if (e.id === id) events.push(e); });
    await stream.ready;
    return { events, close: () => stream.close() };
  }

  it('Suspend then Resume: SUSPENDED with its GPU memory saved, then RUNNING; events, metrics', async () => {
    const { cd } = ctx;
    const id = ctx.id('gpu');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const gpuBytes = pids.length * GPU_MIB * MIB;
    await waitFor('the stand-in\'s GPU memory in the view', async () => (await client.get(ref(id))).gpuMemoryBytes?.toNumber() === gpuBytes);
    const w = await watch(id);
    try {
      const s = await client.suspend(ref(id));
      expect(sorted(s.cudaPids ?? [])).toEqual(pids);
      expect(s.steps?.map((x) => x.name)).toEqual(expect.arrayContaining(pids.flatMap((p) => [`cuda-lock:${p}`, `cuda-checkpoint:${p}`])));
      expect(s.workload).toMatchObject({ id, state: S.SUSPENDED, operation: '' });

      const got = await client.get(ref(id));
      expect(got).toMatchObject({ state: S.SUSPENDED, taskStatus: 'paused' });
      expect(sorted(got.cudaPids ?? [])).toEqual(pids);
      expect(got.gpuMemoryBytes?.toNumber()).toBe(0);
      expect(got.savedGpuMemoryBytes?.toNumber()).toBe(gpuBytes);
      expect(fromTimestamp(got.since)).toBeDefined();

      await waitFor('OperationDone and StateChanged to SUSPENDED', () =>
        w.events.some((e) => e.done?.operation === 'suspend') && w.events.some((e) => e.state?.to === S.SUSPENDED));
      expect(w.events.find((e) => e.done)?.done).toMatchObject({ operation: 'suspend', ok: true, code: '' });
      expect(w.events.filter((e) => e.progress).map((e) => e.progress!.step!.name)).toEqual(s.steps?.map((x) => x.name));

      const metrics = await (await fetch(`http://${agent.metrics}/metrics`)).text();
      expect(metrics).toMatch(/^kybernate_agent_operations_total\{kind="suspend",result="ok"\} [1-9]/m);
      expect(metrics).toMatch(/^kybernate_agent_operation_duration_seconds_count\{kind="suspend",result="ok"\} [1-9]/m);
      const freed = Number(/^kybernate_agent_gpu_memory_freed_bytes_total\{kind="suspend"\} (\d+)/m.exec(metrics)?.[1]);
      expect(freed).toBeGreaterThanOrEqual(gpuBytes);

      const r = await client.resume(ref(id));
      expect(sorted(r.cudaPids ?? [])).toEqual(pids);
      expect(r.workload).toMatchObject({ state: S.RUNNING });
      expect((await client.get(ref(id))).state).toBe(S.RUNNING);
      await waitFor('StateChanged back to RUNNING', () => w.events.some((e) => e.state?.from === S.SUSPENDED && e.state.to === S.RUNNING));
      expect(driverViolations(driverCalls(ctx.version, pids))).toEqual([]);
    } finally {
      w.close();
    }
  });

  it('kybernate suspend, gpu-status, resume and ps go through the agent (--agent, $KYBERNATE_AGENT)', async () => {
    const { cd } = ctx;
    const id = ctx.id('cli');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const args = [id, '-n', cd.namespace, '--json'];
    const s = await kybernate(['suspend', ...args, '--agent', agent.socket]);
    expect(s.code, s.stdout + s.stderr).toBe(0);
    const sj = JSON.parse(s.stdout) as { ok: boolean; agent: string; pids: number[]; steps: Array<{ step: string; pid: number }> };
    expect(sj).toMatchObject({ ok: true, id, namespace: cd.namespace, agent: agent.socket });
    expect(sorted(sj.pids)).toEqual(pids);
    expect(sj.steps).toEqual(expect.arrayContaining(pids.map((pid) => expect.objectContaining({ step: 'cuda-lock', pid }))));
    const st = await kybernate(['gpu-status', ...args], { KYBERNATE_AGENT: agent.socket });
    expect(JSON.parse(st.stdout)).toMatchObject({ ok: true, agent: agent.socket, suspended: true, taskStatus: 'paused' });
    const ps = await kybernate(['ps', '-n', cd.namespace], { KYBERNATE_AGENT: agent.socket });
    expect(ps.stdout.split('\n').find((l) => l.includes(` ${id} `))).toMatch(new RegExp(`\\sSUSPENDED\\s+${pids.length * GPU_MIB} MiB saved\\s`));
    const r = await kybernate(['resume', ...args, '--agent', agent.socket]);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, agent: agent.socket });
    expect((await client.get(ref(id))).state).toBe(S.RUNNING);
  });

  it('refusals carry their code: no CUDA processes and no task are FAILED_PRECONDITION, no container NOT_FOUND', async () => {
    const { cd } = ctx;
    const plain = ctx.id('plain');
    await runDetached(cd, ctx.rt.runtime, plain, LOOP);
    const f = await failure(client.suspend(ref(plain)));
    expect(f).toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION', status: 9 });
    expect(f.message).toContain('no CUDA processes');
    expect((await client.get(ref(plain))).state).toBe(S.RUNNING);
    const idle = ctx.id('idle');
    await cd.ctrOk(['containers', 'create', '--runtime', ctx.rt.runtime, 'docker.io/library/busybox:kybernate-test', idle, 'true']);
    expect(await failure(client.resume(ref(idle)))).toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION', status: 9 });
    expect(await failure(client.suspend(ref('no-such-workload')))).toMatchObject({ code: 'KYB_ERR_NOT_FOUND', status: 5 });
    const cli = await kybernate(['suspend', plain, '-n', cd.namespace, '--agent', agent.socket, '--json']);
    expect(cli.code).toBe(1);
    expect(JSON.parse(cli.stdout)).toMatchObject({ ok: false, code: 'KYB_ERR_FAILED_PRECONDITION', status: 9 });
  });

  it('two operations on one workload run one after the other in arrival order; a waiter whose deadline passes never runs', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('queue');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const w = await watch(id);
    try {
      hold('lock');
      const suspending = client.suspend(ref(id));
      await waitFor('the suspend to hold in cuCheckpointProcessLock', () => begins(driverCalls(version, pids), 'lock').length > 0);
      expect((await client.get(ref(id))).operation).toBe('suspend');
      const resuming = client.resume(ref(id), { timeoutMs: 120_000 });
      // Queued behind the held suspend: its deadline passes while it waits, and it is taken out of the queue.
      expect(await failure(client.resume(ref(id), { timeoutMs: 300 }))).toMatchObject({ code: 'KYB_ERR_DEADLINE', status: 4 });
      release('lock');
      const [s, r] = await Promise.all([suspending, resuming]);
      // The resume needs the suspension: had it run first, it would have failed as not suspended.
      expect(s.workload?.state).toBe(S.SUSPENDED);
      expect(r.workload?.state).toBe(S.RUNNING);
      await waitFor('both OperationDone events', () => w.events.filter((e) => e.done).length === 2);
      expect(w.events.filter((e) => e.done).map((e) => `${e.done!.operation}:${e.done!.ok}`)).toEqual(['suspend:true', 'resume:true']);
      // The agent started the resume only once the suspend was done, and the expired one never.
      const log = (): string[] => agent.logs().split('\n').filter((l) => l.includes(`"id":"${id}"`) && /"msg":"operation (started|done)"/.test(l))
        .map((l) => { const j = JSON.parse(l) as { kind: string; msg: string }; return `${j.msg.split(' ')[1]} ${j.kind}`; });
      await waitFor('the agent to log both operations', () => log().length >= 4);
      expect(log()).toEqual(['started suspend', 'done suspend', 'started resume', 'done resume']);
      const calls = driverCalls(version, pids);
      expect(driverViolations(calls)).toEqual([]);
      expect(begins(calls).map((c) => c.op)).toEqual(['lock', 'lock', 'checkpoint', 'checkpoint', 'restore', 'restore', 'unlock', 'unlock']);
    } finally {
      w.close();
    }
  });

  it('a retried request_id gets the first result and never runs again, also while the first still runs', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('retry');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const rid = `suspend-${id}`;
    const first = await client.suspend({ ...ref(id), requestId: rid });
    const again = await client.suspend({ ...ref(id), requestId: rid });
    expect(again).toEqual(first);
    expect(begins(driverCalls(version, pids), 'lock')).toHaveLength(pids.length);

    hold('restore');
    const resumeId = `resume-${id}`;
    const r1 = client.resume({ ...ref(id), requestId: resumeId });
    await waitFor('the resume to hold in the driver', () => begins(driverCalls(version, pids), 'restore').length > 0);
    const r2 = client.resume({ ...ref(id), requestId: resumeId });
    release('restore');
    const [a, b] = await Promise.all([r1, r2]);
    expect(b).toEqual(a);
    expect(a.workload?.state).toBe(S.RUNNING);
    expect(begins(driverCalls(version, pids), 'restore')).toHaveLength(pids.length);

    expect(await failure(client.resume({ ...ref(id), requestId: rid }))).toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT', status: 3 });
  });
}, { runtimes: ['kybernate'], start: daemonOptions, skip: () => lacks });
