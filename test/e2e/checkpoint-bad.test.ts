// Restores from damaged checkpoints, through containerd, against our shim only: the checkpoint carries our
// manifest (kybernate-manifest.json), which must catch a corrupted, truncated or missing piece before
// anything runs. The damaged image reaches the shim the way every containerd version hands over a
// checkpoint: a criu tar in the content store, named in Tasks.Create, unpacked by containerd into a
// directory that becomes the shim's Create{checkpoint}.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Long from 'long';
import { afterAll, afterEach, expect, it } from 'vitest';
import type { Containerd } from './support/harness';
import { describeMatrix } from './support/matrix';
import { runDetached, task, waitFor, waitStatus } from './support/ctr';
import {
  COUNTER, CRIU_TAR_MEDIA_TYPE, checkpointDaemonOptions, checkpointTask, contentGet, contentPut, contentRm, counterPast,
  createLease, criuMissing, criuTar, deleteLease, deleteTaskOf, entryName, failureOf, readTar, removeDaemonRuntimeDirs,
  restoreTask, writeTar, type CallFailure, type Count, type Descriptor, type TarEntry,
} from './support/checkpoint';

const MANIFEST = 'kybernate-manifest.json';

afterAll(removeDaemonRuntimeDirs);

/** Pids of processes in a cgroup whose path names container `id` (runc puts each container in one). */
function processesOf(id: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cgroup`, 'utf8').split('\n').some((l) => l.endsWith(`/${id}`))) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

/** The largest CRIU pages image: the memory of the counter's shell. */
function largestPages(entries: TarEntry[]): TarEntry {
  const pages = entries.filter((e) => /^pages-\d+\.img$/.test(entryName(e))).sort((a, b) => b.data.length - a.data.length);
  if (!pages[0]) throw new Error(`no pages-*.img among ${entries.map(entryName).join(', ')}`);
  return pages[0];
}

describeMatrix('checkpoint bad images', (ctx) => {
  const digests: string[] = [];
  const leases: string[] = [];
  afterEach(async () => {
    for (const d of digests.splice(0)) await contentRm(ctx.cd, d);
    for (const l of leases.splice(0)) await deleteLease(ctx.cd, l);
  });

  interface Checkpointed { id: string; original: Descriptor; entries: TarEntry[]; seen: Count }

  /** A counter container checkpointed with exit into the content store; its task is deleted, the container kept. */
  async function checkpointed(prefix: string): Promise<Checkpointed> {
    const { cd, rt } = ctx;
    const id = ctx.id(prefix);
    const { pid } = await runDetached(cd, rt.runtime, id, COUNTER);
    const seen = await counterPast(pid, 1);
    leases.push(id);
    const original = criuTar(await checkpointTask(cd, id, { exit: true }, await createLease(cd, id)));
    await waitStatus(cd, id, 'STOPPED');
    await deleteTaskOf(cd, id);
    const entries = await readTar(await contentGet(cd, original.digest!));
    expect(entries.map(entryName)).toContain(MANIFEST);
    return { id, original, entries, seen };
  }

  /** Stores `entries` as a criu tar and restores the container from it; resolves to the refusal. */
  async function restoreFrom(cd: Containerd, id: string, entries: TarEntry[]): Promise<CallFailure> {
    const data = await writeTar(entries);
    leases.push(`${id}-bad`);
    const digest = await contentPut(cd, `kybernate-bad-${id}`, data, await createLease(cd, `${id}-bad`));
    digests.push(digest);
    return failureOf(restoreTask(cd, id, { mediaType: CRIU_TAR_MEDIA_TYPE, digest, size: Long.fromNumber(data.length) }));
  }

  /** Nothing of `id` runs after the refusal, and the untouched checkpoint still restores on the same container. */
  async function assertNothingStartedThenRestore(c: Checkpointed): Promise<void> {
    const { cd } = ctx;
    const t = await task(cd, c.id);
    expect(t?.status === 'RUNNING', `task after refusal: ${JSON.stringify(t)}`).toBe(false);
    expect(processesOf(c.id)).toEqual([]);
    if (t) await deleteTaskOf(cd, c.id);

    const pid = await restoreTask(cd, c.id, c.original);
    await waitFor(`task ${c.id} to run`, async () => (await task(cd, c.id))?.status === 'RUNNING');
    const restored = await counterPast(pid, 0, 'restored counter');
    expect(restored.token).toBe(c.seen.token);
  }

  it('a pages image with one byte flipped is refused', async () => {
    const c = await checkpointed('bad-flip');
    const target = largestPages(c.entries);
    const damaged = c.entries.map((e) => {
      if (e !== target) return e;
      const data = Buffer.from(e.data);
      const at = Math.floor(data.length / 2);
      data[at] = data[at]! ^ 0xff;
      return { ...e, data };
    });
    const failure = await restoreFrom(ctx.cd, c.id, damaged);
    expect(failure.details).toMatch(/corrupt|checksum|digest|mismatch/i);
    expect(failure.details).toContain(entryName(target));
    await assertNothingStartedThenRestore(c);
  });

  it('a truncated pages image is refused', async () => {
    const c = await checkpointed('bad-trunc');
    const target = largestPages(c.entries);
    const damaged = c.entries.map((e) => (e === target ? { ...e, data: e.data.subarray(0, Math.floor(e.data.length / 2)) } : e));
    const failure = await restoreFrom(ctx.cd, c.id, damaged);
    expect(failure.details).toMatch(/truncat|size|corrupt/i);
    expect(failure.details).toContain(entryName(target));
    await assertNothingStartedThenRestore(c);
  });

  it('a restore CRIU fails on says why in one sentence with the fix: a file the container had open is gone', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('bad-gone-file');
    const host = mkdtempSync(join(tmpdir(), 'kyb-e2e-gone-'));
    try {
      writeFileSync(join(host, 'held'), 'x');
      await runDetached(cd, rt.runtime, id, ['sh', '-c', 'exec 3</h/held; while :; do sleep 0.1; done'],
        ['--mount', `type=bind,src=${host},dst=/h,options=rbind:rw`]);
      leases.push(id);
      const ck = criuTar(await checkpointTask(cd, id, { exit: true }, await createLease(cd, id)));
      await waitStatus(cd, id, 'STOPPED');
      await deleteTaskOf(cd, id);
      rmSync(join(host, 'held'));
      const failure = await failureOf(restoreTask(cd, id, ck));
      expect(failure.details).toMatch(/the file \S*held that the tree had open is gone: put it back where it was, then restore again \(CRIU log: \S+criu-restore\.log\)/);
      expect(failure.code).toBe(9); // FAILED_PRECONDITION: the node, not the image, must change
    } finally {
      rmSync(host, { recursive: true, force: true });
    }
  });

  it('a checkpoint without its manifest is refused', async () => {
    const c = await checkpointed('bad-nomanifest');
    const failure = await restoreFrom(ctx.cd, c.id, c.entries.filter((e) => entryName(e) !== MANIFEST));
    expect(failure.details).toContain(MANIFEST);
    await assertNothingStartedThenRestore(c);
  });
}, {
  runtimes: ['kybernate'],
  start: checkpointDaemonOptions,
  skip: () => criuMissing(),
});
