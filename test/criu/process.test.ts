// src/checkpoint/process: the checkpoint/restore orchestration (CUDA steps around CRIU), its rollback,
// and the manifest that marks complete images.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cudaSteps, type CudaApi } from '../../src/gpu/driver';
import { alive, checkpointProcess, MANIFEST, readManifest, restoreProcess, StepError } from '../../src/criu/process';
import { addonBuilt, dumpBroken, freePid, hasCriu, isRoot, python, startCounter, until, cleanupEachTest } from './helpers';

const lacks = !isRoot ? 'root' : !hasCriu ? 'the criu binary' : !addonBuilt ? 'a built addon (make build)' : python === undefined ? 'python3' : undefined;
const broken = lacks === undefined ? await dumpBroken() : `needs ${lacks}`;

const { defer, dir } = cleanupEachTest();

/**
 * Stands in for src/native/cuda, which needs a GPU: it records the calls so the order of the CUDA steps
 * and of their rollback can be checked on this machine. The real module is tested in test/gpu.
 */
function recordingCuda(): CudaApi & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    getRestoreThreadId: async (pid) => (calls.push(`tid ${pid}`), pid + 1),
    lock: async (pid) => void calls.push(`lock ${pid}`),
    checkpoint: async (pid) => void calls.push(`checkpoint ${pid}`),
    restore: async (pid) => void calls.push(`restore ${pid}`),
    unlock: async (pid) => void calls.push(`unlock ${pid}`),
  };
}

function writeManifest(d: string, files: Array<{ name: string; bytes: number }>, cuda = false): void {
  const m = { version: 1, pid: 1234, time: new Date().toISOString(), criuVersion: '4.1.1', cuda, leaveRunning: false, steps: [], files };
  fs.writeFileSync(path.join(d, MANIFEST), JSON.stringify(m));
}

describe('manifest', () => {
  it('refuses a directory without a manifest as half-written images', () => {
    const d = dir('nomanifest');
    fs.writeFileSync(path.join(d, 'core-1.img'), 'x');
    expect(() => readManifest(d)).toThrow(/half-written images .*no manifest\.json \(the checkpoint did not finish\); refusing to restore/);
  });

  it('refuses images whose files differ from the manifest (truncated, missing)', () => {
    const d = dir('truncated');
    fs.writeFileSync(path.join(d, 'pages-1.img'), Buffer.alloc(4096));
    writeManifest(d, [{ name: 'pages-1.img', bytes: 4096 }]);
    expect(readManifest(d).files).toHaveLength(1);
    fs.truncateSync(path.join(d, 'pages-1.img'), 100);
    expect(() => readManifest(d)).toThrow(/pages-1\.img is 100 bytes, the manifest says 4096/);
    fs.rmSync(path.join(d, 'pages-1.img'));
    expect(() => readManifest(d)).toThrow(/pages-1\.img is missing/);
    fs.writeFileSync(path.join(d, MANIFEST), '{"version": 1, "fi');
    expect(() => readManifest(d)).toThrow(/not valid JSON/);
  });

  it('restoreProcess refuses half-written images before running CRIU', async () => {
    const d = dir('refuse');
    const err = (await restoreProcess({ imagesDir: d }).catch((e: unknown) => e)) as StepError;
    expect(err).toBeInstanceOf(StepError);
    expect(err.step).toBe('check');
    expect(err.steps).toEqual([]);
    expect(err.message).toMatch(/half-written/);
  });
});

describe.skipIf(lacks !== undefined)(`checkpointProcess${lacks ? ` (skipped: needs ${lacks})` : ''}`, () => {
  it('refuses a pid that does not exist', async () => {
    const pid = await freePid();
    const err = (await checkpointProcess({ pid, imagesDir: dir('nopid') }).catch((e: unknown) => e)) as StepError;
    expect(err).toBeInstanceOf(StepError);
    expect(err.step).toBe('check');
    expect(err.message).toBe(`no such process: ${pid}`);
  });

  it('refuses an images directory that is not empty', async () => {
    const d = dir('notempty');
    fs.writeFileSync(path.join(d, 'pages-1.img'), 'old');
    const err = (await checkpointProcess({ pid: process.pid, imagesDir: d }).catch((e: unknown) => e)) as StepError;
    expect(err.step).toBe('check');
    expect(err.message).toBe(`images directory ${d}: not empty (pages-1.img); use a new directory`);
  });

  it('takes the non-CUDA path when the CUDA driver is missing', async () => {
    const steps = await cudaSteps(process.pid, undefined, []);
    expect(steps.active).toBe(false);
    expect(steps.skipped).toBe('CUDA driver not found');
  });

  it('rolls the CUDA steps back when the CRIU dump fails, and the process keeps running', async () => {
    const d = dir('rollback');
    const c = await startCounter(d);
    defer(() => c.stop());
    const cuda = recordingCuda();
    // 1 ms is shorter than criu's own start-up: the dump step fails on every machine.
    const err = (await checkpointProcess({ pid: c.pid, imagesDir: path.join(d, 'img'), cuda, criuTimeoutMs: 1 })
      .catch((e: unknown) => e)) as StepError;
    expect(err).toBeInstanceOf(StepError);
    expect(err.step).toBe('criu-dump');
    expect(err.processRunning).toBe(true);
    expect(err.message).toMatch(/^criu-dump failed for pid \d+: .*; the process keeps running$/);
    expect(err.steps.map((s) => s.step)).toEqual(['cuda-lock', 'cuda-checkpoint']);
    expect(cuda.calls).toEqual([`tid ${c.pid}`, `lock ${c.pid}`, `checkpoint ${c.pid}`, `restore ${c.pid}`, `unlock ${c.pid}`]);
    expect(fs.existsSync(path.join(d, 'img', MANIFEST))).toBe(false);
    const v = c.read();
    await until(() => c.read() > v + 2);
  });

  it('unlocks when the CUDA checkpoint step fails', async () => {
    const d = dir('cudafail');
    const c = await startCounter(d);
    defer(() => c.stop());
    const cuda = recordingCuda();
    cuda.checkpoint = async () => {
      cuda.calls.push('checkpoint failed');
      throw Object.assign(new Error('CUDA_ERROR_ILLEGAL_STATE'), { code: 'KYB_ERR_CUDA' });
    };
    const err = (await checkpointProcess({ pid: c.pid, imagesDir: path.join(d, 'img'), cuda }).catch((e: unknown) => e)) as StepError;
    expect(err.step).toBe('cuda-checkpoint');
    expect(err.message).toContain('the process keeps running');
    expect(cuda.calls).toEqual([`tid ${c.pid}`, `lock ${c.pid}`, 'checkpoint failed', `unlock ${c.pid}`]);
  });

  describe.skipIf(broken !== undefined)(`with a working CRIU dump${broken ? ` (skipped: ${broken})` : ''}`, () => {
    it('checkpoints a counter tree and restores it from the manifest; the count continues', async () => {
      const d = dir('full');
      const images = path.join(d, 'img');
      const c = await startCounter(d);
      defer(() => c.stop());
      await until(() => c.read() > 5);
      const r = await checkpointProcess({ pid: c.pid, imagesDir: images, cuda: null });
      expect(r.cuda).toBe(false);
      expect(r.steps.map((s) => s.step)).toEqual(['criu-dump', 'manifest']);
      expect(r.bytes).toBeGreaterThan(0);
      const m = readManifest(images);
      expect(m.pid).toBe(c.pid);
      expect(m.files.reduce((n, f) => n + f.bytes, 0)).toBe(r.bytes);
      await until(() => !alive(c.pid));
      const dumped = c.read();
      const back = await restoreProcess({ imagesDir: images, cuda: null });
      expect(back.pid).toBe(c.pid);
      await until(() => c.read() > dumped + 3);
    });

    it('leaves the process running with leaveRunning and runs the CUDA resume steps', async () => {
      const d = dir('leave');
      const c = await startCounter(d);
      defer(() => c.stop());
      const cuda = recordingCuda();
      const r = await checkpointProcess({ pid: c.pid, imagesDir: path.join(d, 'img'), leaveRunning: true, cuda });
      expect(r.steps.map((s) => s.step)).toEqual(['cuda-lock', 'cuda-checkpoint', 'criu-dump', 'cuda-restore', 'cuda-unlock', 'manifest']);
      const v = c.read();
      await until(() => c.read() > v + 2);
    });
  });
});
