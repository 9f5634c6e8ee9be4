// The CUDA checkpoint API without a GPU. The struct layout (64-byte argument structs, field offsets) is
// asserted at compile time in native/cuda_driver.h, so a build of the addon is that check; the fake
// driver (fixtures/fake-libcuda.c) reads the structs by the documented raw offsets, which checks the
// same layout from the other side at run time.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { buildSync } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cuda, NativeError } from '../../src/native';
import { addonBuilt, addonPath, here, isRoot } from './helpers';

const hasLibcuda = (() => {
  try {
    return fs.readFileSync('/etc/ld.so.cache').includes(Buffer.from('libcuda.so.1'));
  } catch {
    return false;
  }
})();

describe.skipIf(!addonBuilt())('CUDA calls without a CUDA driver', () => {
  it.skipIf(hasLibcuda)('every call rejects with KYB_ERR_CUDA_NO_DRIVER, naming its op and pid', async () => {
    const pid = process.pid;
    const calls: Array<[string, () => Promise<unknown>, number | undefined]> = [
      ['driverVersion', () => cuda.cudaDriverVersion(), undefined],
      ['listGpus', () => cuda.listGpus(), undefined],
      ['getState', () => cuda.getState(pid), pid],
      ['getRestoreThreadId', () => cuda.getRestoreThreadId(pid), pid],
      ['lock', () => cuda.lock(pid, 1000), pid],
      ['checkpoint', () => cuda.checkpoint(pid), pid],
      ['restore', () => cuda.restore(pid), pid],
      ['unlock', () => cuda.unlock(pid), pid],
    ];
    for (const [op, fn, p] of calls) {
      const err = await fn().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(cuda.CudaError);
      expect(err).toBeInstanceOf(NativeError);
      expect(err).toMatchObject({ code: 'KYB_ERR_CUDA_NO_DRIVER', op, pid: p });
      expect((err as Error).message).toMatch(/^CUDA driver not found \(libcuda\.so\.1: /);
      // The stack is the caller's, not an empty native one.
      expect((err as Error).stack).toContain('cuda.test.ts');
    }
    await expect(cuda.suspend(pid)).rejects.toMatchObject({ code: 'KYB_ERR_CUDA_NO_DRIVER', op: 'lock' });
  });

  it('rejects bad arguments with TypeError/RangeError before loading the driver', async () => {
    await expect(cuda.restore(process.pid, [['GPU-zz', 'x']])).rejects.toThrow(TypeError);
    await expect(cuda.lock(-1, 10)).rejects.toThrow(RangeError);
  });

  it('checkRunnable: ESRCH for a pid that does not exist, nothing for this process', () => {
    expect(() => cuda.checkRunnable(process.pid)).not.toThrow();
    expect(() => cuda.checkRunnable(0x3ffffff0)).toThrow(expect.objectContaining({ code: 'ESRCH', op: 'checkRunnable' }));
  });
});

describe.skipIf(!addonBuilt())('CUDA calls against a fake libcuda.so.1 (KYBERNATE_LIBCUDA)', () => {
  let tmp: string;
  let script: string;
  const fake = () => path.join(tmp, 'libcuda-fake.so.1');
  const old = () => path.join(tmp, 'libcuda-old.so.1');

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-cuda-'));
    const src = path.join(here, 'fixtures', 'fake-libcuda.c');
    await promisify(execFile)('cc', ['-shared', '-fPIC', '-o', fake(), src]);
    await promisify(execFile)('cc', ['-shared', '-fPIC', '-DFAKE_TOO_OLD', '-o', old(), src]);
    script = path.join(tmp, 'cuda-probe.cjs');
    buildSync({ entryPoints: [path.join(here, 'fixtures', 'cuda-probe.ts')], outfile: script, bundle: true, platform: 'node', target: 'node20', format: 'cjs', external: ['*.node'], logLevel: 'warning' });
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  let runs = 0;
  const probe = async (scenario: string, env: NodeJS.ProcessEnv) => {
    const { stdout } = await promisify(execFile)(process.execPath, [script, scenario], {
      timeout: 30_000,
      env: { ...process.env, KYBERNATE_ADDON: addonPath, FAKE_CUDA_LOG: path.join(tmp, `${scenario}-${++runs}.log`), ...env },
    });
    return JSON.parse(stdout.trim().split('\n').pop()!);
  };

  it('says "driver too old" when the checkpoint symbols are missing (r550-era driver, 12.4)', async () => {
    const r = await probe('too-old', { KYBERNATE_LIBCUDA: old() });
    expect(r.version).toEqual({ ok: true, value: 12040 });
    expect(r.lock).toMatchObject({ ok: false, name: 'CudaError', code: 'KYB_ERR_CUDA_DRIVER_TOO_OLD', op: 'lock' });
    expect(r.lock.message).toBe('driver too old for process checkpoint (needs >= 570 / CUDA 12.8, have CUDA 12.4 (12040))');
    expect(r.listGpus).toMatchObject({ ok: false, code: 'KYB_ERR_CUDA_NO_DRIVER', op: 'listGpus' });
    expect(r.listGpus.message).toContain('lacks cuDeviceGetCount');
  });

  it('names a missing file in the "driver not found" error', async () => {
    const r = await probe('too-old', { KYBERNATE_LIBCUDA: path.join(tmp, 'missing.so') });
    expect(r.version).toMatchObject({ ok: false, code: 'KYB_ERR_CUDA_NO_DRIVER', op: 'driverVersion' });
    expect(r.version.message).toContain(`CUDA driver not found (${path.join(tmp, 'missing.so')}: `);
  });

  it('drives lock/checkpoint/restore/unlock with the documented struct layout and reports driver errors by name', async () => {
    const r = await probe('fake', { KYBERNATE_LIBCUDA: fake() });
    expect(r.version).toEqual({ ok: true, value: 13000 });
    expect(r.gpus).toEqual({ ok: true, value: [{ index: 0, uuid: 'GPU-00010203-0405-0607-0809-0a0b0c0d0e0f', name: 'Fake GPU', memoryBytes: 80 * 2 ** 30 }] });
    expect(r.states.map((s: { value: string }) => s.value)).toEqual(['running', 'locked', 'checkpointed', 'locked', 'running']);
    for (const k of ['lock', 'checkpoint', 'restore', 'unlock']) expect(r[k]).toEqual({ ok: true });
    expect(r.unlockRunning).toMatchObject({ ok: false, name: 'CudaError', code: 'CUDA_ERROR_ILLEGAL_STATE', cudaError: 'CUDA_ERROR_ILLEGAL_STATE', op: 'unlock', stackHasCaller: true });
    expect(r.unlockRunning.message).toMatch(/^unlock pid \d+: CUDA_ERROR_ILLEGAL_STATE \(/);
    expect(Object.keys(r.suspend.value).sort()).toEqual(['checkpointMs', 'checkpointNativeMs', 'lockMs', 'lockNativeMs', 'totalMs']);
    expect(Object.keys(r.resume.value).sort()).toEqual(['restoreMs', 'restoreNativeMs', 'totalMs', 'unlockMs', 'unlockNativeMs']);
    expect(r.restoreTid.ok).toBe(true);
    expect(r.badPair).toMatchObject({ ok: false, name: 'TypeError' });
    expect(r.noSuchPid).toMatchObject({ ok: false, code: 'ESRCH', op: 'lock' });
    // The fake read timeoutMs at +0, gpuPairs at +0 and gpuPairsCount at +8; reserved bytes were zero.
    const pid = r.log[0].match(/pid=(\d+)/)[1];
    expect(r.log.slice(0, 4)).toEqual([
      `lock pid=${pid} timeoutMs=1234 dirty=0`,
      `checkpoint pid=${pid} dirty=0`,
      `restore pid=${pid} count=1 dirty=0 pair=000102030405060708090a0b0c0d0e0f:ffeeddccbbaa99887766554433221100`,
      `unlock pid=${pid} dirty=0`,
    ]);
    expect(r.log[5]).toBe(`lock pid=${pid} timeoutMs=500 dirty=0`);
    expect(r.log[7]).toBe(`restore pid=${pid} count=0 dirty=0`);
  });

  it.skipIf(!isRoot)('refuses a stopped process or one in a frozen cgroup before calling the driver', async () => {
    const r = await probe('fake', { KYBERNATE_LIBCUDA: fake() });
    expect(r.stopped).toMatchObject({ ok: false, code: 'KYB_ERR_CUDA_FROZEN', op: 'lock' });
    expect(r.stopped.message).toContain('is stopped');
    const frozen = [r.frozenV1, r.frozenV2].filter((x) => x !== 'unavailable');
    // This CI machine has both hierarchies (cgroup v1 hybrid); at least one must have been tried.
    expect(frozen.length).toBeGreaterThan(0);
    for (const f of frozen) {
      expect(f).toMatchObject({ ok: false, code: 'KYB_ERR_CUDA_FROZEN', op: 'lock' });
      expect(f.message).toContain('frozen cgroup');
    }
    // None of the refused locks reached the driver: the only locks logged are the two deliberate ones.
    expect(r.log.filter((l: string) => l.startsWith('lock ')).length).toBe(2);
    expect(r.stateAfter).toEqual({ ok: true, value: 'running' });
  });

  it('rejects with KYB_ERR_CUDA_HUNG when the driver does not return, and keeps working', async () => {
    const r = await probe('hang', { KYBERNATE_LIBCUDA: fake(), FAKE_CUDA_HANG: 'getRestoreThreadId' });
    expect(r.hung).toMatchObject({ ok: false, code: 'KYB_ERR_CUDA_HUNG', op: 'getRestoreThreadId' });
    expect(r.after).toEqual({ ok: true, value: 'running' });
  });
});
