// src/criu/process: the CLI's process-tree checkpoint and restore, a thin caller of the GPU engine
// (src/gpu/engine) and the snapshot store (src/snapshot/store). Checked here: restore refuses anything
// but a complete, matching process snapshot before CRIU runs; the per-process CUDA steps (lock all, then
// checkpoint all; restore all, then unlock all) and the engine's rollback; the frozen-process rule; a
// failed checkpoint leaves no snapshot; real CRIU round trips of a counter tree.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';

// The real libcriu calls, wrapped so a test can tell whether (and with what) CRIU was asked to run.
vi.mock('../../src/native/criu', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../../src/native/criu')>();
  return { ...actual, dump: vi.fn(actual.dump), restore: vi.fn(actual.restore) };
});

import * as criu from '../../src/native/criu';
import { checkRunnable } from '../../src/native/cuda';
import { KybernateError } from '../../src/errors';
import { findCudaProcesses, type CudaApi } from '../../src/gpu/engine';
import { nvidiaDriverVersion } from '../../src/host/facts';
import {
  INCOMPLETE_FILE, MANIFEST_FILE, readManifest, snapshotId, writeManifest, type ProcessManifest, type ProcessManifestInput,
} from '../../src/snapshot/manifest';
import { LocalDirectoryStore, type SnapshotStore } from '../../src/snapshot/store';
import { VERSION } from '../../src/version';
import {
  alive, checkpointProcess, MANIFEST, restoreProcess, StepError, treePids, type Step,
} from '../../src/criu/process';
import {
  addonBuilt, cleanupEachTest, dumpBroken, freePid, hasCriu, isRoot, killTree, python, startCounter, until, type Counter,
} from './helpers';

const lacks = !isRoot ? 'root' : !hasCriu ? 'the criu binary' : !addonBuilt ? 'a built addon (make build)' : python === undefined ? 'python3' : undefined;
const broken = lacks === undefined ? await dumpBroken() : `needs ${lacks}`;
const hostDriver = nvidiaDriverVersion();

const { defer, dir } = cleanupEachTest();
const dump = vi.mocked(criu.dump);
const restore = vi.mocked(criu.restore);

beforeEach(() => {
  dump.mockClear();
  restore.mockClear();
});

type Op = 'lock' | 'checkpoint' | 'restore' | 'unlock';

/**
 * Stands in for src/native/cuda on a machine without a GPU: every call first runs the addon's own
 * up-front check (a stopped or frozen target is refused with KYB_ERR_CUDA_FROZEN, a gone one with
 * ESRCH), as the real module does, then records itself. `fail` makes one call reject for one pid.
 */
function recordingCuda(fail: Partial<Record<Op, number>> = {}): CudaApi & { calls: string[] } {
  const calls: string[] = [];
  const op = (name: Op) => async (pid: number): Promise<void> => {
    checkRunnable(pid);
    if (fail[name] === pid) {
      calls.push(`${name} ${pid} failed`);
      throw Object.assign(new Error(`cuCheckpointProcess ${name} of ${pid}: CUDA_ERROR_ILLEGAL_STATE`), { code: 'KYB_ERR_CUDA' });
    }
    calls.push(`${name} ${pid}`);
  };
  return {
    calls,
    getRestoreThreadId: async (pid) => {
      checkRunnable(pid);
      calls.push(`tid ${pid}`);
      return pid;
    },
    lock: (pid) => op('lock')(pid),
    checkpoint: op('checkpoint'),
    restore: op('restore'),
    unlock: op('unlock'),
  };
}

/** "<step>" or "<step>:<pid>" for a per-process step, as the manifest records them. */
const tags = (steps: readonly Step[]) => steps.map((s) => (s.pid === undefined ? s.step : `${s.step}:${s.pid}`));

/** The local store, except that open() is told this node has CUDA driver `driver` (this machine has none). */
function storeWithDriver(driver: string): SnapshotStore {
  const local = new LocalDirectoryStore();
  return { begin: (ref, owner) => local.begin(ref, owner), open: (ref, expect) => local.open(ref, { ...expect, driverVersion: driver }) };
}

function processInput(over: Partial<ProcessManifestInput> = {}): ProcessManifestInput {
  return {
    kind: 'process',
    process: { pid: 4242, leaveRunning: false },
    versions: { criu: '4.0.0', kernel: os.release(), shim: VERSION },
    gpus: [],
    cuda: { pids: [], deviceMemoryBytes: 0 },
    options: {},
    steps: [{ step: 'criu-dump', ms: 1 }],
    ...over,
  };
}

/** A complete process snapshot of made-up images in `d` (core-1.img: 3000 random bytes, pages-1.img: 8192). */
async function fakeSnapshot(d: string, over: Partial<ProcessManifestInput> = {}): Promise<ProcessManifest> {
  fs.writeFileSync(path.join(d, 'core-1.img'), crypto.randomBytes(3000));
  fs.writeFileSync(path.join(d, 'pages-1.img'), crypto.randomBytes(8192));
  return (await writeManifest(d, processInput(over))) as ProcessManifest;
}

/** restoreProcess's rejection, checked to be a refusal at the check step, with CRIU never called. */
async function refused(opts: Parameters<typeof restoreProcess>[0]): Promise<StepError> {
  const err = await restoreProcess(opts).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(StepError);
  const e = err as StepError;
  expect(e.step).toBe('check');
  expect(e.steps).toEqual([]);
  expect(e.processRunning).toBe(false);
  expect(restore).not.toHaveBeenCalled();
  return e;
}

async function failure(p: Promise<unknown>): Promise<StepError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(StepError);
  return err as StepError;
}

/** A started counter tree (python parent writing the count + a sleeping child), killed after the test. */
async function counter(d: string): Promise<Counter & { child: number }> {
  const c = await startCounter(d);
  defer(() => c.stop());
  await until(() => treePids(c.pid).length === 2);
  const [root, child] = treePids(c.pid);
  expect(root).toBe(c.pid);
  return { ...c, child };
}

/** Waits until the counter counts on (by more than 2 from now). */
async function counts(c: Counter): Promise<void> {
  const v = c.read();
  await until(() => c.read() > v + 2);
}

const procState = (pid: number): string => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat[stat.lastIndexOf(')') + 2];
};
/** The pid has no process, not even a zombie: CRIU may restore into it. */
const pidFree = (pid: number) => !fs.existsSync(`/proc/${pid}`);

/** The local store, except that writing the manifest fails as on a full disk (the images are written). */
function manifestENOSPC(): SnapshotStore {
  const local = new LocalDirectoryStore();
  return {
    begin: async (ref, owner) => {
      const w = await local.begin(ref, owner);
      return { dir: w.dir, abort: () => w.abort(), commit: async () => { throw new Error('ENOSPC: no space left on device, write'); } };
    },
    open: (ref, expect) => local.open(ref, expect),
  };
}

describe('restoreProcess refuses what is not a complete, matching process snapshot, before CRIU runs', () => {
  it('uses the container path\'s manifest file', () => {
    expect(MANIFEST).toBe('kybernate-manifest.json');
    expect(MANIFEST).toBe(MANIFEST_FILE);
  });

  it('a directory without kybernate-manifest.json (images only, or the old manifest.json format)', async () => {
    const d = dir('nomanifest');
    fs.writeFileSync(path.join(d, 'core-1.img'), 'x');
    fs.writeFileSync(path.join(d, 'manifest.json'), JSON.stringify({ version: 1, pid: 1234, files: [{ name: 'core-1.img', bytes: 1 }] }));
    const err = await refused({ imagesDir: d });
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toBe(`checkpoint ${d} has no kybernate-manifest.json: the checkpoint is incomplete or was not made by kybernate`);
    expect(KybernateError.is(err.cause)).toBe(true);
  });

  it('a directory that does not exist', async () => {
    const d = path.join(dir('gone'), 'nothing-here');
    const err = await refused({ imagesDir: d });
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toBe(`checkpoint ${d}: not found`);
  });

  it('a directory still marked incomplete, even when everything else in it looks complete', async () => {
    const d = dir('incomplete');
    // What a checkpoint cut short after its manifest was written but before the marker went leaves.
    const writer = await new LocalDirectoryStore().begin(d, { container: 'pid 4242', namespace: '' });
    await fakeSnapshot(d);
    expect(fs.existsSync(path.join(d, INCOMPLETE_FILE))).toBe(true);
    expect(fs.existsSync(path.join(d, MANIFEST_FILE))).toBe(true);
    const err = await refused({ imagesDir: d });
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toMatch(new RegExp(`^checkpoint ${d} is incomplete: the checkpoint that wrote it failed or was cut short ` +
      `\\(container pid 4242, started \\S+ by shim pid ${process.pid}\\); take a new checkpoint$`));
    await writer.abort();
  });

  it('a truncated file, then a missing one', async () => {
    const d = dir('truncated');
    await fakeSnapshot(d);
    fs.truncateSync(path.join(d, 'pages-1.img'), 100);
    let err = await refused({ imagesDir: d });
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toBe(`checkpoint ${d}: pages-1.img is truncated: the manifest says 8192 bytes, the file has 100`);
    fs.rmSync(path.join(d, 'pages-1.img'));
    err = await refused({ imagesDir: d });
    expect(err.message).toBe(`checkpoint ${d}: pages-1.img is listed in the manifest but missing`);
  });

  it('a file modified in place (same size): every byte is read against its sha256', async () => {
    const d = dir('modified');
    const m = await fakeSnapshot(d);
    const file = path.join(d, 'core-1.img');
    const bytes = fs.readFileSync(file);
    bytes[1500] ^= 0xff;
    fs.writeFileSync(file, bytes);
    const now = crypto.createHash('sha256').update(bytes).digest('hex');
    const listed = m.files.find((f) => f.name === 'core-1.img')!.sha256;
    expect(now).not.toBe(listed);
    const err = await refused({ imagesDir: d });
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toBe(`checkpoint ${d}: core-1.img is corrupt: its sha256 is ${now}, the manifest says ${listed}`);
  });

  it('an image file the manifest does not list, and a manifest cut short', async () => {
    const d = dir('extra');
    await fakeSnapshot(d);
    fs.writeFileSync(path.join(d, 'pages-2.img'), 'late');
    let err = await refused({ imagesDir: d });
    expect(err.message).toBe(`checkpoint ${d}: image file pages-2.img is not in the manifest (written after it, or by something else)`);
    fs.rmSync(path.join(d, 'pages-2.img'));
    const text = fs.readFileSync(path.join(d, MANIFEST_FILE), 'utf8');
    fs.writeFileSync(path.join(d, MANIFEST_FILE), text.slice(0, 40));
    err = await refused({ imagesDir: d });
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toMatch(new RegExp(`^checkpoint ${d}: kybernate-manifest\\.json is not valid JSON \\(truncated\\?\\): `));
  });

  it('a container\'s snapshot, with a message that says where it belongs', async () => {
    const d = dir('container');
    fs.writeFileSync(path.join(d, 'core-1.img'), 'x');
    await writeManifest(d, {
      container: { id: 'web-1', namespace: 'k8s.io' },
      spec: { digest: `sha256:${'0'.repeat(64)}` },
      versions: { criu: '4.0.0', runc: '1.2.0', kernel: os.release(), shim: VERSION },
      gpus: [], cuda: { pids: [], deviceMemoryBytes: 0 }, options: {}, steps: [],
    });
    expect((await readManifest(d)).kind).toBe('container');
    const err = await refused({ imagesDir: d });
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toBe(`checkpoint ${d} is a container's (web-1): restore it through containerd`);
  });

  it.skipIf(hostDriver !== undefined)('a snapshot with CUDA processes on a node without the CUDA driver', async () => {
    const d = dir('cudanode');
    await fakeSnapshot(d, {
      versions: { criu: '4.0.0', kernel: os.release(), shim: VERSION, driver: '580.65.06' },
      cuda: { pids: [4242, 4243], deviceMemoryBytes: 0 },
    });
    const err = await refused({ imagesDir: d });
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INCOMPATIBLE');
    expect(err.message).toBe(`checkpoint ${d} holds CUDA processes (pids 4242, 4243; driver 580.65.06), but this node has no CUDA driver`);
    // The same snapshot on a node with another major version of the driver.
    const other = await refused({ imagesDir: d, store: storeWithDriver('570.10') });
    expect(other.message).toBe(`checkpoint ${d} was made with CUDA driver 580.65.06; this node has 570.10, restore needs the same major version (580)`);
  });

  describe.skipIf(lacks !== undefined)(`with CRIU${lacks ? ` (skipped: needs ${lacks})` : ''}`, () => {
    it('a snapshot dumped by a newer CRIU than this node\'s', async () => {
      const here = criu.formatVersion(await criu.version());
      const d = dir('newcriu');
      await fakeSnapshot(d, { versions: { criu: '99.0.0', kernel: os.release(), shim: VERSION } });
      const err = await refused({ imagesDir: d });
      expect(err.code).toBe('KYB_ERR_CHECKPOINT_INCOMPATIBLE');
      expect(err.message).toBe(`checkpoint ${d} was dumped by CRIU 99.0.0; this node has CRIU ${here}, restore needs 99.0.0 or newer`);
    });

    it('passes an intact snapshot on to CRIU, with the CRIU flags the dump recorded (the caller\'s set ones win)', async () => {
      const d = dir('intact');
      await fakeSnapshot(d, { options: { shellJob: true, fileLocks: true, extUnixSk: true } });
      // The CLI passes every flag, undefined where not given; extUnixSk: false is set on purpose.
      const err = await failure(restoreProcess({
        imagesDir: d, shellJob: undefined, fileLocks: undefined, extUnixSk: false, tcpEstablished: undefined,
      }));
      // The made-up images get as far as CRIU, which cannot restore them.
      expect(err.step).toBe('criu-restore');
      expect(err.message).toMatch(/^criu-restore failed: /);
      expect(err.pid).toBe(4242);
      expect(err.processRunning).toBe(false);
      expect(restore).toHaveBeenCalledTimes(1);
      expect(restore.mock.calls[0][0]).toMatchObject({ imagesDir: d, shellJob: true, fileLocks: true, extUnixSk: false });
      expect(restore.mock.calls[0][0].tcpEstablished).toBeUndefined();
    });
  });
});

describe('findCudaProcesses, as the process path asks it', () => {
  it('skips every pid of the tree, with the reason, when CUDA is disabled', async () => {
    const pids = treePids(process.pid);
    expect(pids[0]).toBe(process.pid);
    expect(await findCudaProcesses(pids, null)).toEqual({ cuda: [], skipped: pids.map((pid) => ({ pid, why: 'CUDA disabled' })) });
  });

  it.skipIf(hostDriver !== undefined || !addonBuilt)('skips every pid, saying so, on a machine without the CUDA driver', async () => {
    const found = await findCudaProcesses([process.pid]);
    expect(found.cuda).toEqual([]);
    expect(found.skipped).toHaveLength(1);
    expect(found.skipped[0].pid).toBe(process.pid);
    expect(found.skipped[0].why).toMatch(/^CUDA driver not found \(/);
  });
});

describe('checkpointProcess: arguments', () => {
  it('rejects a pid that is not a positive integer', async () => {
    for (const pid of [0, -1, 1.5, Number.NaN]) {
      await expect(checkpointProcess({ pid, imagesDir: dir('badpid') })).rejects.toThrow(new TypeError('pid must be a positive integer'));
    }
  });

  it('refuses a pid that does not exist, before creating anything', async () => {
    const pid = await freePid();
    const images = path.join(dir('nopid'), 'img');
    const err = await failure(checkpointProcess({ pid, imagesDir: images, cuda: recordingCuda() }));
    expect(err.step).toBe('check');
    expect(err.message).toBe(`no such process: ${pid}`);
    expect(err.processRunning).toBe(false);
    expect(fs.existsSync(images)).toBe(false);
  });

  it('refuses an images directory that is not empty and leaves what is there alone', async () => {
    const d = dir('notempty');
    fs.writeFileSync(path.join(d, 'pages-1.img'), 'old');
    const cuda = recordingCuda();
    const err = await failure(checkpointProcess({ pid: process.pid, imagesDir: d, cuda }));
    expect(err.step).toBe('check');
    expect(err.message).toBe(`images directory ${d}: not empty (pages-1.img); use a new directory`);
    expect(err.processRunning).toBe(true);
    expect(fs.readdirSync(d)).toEqual(['pages-1.img']);
    expect(fs.readFileSync(path.join(d, 'pages-1.img'), 'utf8')).toBe('old');
    expect(cuda.calls).toEqual([]);
    expect(dump).not.toHaveBeenCalled();
  });

  it('says at the check step when the store cannot start a snapshot, before any CUDA call', async () => {
    const d = dir('nostore');
    const cuda = recordingCuda();
    const store: SnapshotStore = {
      begin: async () => { throw new KybernateError('KYB_ERR_CHECKPOINT_FAILED', `checkpoint ${d}: cannot prepare it: EROFS`); },
      open: async () => { throw new Error('not used'); },
    };
    const err = await failure(checkpointProcess({ pid: process.pid, imagesDir: d, cuda, store }));
    expect(err.step).toBe('check');
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_FAILED');
    expect(err.message).toBe(`images directory ${d}: checkpoint ${d}: cannot prepare it: EROFS`);
    expect(cuda.calls).toEqual([]);
    expect(dump).not.toHaveBeenCalled();
  });
});

describe.skipIf(lacks !== undefined)(`checkpointProcess: CUDA steps and their rollback${lacks ? ` (skipped: needs ${lacks})` : ''}`, () => {
  it('refuses a tree with a stopped process when CUDA is there, touches nothing, and the tree runs on', async () => {
    const d = dir('frozen');
    const c = await counter(d);
    process.kill(c.child, 'SIGSTOP');
    await until(() => procState(c.child) === 'T');
    const cuda = recordingCuda();
    const images = path.join(d, 'img');
    const err = await failure(checkpointProcess({ pid: c.pid, imagesDir: images, cuda }));
    expect(err.step).toBe('check');
    expect(err.code).toBe('KYB_ERR_FAILED_PRECONDITION');
    expect(err.processRunning).toBe(true);
    expect(err.message).toMatch(new RegExp(`^check failed for pid ${c.pid}: cannot tell whether pid ${c.child} has CUDA state: ` +
      `.*process ${c.child} is stopped \\(SIGSTOP or ptrace\\).*; the process keeps running$`));
    // Asked, never locked; CRIU never ran; no snapshot was left.
    expect(cuda.calls).toEqual([`tid ${c.pid}`]);
    expect(dump).not.toHaveBeenCalled();
    expect(fs.readdirSync(images)).toEqual([]);
    // Nothing was thawed behind the caller's back, and the root counts on.
    expect(procState(c.child)).toBe('T');
    await counts(c);
  });

  it('refuses the tree when the driver does not answer for a process (KYB_ERR_CUDA_HUNG)', async () => {
    const d = dir('hung');
    const c = await counter(d);
    const cuda = recordingCuda();
    cuda.getRestoreThreadId = async (pid) => {
      throw Object.assign(new Error(`getRestoreThreadId ${pid}: the driver did not return within 60000 ms`), { code: 'KYB_ERR_CUDA_HUNG' });
    };
    const err = await failure(checkpointProcess({ pid: c.pid, imagesDir: path.join(d, 'img'), cuda }));
    expect(err.step).toBe('check');
    expect(err.code).toBe('KYB_ERR_FAILED_PRECONDITION');
    expect(err.message).toBe(`check failed for pid ${c.pid}: cannot tell whether pid ${c.pid} has CUDA state: ` +
      `getRestoreThreadId ${c.pid}: the driver did not return within 60000 ms; the process keeps running`);
    expect(cuda.calls).toEqual([]);
    expect(dump).not.toHaveBeenCalled();
    await counts(c);
  });

  it('locks every process, then checkpoints every one; when the CRIU dump fails, restores and unlocks all; no snapshot is left', async () => {
    const d = dir('rollback');
    const c = await counter(d);
    const cuda = recordingCuda();
    const images = path.join(d, 'img');
    // 1 ms is shorter than criu's own start-up: the dump step fails on every machine.
    const err = await failure(checkpointProcess({ pid: c.pid, imagesDir: images, cuda, criuTimeoutMs: 1 }));
    expect(err.step).toBe('criu-dump');
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_FAILED');
    expect(err.pid).toBe(c.pid);
    expect(err.processRunning).toBe(true);
    expect(err.rollbackErrors).toEqual([]);
    expect(err.message).toMatch(new RegExp(`^criu-dump failed for pid ${c.pid}: .*; the process keeps running$`));
    expect(tags(err.steps)).toEqual([`cuda-lock:${c.pid}`, `cuda-lock:${c.child}`, `cuda-checkpoint:${c.pid}`, `cuda-checkpoint:${c.child}`]);
    expect(cuda.calls).toEqual([
      `tid ${c.pid}`, `tid ${c.child}`,
      `lock ${c.pid}`, `lock ${c.child}`, `checkpoint ${c.pid}`, `checkpoint ${c.child}`,
      `restore ${c.pid}`, `restore ${c.child}`, `unlock ${c.pid}`, `unlock ${c.child}`,
    ]);
    expect(dump).toHaveBeenCalledTimes(1);
    expect(dump.mock.calls[0][0]).toMatchObject({ pid: c.pid, imagesDir: images, leaveRunning: false, timeoutMs: 1 });
    // No manifest, no marker, nothing CRIU wrote.
    expect(fs.readdirSync(images)).toEqual([]);
    await counts(c);
  });

  it('says which rollback step failed too', async () => {
    const d = dir('rollbackfail');
    const c = await counter(d);
    const cuda = recordingCuda({ restore: c.child });
    const err = await failure(checkpointProcess({ pid: c.pid, imagesDir: path.join(d, 'img'), cuda, criuTimeoutMs: 1 }));
    expect(err.step).toBe('criu-dump');
    const why = `cuda-restore pid ${c.child}: cuCheckpointProcess restore of ${c.child}: CUDA_ERROR_ILLEGAL_STATE`;
    expect(err.rollbackErrors).toEqual([why]);
    expect(err.message).toMatch(new RegExp(`; the process keeps running \\(rollback failed: ${why}\\)$`));
    // A process whose GPU state could not be restored is not unlocked (that would fail anyway).
    expect(cuda.calls.slice(6)).toEqual([`restore ${c.pid}`, `restore ${c.child} failed`, `unlock ${c.pid}`]);
    expect(fs.readdirSync(path.join(d, 'img'))).toEqual([]);
    await counts(c);
  });

  it('when one lock fails, checkpoints nothing, unlocks the others and names the process that failed', async () => {
    const d = dir('lockfail');
    const c = await counter(d);
    const cuda = recordingCuda({ lock: c.child });
    const err = await failure(checkpointProcess({ pid: c.pid, imagesDir: path.join(d, 'img'), cuda }));
    expect(err.step).toBe('cuda-lock');
    expect(err.pid).toBe(c.pid);
    expect(err.processRunning).toBe(true);
    expect(err.message).toBe(`cuda-lock failed for pid ${c.child} (of the tree of pid ${c.pid}): ` +
      `cuCheckpointProcess lock of ${c.child}: CUDA_ERROR_ILLEGAL_STATE; the process keeps running`);
    expect(tags(err.steps)).toEqual([`cuda-lock:${c.pid}`]);
    expect(cuda.calls).toEqual([`tid ${c.pid}`, `tid ${c.child}`, `lock ${c.pid}`, `lock ${c.child} failed`, `unlock ${c.pid}`]);
    expect(dump).not.toHaveBeenCalled();
    expect(fs.readdirSync(path.join(d, 'img'))).toEqual([]);
    await counts(c);
  });

  it('when one CUDA checkpoint fails, restores the checkpointed ones and unlocks every process', async () => {
    const d = dir('cudafail');
    const c = await counter(d);
    const cuda = recordingCuda({ checkpoint: c.child });
    const err = await failure(checkpointProcess({ pid: c.pid, imagesDir: path.join(d, 'img'), cuda }));
    expect(err.step).toBe('cuda-checkpoint');
    expect(err.message).toBe(`cuda-checkpoint failed for pid ${c.child} (of the tree of pid ${c.pid}): ` +
      `cuCheckpointProcess checkpoint of ${c.child}: CUDA_ERROR_ILLEGAL_STATE; the process keeps running`);
    expect(tags(err.steps)).toEqual([`cuda-lock:${c.pid}`, `cuda-lock:${c.child}`, `cuda-checkpoint:${c.pid}`]);
    expect(cuda.calls).toEqual([
      `tid ${c.pid}`, `tid ${c.child}`, `lock ${c.pid}`, `lock ${c.child}`, `checkpoint ${c.pid}`, `checkpoint ${c.child} failed`,
      `restore ${c.pid}`, `unlock ${c.pid}`, `unlock ${c.child}`,
    ]);
    expect(dump).not.toHaveBeenCalled();
    expect(fs.readdirSync(path.join(d, 'img'))).toEqual([]);
    await counts(c);
  });
});

describe.skipIf(broken !== undefined)(`checkpointProcess and restoreProcess with a working CRIU dump${broken ? ` (skipped: ${broken})` : ''}`, () => {
  it('checkpoints a counter tree into a verified process snapshot and restores it (relative path); the count continues', async () => {
    const d = dir('full');
    const images = path.join(d, 'img');
    const c = await counter(d);
    await until(() => c.read() > 5);
    const r = await checkpointProcess({ pid: c.pid, imagesDir: images, cuda: null });
    expect(r.pid).toBe(c.pid);
    expect(r.imagesDir).toBe(images);
    expect(r.cuda).toBe(false);
    expect(r.cudaSkipped).toBe('CUDA disabled');
    expect(r.steps.map((s) => s.step)).toEqual(['criu-dump', 'manifest']);
    expect(r.steps.every((s) => s.pid === undefined && s.ms >= 0)).toBe(true);

    const m = await readManifest(images);
    expect(m.kind).toBe('process');
    if (m.kind !== 'process') return;
    expect(r.snapshot.manifest).toEqual(m);
    expect(r.snapshot.dir).toBe(images);
    expect(r.snapshot.id).toBe(snapshotId(fs.readFileSync(path.join(images, MANIFEST_FILE))));
    expect(m.process).toEqual({ pid: c.pid, leaveRunning: false });
    expect(m.cuda).toEqual({ pids: [], deviceMemoryBytes: 0 });
    expect(m.gpus).toEqual([]);
    expect(m.options).toEqual({});
    expect(m.versions).toEqual({ criu: criu.formatVersion(await criu.version()), kernel: os.release(), shim: VERSION });
    // The manifest lists exactly what is in the directory (no marker left), sizes as on disk.
    expect(fs.readdirSync(images).sort()).toEqual([...m.files.map((f) => f.name), MANIFEST_FILE].sort());
    for (const f of m.files) expect(fs.statSync(path.join(images, f.name)).size).toBe(f.size);
    const imgBytes = m.files.filter((f) => f.name.endsWith('.img')).reduce((n, f) => n + f.size, 0);
    expect(imgBytes).toBeGreaterThan(0);
    expect(r.bytes).toBe(imgBytes);
    expect(r.steps[0].bytes).toBe(imgBytes);
    expect(r.steps[1].bytes).toBe(m.files.reduce((n, f) => n + f.size, 0));
    expect(m.steps).toEqual([{ step: 'criu-dump', ms: expect.any(Number), bytes: imgBytes }]);
    await r.snapshot.verify();

    await until(() => !alive(c.pid) && pidFree(c.pid) && pidFree(c.child));
    const dumped = c.read();
    const back = await restoreProcess({ imagesDir: path.relative(process.cwd(), images), cuda: null });
    expect(back.pid).toBe(c.pid);
    expect(back.cuda).toBe(false);
    expect(back.steps.map((s) => s.step)).toEqual(['criu-restore']);
    expect(restore).toHaveBeenCalledTimes(1);
    expect(restore.mock.calls[0][0].imagesDir).toBe(images);
    expect(treePids(c.pid)).toEqual([c.pid, c.child]);
    await until(() => c.read() > dumped + 3);
  });

  it('with leaveRunning and the CUDA module of this machine: the tree runs on, the GPU steps are skipped with the reason (relative path)', async () => {
    const d = dir('leave');
    const c = await counter(d);
    const rel = path.relative(process.cwd(), path.join(d, 'img'));
    expect(path.isAbsolute(rel)).toBe(false);
    const r = await checkpointProcess({ pid: c.pid, imagesDir: rel, leaveRunning: true, fileLocks: true });
    expect(r.imagesDir).toBe(path.join(d, 'img'));
    expect(r.cuda).toBe(false);
    if (hostDriver === undefined) expect(r.cudaSkipped).toMatch(/^(CUDA driver not found \(|CUDA support not built \()/);
    expect(r.steps.map((s) => s.step)).toEqual(['criu-dump', 'manifest']);
    const m = await readManifest(path.join(d, 'img'));
    expect(m.kind === 'process' && m.process).toEqual({ pid: c.pid, leaveRunning: true });
    expect(m.options).toEqual({ fileLocks: true });
    expect(alive(c.pid)).toBe(true);
    await counts(c);
  });

  it('with leaveRunning and CUDA state: lock, checkpoint, dump, restore, unlock per process; restore resumes every process after CRIU', async () => {
    const d = dir('cuda');
    const images = path.join(d, 'img');
    const c = await counter(d);
    const cuda = recordingCuda();
    const r = await checkpointProcess({ pid: c.pid, imagesDir: images, leaveRunning: true, cuda });
    expect(r.cuda).toBe(true);
    expect(r.cudaSkipped).toBeUndefined();
    const expected = [
      `cuda-lock:${c.pid}`, `cuda-lock:${c.child}`, `cuda-checkpoint:${c.pid}`, `cuda-checkpoint:${c.child}`, 'criu-dump',
      `cuda-restore:${c.pid}`, `cuda-restore:${c.child}`, `cuda-unlock:${c.pid}`, `cuda-unlock:${c.child}`,
    ];
    expect(tags(r.steps)).toEqual([...expected, 'manifest']);
    expect(cuda.calls).toEqual([
      `tid ${c.pid}`, `tid ${c.child}`, `lock ${c.pid}`, `lock ${c.child}`, `checkpoint ${c.pid}`, `checkpoint ${c.child}`,
      `restore ${c.pid}`, `restore ${c.child}`, `unlock ${c.pid}`, `unlock ${c.child}`,
    ]);
    const m = await readManifest(images);
    expect(m.cuda.pids).toEqual([c.pid, c.child]);
    expect(m.versions.driver).toBe(hostDriver ?? 'unknown');
    expect(m.steps.map((s) => s.step)).toEqual(expected);
    await counts(c);

    // Restore: CRIU first, then restore all, then unlock all, for the pids the manifest recorded.
    killTree(c.pid);
    await until(() => pidFree(c.pid) && pidFree(c.child));
    const atRestore = recordingCuda();
    const back = await restoreProcess({ imagesDir: images, cuda: atRestore, store: storeWithDriver(m.versions.driver!) });
    expect(back.pid).toBe(c.pid);
    expect(back.cuda).toBe(true);
    expect(tags(back.steps)).toEqual(['criu-restore', `cuda-restore:${c.pid}`, `cuda-restore:${c.child}`, `cuda-unlock:${c.pid}`, `cuda-unlock:${c.child}`]);
    expect(atRestore.calls).toEqual([`restore ${c.pid}`, `restore ${c.child}`, `unlock ${c.pid}`, `unlock ${c.child}`]);
    await counts(c);
  });

  it('a restored tree whose GPU state cannot be restored runs on, and the error says so', async () => {
    const d = dir('cudarestorefail');
    const images = path.join(d, 'img');
    const c = await counter(d);
    await checkpointProcess({ pid: c.pid, imagesDir: images, cuda: recordingCuda() });
    await until(() => pidFree(c.pid) && pidFree(c.child));
    const driver = (await readManifest(images)).versions.driver!;
    const cuda = recordingCuda({ restore: c.child });
    const err = await failure(restoreProcess({ imagesDir: images, cuda, store: storeWithDriver(driver) }));
    expect(err.step).toBe('cuda-restore');
    expect(err.code).toBe('KYB_ERR_RESTORE_FAILED');
    expect(err.pid).toBe(c.pid);
    expect(err.processRunning).toBe(true);
    expect(err.message).toMatch(new RegExp(`^cuda-restore failed for restored pid ${c.pid}: .*cuda-restore failed for pid ${c.child}: ` +
      `.*CUDA_ERROR_ILLEGAL_STATE; pid ${c.child} not resumed; the other processes run again; the process runs but its GPU state is not restored`));
    expect(tags(err.steps)).toEqual(['criu-restore', `cuda-restore:${c.pid}`, `cuda-unlock:${c.pid}`]);
    expect(cuda.calls).toEqual([`restore ${c.pid}`, `restore ${c.child} failed`, `unlock ${c.pid}`]);
    await counts(c);
  });

  it('a failure after a leaveRunning dump removes what the checkpoint wrote; the tree runs on', async () => {
    const d = dir('leavefail');
    const images = path.join(d, 'img');
    const c = await counter(d);
    const store = manifestENOSPC();
    const err = await failure(checkpointProcess({ pid: c.pid, imagesDir: images, leaveRunning: true, cuda: null, store }));
    expect(dump).toHaveBeenCalledTimes(1);
    expect(err.step).toBe('manifest');
    expect(err.processRunning).toBe(true);
    expect(err.message).toBe(`manifest failed for pid ${c.pid}: ENOSPC: no space left on device, write; the process keeps running`);
    expect(tags(err.steps)).toEqual(['criu-dump']);
    expect(fs.readdirSync(images)).toEqual([]);
    await counts(c);
  });

  it('a failure after the dump ended the tree keeps its images (marked incomplete): restore refuses them, CRIU can still use them', async () => {
    const d = dir('keep');
    const images = path.join(d, 'img');
    const c = await counter(d);
    const store = manifestENOSPC();
    const err = await failure(checkpointProcess({ pid: c.pid, imagesDir: images, cuda: null, store }));
    expect(err.step).toBe('manifest');
    await until(() => pidFree(c.pid) && pidFree(c.child));
    expect(err.processRunning).toBe(false);
    expect(err.message).toBe(`manifest failed for pid ${c.pid}: ENOSPC: no space left on device, write; the process is gone; ` +
      `the images CRIU wrote stay in ${images}, marked ${INCOMPLETE_FILE}: restore refuses them, but they are all that is left of the tree`);
    const left = fs.readdirSync(images);
    expect(left).toContain(INCOMPLETE_FILE);
    expect(left).not.toContain(MANIFEST_FILE);
    expect(left.filter((n) => n.endsWith('.img')).length).toBeGreaterThan(0);

    const refusal = await refused({ imagesDir: images });
    expect(refusal.message).toMatch(new RegExp(`^checkpoint ${images} is incomplete: `));
    // What is left is a whole CRIU dump: CRIU itself restores it.
    const dumped = c.read();
    expect(await criu.restore({ imagesDir: images, timeoutMs: 60_000 })).toBe(c.pid);
    await until(() => c.read() > dumped + 3);
  });
});
