// The multi-process CUDA steps (src/checkpoint/gpu.ts) and suspend/resume of a container
// (src/shim/suspend.ts) on their failure paths, which neither the fake libcuda nor runc can be made to
// take on demand: a stand-in driver (per-pid state machine with the driver's transitions, refusing
// frozen targets as the addon does) and a stand-in container whose freezer can fail. The success
// paths run for real in test/e2e/suspend.test.ts.
import { describe, expect, it } from 'vitest';
import type { CudaApi } from '../../src/gpu/engine';
import { GpuStepError, findCudaProcesses, resumeGpuProcesses, suspendGpuProcesses } from '../../src/gpu/engine';
import { KybernateError } from '../../src/errors';
import { resumeContainer, suspendContainer, type SuspendTarget } from '../../src/shim/suspend';
import { OperationQueue } from '../../src/shim/operation-queue';

type Op = 'lock' | 'checkpoint' | 'restore' | 'unlock';
const MOVES: Record<Op, [from: string, to: string]> = {
  lock: ['running', 'locked'], checkpoint: ['locked', 'checkpointed'], restore: ['checkpointed', 'locked'], unlock: ['locked', 'running'],
};

function coded(code: string, msg: string): Error {
  return Object.assign(new Error(msg), { code });
}

/** A driver for `pids`: every call is logged as "op:pid"; `fail` makes an op fail for a pid (state unchanged). */
class FakeDriver implements CudaApi {
  readonly state = new Map<number, string>();
  readonly calls: string[] = [];
  readonly fail = new Map<string, Error>();
  frozen = false;
  constructor(cudaPids: number[], readonly withState = true) {
    for (const p of cudaPids) this.state.set(p, 'running');
  }
  private async op(op: Op, pid: number): Promise<void> {
    await Promise.resolve();
    if (this.frozen) throw coded('KYB_ERR_CUDA_FROZEN', `process ${pid} is in a frozen cgroup`);
    this.calls.push(`${op}:${pid}`);
    const injected = this.fail.get(`${op}:${pid}`);
    if (injected) throw injected;
    const [from, to] = MOVES[op];
    if (this.state.get(pid) !== from) throw coded('CUDA_ERROR_ILLEGAL_STATE', `${op} pid ${pid}: CUDA_ERROR_ILLEGAL_STATE`);
    this.state.set(pid, to);
  }
  async getRestoreThreadId(pid: number): Promise<number> {
    if (this.frozen) throw coded('KYB_ERR_CUDA_FROZEN', `process ${pid} is in a frozen cgroup`);
    if (!this.state.has(pid)) throw coded('CUDA_ERROR_NOT_INITIALIZED', `getRestoreThreadId pid ${pid}: CUDA_ERROR_NOT_INITIALIZED`);
    return pid;
  }
  lock(pid: number): Promise<void> { return this.op('lock', pid); }
  checkpoint(pid: number): Promise<void> { return this.op('checkpoint', pid); }
  restore(pid: number): Promise<void> { return this.op('restore', pid); }
  unlock(pid: number): Promise<void> { return this.op('unlock', pid); }
  get getState(): ((pid: number) => Promise<string>) | undefined {
    return this.withState ? async (pid) => this.state.get(pid) ?? 'running' : undefined;
  }
}

function caught(p: Promise<unknown>): Promise<GpuStepError & KybernateError> {
  return p.then(() => { throw new Error('expected a rejection'); }, (e: unknown) => e as GpuStepError);
}

describe('findCudaProcesses', () => {
  it('keeps the pids with a restore thread, skips the others with the reason', async () => {
    const d = new FakeDriver([10, 30]);
    expect(await findCudaProcesses([10, 20, 30], d)).toEqual({
      cuda: [10, 30], skipped: [{ pid: 20, why: 'no CUDA state (getRestoreThreadId pid 20: CUDA_ERROR_NOT_INITIALIZED)' }],
    });
  });

  it('skips everything without a driver, and a pid that exited', async () => {
    expect(await findCudaProcesses([1, 2], null)).toEqual({ cuda: [], skipped: [{ pid: 1, why: 'CUDA disabled' }, { pid: 2, why: 'CUDA disabled' }] });
    const api = new FakeDriver([]);
    api.getRestoreThreadId = async (pid) => { throw coded(pid === 1 ? 'KYB_ERR_CUDA_NO_DRIVER' : 'ESRCH', 'CUDA driver not found (x)'); };
    expect((await findCudaProcesses([1, 2], api)).skipped).toEqual([{ pid: 1, why: 'CUDA driver not found (x)' }, { pid: 2, why: 'exited' }]);
  });

  it('refuses to classify a frozen pid instead of calling it CUDA-free', async () => {
    const d = new FakeDriver([10]);
    d.frozen = true;
    const err = await caught(findCudaProcesses([10], d));
    expect(err).toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION' });
    expect(err.message).toContain('cannot tell whether pid 10 has CUDA state');
  });
});

describe('suspendGpuProcesses / resumeGpuProcesses', () => {
  it('locks every pid before checkpointing any, restores every pid before unlocking any', async () => {
    const d = new FakeDriver([1, 2, 3]);
    const s = await suspendGpuProcesses([1, 2, 3], { api: d, lockTimeoutMs: 500 });
    expect(d.calls).toEqual(['lock:1', 'lock:2', 'lock:3', 'checkpoint:1', 'checkpoint:2', 'checkpoint:3']);
    expect(s.pids).toEqual([1, 2, 3]);
    expect(s.steps.map((x) => `${x.step}:${x.pid}`).sort()).toEqual(d.calls.map((c) => `cuda-${c}`).sort());
    expect([...d.state.values()]).toEqual(['checkpointed', 'checkpointed', 'checkpointed']);
    d.calls.length = 0;
    const steps = await resumeGpuProcesses([1, 2, 3], { api: d });
    expect(d.calls).toEqual(['restore:1', 'restore:2', 'restore:3', 'unlock:1', 'unlock:2', 'unlock:3']);
    expect(steps).toHaveLength(6);
    expect([...d.state.values()]).toEqual(['running', 'running', 'running']);
  });

  it('a checkpoint failing for one pid: every other pid is restored and all are unlocked; the error names step and pid', async () => {
    for (const withState of [true, false]) {
      const d = new FakeDriver([1, 2, 3], withState);
      d.fail.set('checkpoint:2', coded('CUDA_ERROR_OUT_OF_MEMORY', 'checkpoint pid 2: CUDA_ERROR_OUT_OF_MEMORY'));
      const err = await caught(suspendGpuProcesses([1, 2, 3], { api: d }));
      expect(err).toBeInstanceOf(GpuStepError);
      expect(KybernateError.is(err)).toBe(true);
      expect(err).toMatchObject({ code: 'KYB_ERR_CHECKPOINT_FAILED', step: 'cuda-checkpoint', pid: 2, rollbackErrors: [] });
      expect(err.message).toBe('GPU suspend of pids 1, 2, 3: cuda-checkpoint failed for pid 2: checkpoint pid 2: CUDA_ERROR_OUT_OF_MEMORY; '
        + 'the GPU state of the other processes was restored and every process unlocked');
      expect([...d.state.values()]).toEqual(['running', 'running', 'running']);
      expect(d.calls.filter((c) => c.startsWith('restore')).sort()).toEqual(['restore:1', 'restore:3']);
      expect(d.calls.filter((c) => c.startsWith('unlock')).sort()).toEqual(['unlock:1', 'unlock:2', 'unlock:3']);
    }
  });

  it('a lock failing for one pid: the others are unlocked, nothing is checkpointed', async () => {
    const d = new FakeDriver([1, 2]);
    d.fail.set('lock:1', coded('CUDA_ERROR_NOT_READY', 'lock pid 1: CUDA_ERROR_NOT_READY'));
    const err = await caught(suspendGpuProcesses([1, 2], { api: d }));
    expect(err).toMatchObject({ code: 'KYB_ERR_CHECKPOINT_FAILED', step: 'cuda-lock', pid: 1 });
    expect(d.calls).toEqual(['lock:1', 'lock:2', 'unlock:2']);
    expect([...d.state.values()]).toEqual(['running', 'running']);
  });

  it('reports rollback steps that fail too', async () => {
    const d = new FakeDriver([1, 2]);
    d.fail.set('checkpoint:1', new Error('boom'));
    d.fail.set('restore:2', new Error('restore boom'));
    const err = await caught(suspendGpuProcesses([1, 2], { api: d }));
    expect(err.rollbackErrors).toEqual(['cuda-restore pid 2: restore boom']);
    expect(err.message).toContain('(rollback failed: cuda-restore pid 2: restore boom)');
    // pid 2 stays checkpointed (an unlock would fail anyway); pid 1 is running again.
    expect(d.state.get(1)).toBe('running');
    expect(d.state.get(2)).toBe('checkpointed');
    expect(d.calls).not.toContain('unlock:2');
  });

  it('without a driver: suspend of pids fails naming the first, nothing to do for none', async () => {
    const err = await caught(suspendGpuProcesses([5], { api: null }));
    expect(err).toMatchObject({ code: 'KYB_ERR_CHECKPOINT_FAILED', step: 'cuda-lock', pid: 5 });
    expect((await suspendGpuProcesses([], { api: null })).pids).toEqual([]);
    expect(await caught(resumeGpuProcesses([5], { api: null }))).toMatchObject({ code: 'KYB_ERR_RESTORE_FAILED', unresumed: [5] });
  });

  it('a restore failing for one pid: the others run again; a retry finishes what is left', async () => {
    const d = new FakeDriver([1, 2, 3]);
    await suspendGpuProcesses([1, 2, 3], { api: d });
    d.fail.set('restore:3', new Error('restore failed'));
    const err = await caught(resumeGpuProcesses([1, 2, 3], { api: d }));
    expect(err).toMatchObject({ code: 'KYB_ERR_RESTORE_FAILED', step: 'cuda-restore', pid: 3, unresumed: [3] });
    expect(err.message).toBe('GPU resume of pids 1, 2, 3: cuda-restore failed for pid 3: restore failed; pid 3 not resumed; the other processes run again');
    expect([...d.state.values()]).toEqual(['running', 'running', 'checkpointed']);
    d.fail.clear();
    // An unlock failure leaves pid 3 LOCKED; the retry then only unlocks it.
    d.fail.set('unlock:3', new Error('unlock failed'));
    expect(await caught(resumeGpuProcesses([3], { api: d }))).toMatchObject({ step: 'cuda-unlock', pid: 3, unresumed: [3] });
    d.fail.clear();
    d.calls.length = 0;
    await resumeGpuProcesses([3], { api: d });
    expect(d.calls).toEqual(['restore:3', 'unlock:3']);
    expect(d.state.get(3)).toBe('running');
  });
});

/** A container whose freezer makes the driver refuse its processes, as the addon does. */
function container(d: FakeDriver, pids: number[], opts: { pauseFails?: boolean } = {}) {
  const log = d.calls;
  const c = {
    id: 'c1',
    log,
    gpuSuspension: undefined as SuspendTarget['gpuSuspension'],
    init: {
      status: 'running' as SuspendTarget['init']['status'],
      queue: new OperationQueue(),
      async pauseInQueue() {
        log.push('freeze');
        if (opts.pauseFails) throw new Error('runc pause: freezer timed out');
        d.frozen = true;
        c.init.status = 'paused';
      },
      async resumeInQueue() {
        log.push('thaw');
        d.frozen = false;
        c.init.status = 'running';
      },
    },
    async pids() { return pids; },
  };
  return c satisfies SuspendTarget;
}

/** 300 MiB per pid, as nvidia-smi would list them. */
const memoryOf = async (pids: number[]) => pids.length * 300 * 1024 * 1024;

describe('suspendContainer / resumeContainer', () => {
  it('checkpoints, then freezes; thaws, then restores; records and clears the suspension', async () => {
    const d = new FakeDriver([10, 11]);
    const c = container(d, [10, 11, 12]);
    const s = await suspendContainer(c, { api: d, memoryOf });
    expect(c.log).toEqual(['lock:10', 'lock:11', 'checkpoint:10', 'checkpoint:11', 'freeze']);
    expect(s).toMatchObject({ id: 'c1', pids: [10, 11], skipped: [{ pid: 12 }], deviceMemoryBytes: 600 * 1024 * 1024 });
    expect(s.steps.map((x) => x.step)).toEqual(['find', 'cuda-lock', 'cuda-lock', 'cuda-checkpoint', 'cuda-checkpoint', 'freeze']);
    expect(c.gpuSuspension).toEqual({ pids: [10, 11], since: s.since, deviceMemoryBytes: 600 * 1024 * 1024 });

    await expect(suspendContainer(c, { api: d })).rejects.toMatchObject({ code: 'KYB_ERR_GPU_SUSPENDED' });
    c.log.length = 0;
    const r = await resumeContainer(c, { api: d });
    expect(c.log).toEqual(['thaw', 'restore:10', 'restore:11', 'unlock:10', 'unlock:11']);
    expect(r.steps[0]).toMatchObject({ step: 'thaw', pid: 0 });
    expect(c.gpuSuspension).toBeUndefined();
    await expect(resumeContainer(c, { api: d })).rejects.toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION', message: 'container c1 is not suspended' });
  });

  it('a failed freeze gives the GPU state back and leaves the container running', async () => {
    const d = new FakeDriver([10]);
    const c = container(d, [10], { pauseFails: true });
    const err = await caught(suspendContainer(c, { api: d }));
    expect(err).toMatchObject({ code: 'KYB_ERR_CHECKPOINT_FAILED' });
    expect(err.message).toBe('suspend of container c1: freeze failed: runc pause: freezer timed out; the GPU state was restored and the container keeps running');
    expect(c.log).toEqual(['lock:10', 'checkpoint:10', 'freeze', 'restore:10', 'unlock:10']);
    expect(d.state.get(10)).toBe('running');
    expect(c.gpuSuspension).toBeUndefined();
  });

  it('reads the device memory while the processes are locked, before the checkpoint gives it back', async () => {
    const d = new FakeDriver([10, 11]);
    const c = container(d, [10, 11]);
    const seen: string[] = [];
    const s = await suspendContainer(c, {
      api: d,
      memoryOf: async (pids) => {
        // Let the lock step run first: the checkpoint must still wait for this answer.
        await new Promise((r) => setTimeout(r, 20));
        seen.push(`memory:${pids.join(',')} after ${d.calls.join(' ')}`);
        return 42;
      },
    });
    expect(seen).toEqual(['memory:10,11 after lock:10 lock:11']);
    expect(s.deviceMemoryBytes).toBe(42);
    expect(c.gpuSuspension?.deviceMemoryBytes).toBe(42);
  });

  it('operations queued around a suspend run one at a time, each finding the state the previous one left', async () => {
    const d = new FakeDriver([10]);
    const c = container(d, [10]);
    const pause = (): Promise<void> => c.init.queue.run('pause', async () => { d.calls.push(`pause sees ${c.init.status}`); });
    const results = await Promise.allSettled([pause(), suspendContainer(c, { api: d }), suspendContainer(c, { api: d }), pause()]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(results[2]).toMatchObject({ reason: { code: 'KYB_ERR_GPU_SUSPENDED' } });
    expect(d.calls).toEqual(['pause sees running', 'lock:10', 'checkpoint:10', 'freeze', 'pause sees paused']);
  });

  it('a suspend whose container exited under it fails as a precondition, not an internal error', async () => {
    const d = new FakeDriver([10]);
    const c = container(d, [10]);
    d.fail.set('checkpoint:10', new Error('CUDA_ERROR_INVALID_VALUE'));
    const origLock = d.lock.bind(d);
    // Killed while locked: the reaper has reported the init's exit when the checkpoint fails.
    d.lock = async (pid: number) => { await origLock(pid); c.init.status = 'stopped'; };
    const err = await caught(suspendContainer(c, { api: d }));
    expect(err).toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION' });
    expect(err.message).toMatch(/^suspend of container c1: the container exited meanwhile \(/);
    expect(c.gpuSuspension).toBeUndefined();
  });

  it('refuses containers that are not running or have no CUDA process', async () => {
    const d = new FakeDriver([]);
    const c = container(d, [10, 11]);
    await expect(suspendContainer(c, { api: d })).rejects.toMatchObject({
      code: 'KYB_ERR_FAILED_PRECONDITION', message: expect.stringMatching(/^container c1 has no CUDA processes \(10: no CUDA state/),
    });
    c.init.status = 'paused';
    await expect(suspendContainer(c, { api: d })).rejects.toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION', message: 'cannot suspend container c1: it is paused' });
    expect(d.calls).toEqual([]);
  });

  it('serialises concurrent calls on one container: one suspend wins, the other is refused', async () => {
    const d = new FakeDriver([10]);
    const c = container(d, [10]);
    const [a, b] = await Promise.allSettled([suspendContainer(c, { api: d }), suspendContainer(c, { api: d })]);
    expect(a.status).toBe('fulfilled');
    expect(b).toMatchObject({ status: 'rejected', reason: { code: 'KYB_ERR_GPU_SUSPENDED' } });
    expect(d.calls.filter((x) => x.startsWith('lock'))).toEqual(['lock:10']);
  });

  it('a partly failed resume keeps only the failed pids suspended; a second resume finishes without a thaw', async () => {
    const d = new FakeDriver([10, 11]);
    const c = container(d, [10, 11]);
    const s = await suspendContainer(c, { api: d });
    d.fail.set('restore:11', new Error('restore failed'));
    await expect(resumeContainer(c, { api: d })).rejects.toMatchObject({ code: 'KYB_ERR_RESTORE_FAILED', pid: 11 });
    expect(c.gpuSuspension).toMatchObject({ pids: [11], since: s.since });
    expect(c.init.status).toBe('running');
    d.fail.clear();
    c.log.length = 0;
    const r = await resumeContainer(c, { api: d });
    expect(c.log).toEqual(['restore:11', 'unlock:11']);
    expect(r.pids).toEqual([11]);
    expect(c.gpuSuspension).toBeUndefined();
  });

  it('forgets the suspension of a container that exited', async () => {
    const d = new FakeDriver([10]);
    const c = container(d, [10]);
    await suspendContainer(c, { api: d });
    c.init.status = 'stopped';
    await expect(resumeContainer(c, { api: d })).rejects.toMatchObject({ message: 'container c1 is stopped; its suspended processes are gone' });
    expect(c.gpuSuspension).toBeUndefined();
  });
});
