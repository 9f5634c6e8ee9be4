// One operation queue per container (issue 9, Deliver 3), through real containerd and the kybernate shim
// on the fake libcuda (test/native/fixtures/fake-libcuda.c): operations that race on one container —
// suspend and checkpoint, suspend and kill, two checkpoints, 50 mixed operations on 5 containers — must
// run one at a time, settle, leave the container manageable, and give results that agree with each other.
//
// Determinism: the fake holds every call of an operation (FAKE_CUDA_HOLD_DIR) after logging it, so the
// first operation is stopped in the middle of its driver calls while the second is sent; the hold is let
// go once the second shows up in the driver (the overlap the queue must prevent) or after OVERLAP_WINDOW_MS
// (the second was queued, as it should be). The verdicts read the fake's per-pid log, the results and the
// snapshot directories, never a time.
import { afterAll, afterEach, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { describeMatrix } from './support/matrix';
import { alive, sleep, task, waitFor, waitStatus } from './support/ctr';
import { criuMissing } from './support/checkpoint';
import {
  BUSY_CODES, Code, GPU_MIB, MIB, begins, checkpoint, cli, completeSnapshot, cudaLog, daemonOptions, deleteTask, driverCalls,
  driverViolations, filesIn, freshDir, hold, hostSleepMissing, kill, prepare, release, releaseAll, startCuda, tmp,
  type OpResult,
} from './support/operations';
import { mixedRun } from './support/operations-mixed';

const lacks = criuMissing() ?? hostSleepMissing() ?? prepare();
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** How long a held operation waits for a racing one to reach the driver before it is let go. */
const OVERLAP_WINDOW_MS = 2_000;
const BUSY = BUSY_CODES;

const sorted = (xs: readonly number[]): number[] => [...xs].sort((a, b) => a - b);

/** Polls `pred` until true or `ms` passed; says which. Sets a bound on a wait, asserts nothing. */
async function within(ms: number, pred: () => boolean): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await sleep(20);
  }
  return pred();
}

describeMatrix('operations', (ctx) => {
  afterEach(releaseAll);

  /** Resume (if suspended), SIGKILL and delete through containerd: what "stays manageable" means. */
  async function manageable(id: string, pids: number[]): Promise<void> {
    const { cd } = ctx;
    const st = await cli(cd, 'gpu-status', id);
    expect(st.ok, st.message).toBe(true);
    if ((st.value as { suspended: boolean }).suspended) expect(await cli(cd, 'resume', id)).toMatchObject({ ok: true });
    if ((await task(cd, id))?.status === 'PAUSED') await cd.ctrOk(['tasks', 'resume', id]);
    expect((await task(cd, id))?.status).toBe('RUNNING');
    expect(await kill(cd, id)).toMatchObject({ ok: true });
    await waitStatus(cd, id, 'STOPPED');
    for (const pid of pids) await waitFor(`pid ${pid} to exit`, () => !alive(pid));
    expect(await deleteTask(cd, id)).toMatchObject({ ok: true });
    expect(await task(cd, id)).toBeUndefined();
  }

  it('suspend racing a checkpoint (suspend first): one after the other, the checkpoint records the suspension', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('sus-cp');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const dir = freshDir('sus-cp');
    hold('lock');
    const suspending = cli(cd, 'suspend', id);
    await waitFor('the suspend to lock both pids', () => begins(driverCalls(version, pids), 'lock').length === 2);
    const checkpointing = checkpoint(cd, id, dir);
    await within(OVERLAP_WINDOW_MS, () => begins(driverCalls(version, pids), 'lock').length > 2);
    release('lock');
    const [s, c] = await Promise.all([suspending, checkpointing]);

    expect(driverViolations(driverCalls(version, pids))).toEqual([]);
    expect(s, s.message).toMatchObject({ ok: true });
    expect(sorted((s.value as { pids: number[] }).pids)).toEqual(pids);
    if (c.ok) {
      const m = completeSnapshot(dir);
      // Queued behind the suspend: it found the GPU state in host memory and took it as the suspend left it.
      expect(m.options.suspendedInPlace).toBe(true);
      expect(sorted(m.cuda.pids)).toEqual(pids);
      expect(begins(driverCalls(version, pids)).map((x) => x.op)).toEqual(['lock', 'lock', 'checkpoint', 'checkpoint']);
    } else {
      expect(BUSY, c.message).toContain(c.code);
      expect(filesIn(dir)).toEqual([]);
    }
    expect(await cli(cd, 'gpu-status', id)).toMatchObject({ ok: true, value: { suspended: true, taskStatus: 'paused' } });
    await manageable(id, pids);
    expect(driverViolations(driverCalls(version, pids))).toEqual([]);
  });

  it('a checkpoint racing a suspend (checkpoint first): the suspend follows the checkpoint\'s give-back', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('cp-sus');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const dir = freshDir('cp-sus');
    hold('lock');
    const checkpointing = checkpoint(cd, id, dir);
    await waitFor('the checkpoint to lock both pids', () => begins(driverCalls(version, pids), 'lock').length === 2);
    const suspending = cli(cd, 'suspend', id);
    await within(OVERLAP_WINDOW_MS, () => begins(driverCalls(version, pids), 'lock').length > 2);
    release('lock');
    const [c, s] = await Promise.all([checkpointing, suspending]);

    expect(driverViolations(driverCalls(version, pids))).toEqual([]);
    expect(c, c.message).toMatchObject({ ok: true });
    const m = completeSnapshot(dir);
    expect(m.options.suspendedInPlace).toBe(false);
    expect(sorted(m.cuda.pids)).toEqual(pids);
    if (s.ok) {
      expect(sorted((s.value as { pids: number[] }).pids)).toEqual(pids);
      // The checkpoint's whole cycle (lock, checkpoint, restore, unlock), then the suspend's lock and checkpoint.
      expect(begins(driverCalls(version, pids)).map((x) => x.op)).toEqual(
        ['lock', 'lock', 'checkpoint', 'checkpoint', 'restore', 'restore', 'unlock', 'unlock', 'lock', 'lock', 'checkpoint', 'checkpoint']);
    } else {
      expect(BUSY, s.message).toContain(s.code);
      expect(await cli(cd, 'gpu-status', id)).toMatchObject({ ok: true, value: { suspended: false, taskStatus: 'running' } });
    }
    await manageable(id, pids);
  });

  it('kill during a suspend: the task exits, State and gpu-status answer meanwhile, delete works, nothing hangs', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('sus-kill');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    hold('checkpoint');
    const suspending = cli(cd, 'suspend', id);
    // Locked, and in the middle of the driver's checkpoint: the longest step of a real suspend.
    await waitFor('the suspend to checkpoint both pids', () => begins(driverCalls(version, pids), 'checkpoint').length === 2);
    expect(await kill(cd, id)).toMatchObject({ ok: true });
    await waitStatus(cd, id, 'STOPPED');
    for (const pid of pids) await waitFor(`pid ${pid} to exit`, () => !alive(pid));
    // Answered while the suspend still waits in the driver.
    expect(await cli(cd, 'gpu-status', id)).toMatchObject({ ok: true, value: { suspended: false, taskStatus: 'stopped' } });
    // Delete may wait for the suspend or not: it is given the window, then the suspend is let go.
    let deleted: OpResult | undefined;
    const deleting = deleteTask(cd, id).then((r) => { deleted = r; return r; });
    await within(OVERLAP_WINDOW_MS, () => deleted !== undefined);
    release('checkpoint');
    const [s, d] = await Promise.all([suspending, deleting]);
    expect(d, d.message).toMatchObject({ ok: true });
    expect(await task(cd, id)).toBeUndefined();
    // The suspend cannot have succeeded: its processes died under it. A stopped container is a precondition
    // failure (or the operation was cancelled), not an internal error.
    expect(s.ok).toBe(false);
    expect([Code.CANCELLED, Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.ABORTED], `${s.code}: ${s.message}`).toContain(s.code);
    // The fake answers calls on the dead pids with errors; none may overlap or break the order.
    expect(driverViolations(driverCalls(version, pids), { failuresAllowed: true })).toEqual([]);
  });

  it('two checkpoints at once into two directories: each complete or empty, never mixed', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('cp-cp');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const dirs = [freshDir('cp1'), freshDir('cp2')];
    hold('lock');
    const first = checkpoint(cd, id, dirs[0]!);
    await waitFor('the first checkpoint to lock both pids', () => begins(driverCalls(version, pids), 'lock').length === 2);
    const second = checkpoint(cd, id, dirs[1]!);
    await within(OVERLAP_WINDOW_MS, () => begins(driverCalls(version, pids), 'lock').length > 2);
    release('lock');
    const results = await Promise.all([first, second]);

    expect(driverViolations(driverCalls(version, pids))).toEqual([]);
    expect(results[0], results[0]!.message).toMatchObject({ ok: true });
    results.forEach((r, i) => {
      if (r.ok) {
        const m = completeSnapshot(dirs[i]!);
        expect(sorted(m.cuda.pids)).toEqual(pids);
        expect(m.cuda.deviceMemoryBytes).toBe(pids.length * GPU_MIB * MIB);
      } else {
        expect(BUSY, r.message).toContain(r.code);
        expect(filesIn(dirs[i]!)).toEqual([]);
      }
    });
    // Each did its own whole cycle, one after the other.
    const cycle = ['lock', 'lock', 'checkpoint', 'checkpoint', 'restore', 'restore', 'unlock', 'unlock'];
    expect(begins(driverCalls(version, pids)).map((x) => x.op)).toEqual(results[1]!.ok ? [...cycle, ...cycle] : cycle);
    await manageable(id, pids);
  });

  it('a checkpoint of a running CUDA container records its device memory (nvidia-smi stand-in)', async () => {
    const { cd } = ctx;
    const id = ctx.id('mem-run');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const dir = freshDir('mem-run');
    const c = await checkpoint(cd, id, dir);
    expect(c, c.message).toMatchObject({ ok: true });
    const m = completeSnapshot(dir);
    expect(m.options.suspendedInPlace).toBe(false);
    expect(m.cuda.deviceMemoryBytes).toBe(pids.length * GPU_MIB * MIB);
    await manageable(id, pids);
  });

  it('a checkpoint of a suspended container records the device memory the suspension freed (nvidia-smi stand-in)', async () => {
    const { cd } = ctx;
    const id = ctx.id('mem-sus');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    expect(await cli(cd, 'suspend', id)).toMatchObject({ ok: true });
    const dir = freshDir('mem-sus');
    const c = await checkpoint(cd, id, dir);
    expect(c, c.message).toMatchObject({ ok: true });
    const m = completeSnapshot(dir);
    expect(m.options.suspendedInPlace).toBe(true);
    expect(sorted(m.cuda.pids)).toEqual(pids);
    // nvidia-smi lists no memory for them now: only what the suspend read before it freed it can be here.
    expect(m.cuda.deviceMemoryBytes).toBe(pids.length * GPU_MIB * MIB);
    await manageable(id, pids);
  });

  it('50 mixed operations on 5 containers at once (seeded): all settle, results linearise, all stay manageable', async () => {
    const { version } = ctx;
    const run = await mixedRun(ctx, 5, 10, 0x5eed);
    expect(run.hung, 'operations that did not settle').toEqual([]);
    expect(run.illegal, 'histories no one-at-a-time order explains').toEqual([]);
    expect(driverViolations(driverCalls(version, run.pids.flat()))).toEqual([]);
    for (const [i, id] of run.ids.entries()) await manageable(id, run.pids[i]!);
    expect(cudaLog(version)).toBeTruthy();
  }, 300_000);
}, {
  runtimes: ['kybernate'],
  skip: () => lacks,
  start: daemonOptions,
});
