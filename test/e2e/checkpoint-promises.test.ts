// The README's two checkpoint promises, attacked through containerd:
// - code from a corrupt checkpoint never runs: a counter that appends to a host file is restored from a
//   damaged image, and the host file must not grow by a single line;
// - `--exit` never loses a workload: checkpoints into a disk too small for them fail and leave the
//   container running (same pid, counting on) with nothing half-written left; a successful --exit
//   snapshot is the process's last state (restored, it repeats no line); a shim killed in the middle
//   leaves a directory marked incomplete, which restore refuses and the next checkpoint reuses.
// The daemons' XDG_RUNTIME_DIR and TMPDIR (where containerd makes its checkpoint directories) are a tmpfs of its own,
// shrunk per test with `mount -o remount,size=`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, statfsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Long from 'long';
import { containerd } from '../../src/gen/proto';
import { ContainerdClient } from './support/grpc';
import { afterAll, afterEach, expect, it } from 'vitest';
import { TEST_IMAGE, type Containerd, type ContainerdVersion } from './support/harness';
import { describeMatrix, type MatrixContext } from './support/matrix';
import { bundleDir, ppid, runDetached, sleep, task, waitFor, waitStatus } from './support/ctr';
import {
  COUNTER, CRIU_DAEMON_ENV, callFailure, CRIU_TAR_MEDIA_TYPE, checkpointTask, contentGet, contentPut, contentRm, counterPast,
  createLease, criuMissing, criuTar, deleteLease, deleteTaskOf, entryName, failureOf, readTar, restoreTask, snapshotMounts, writeTar,
  type Descriptor, type TarEntry,
} from './support/checkpoint';

const MANIFEST = 'kybernate-manifest.json';
const INCOMPLETE = 'kybernate-checkpoint.incomplete';
const PAGE = 4096;

const mounts: string[] = [];
const dirs: string[] = [];

function tmpfs(size: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'kyb-e2e-tmpfs-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  if (r.status !== 0) throw new Error(`mount tmpfs on ${dir}: ${r.stderr.toString()}`);
  mounts.push(dir);
  return dir;
}

/**
 * Leaves `bytes` free on the tmpfs at `dir`, whatever it holds already (containerd 1.x leaves the
 * directories it unpacked restores into, and a tmpfs cannot shrink below what it holds).
 */
function resize(dir: string, bytes: number): void {
  const st = statfsSync(dir);
  const used = (st.blocks - st.bfree) * st.bsize;
  const r = spawnSync('mount', ['-o', `remount,size=${used + bytes}`, dir]);
  if (r.status !== 0) throw new Error(`remount ${dir} size=${bytes}: ${r.stderr.toString()}`);
}

function hostDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'kyb-e2e-host-'));
  dirs.push(d);
  return d;
}

afterAll(() => {
  for (const m of mounts.splice(0)) {
    spawnSync('umount', ['-l', m]);
    rmSync(m, { recursive: true, force: true });
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Appends 1, 2, 3, ... to /h/all as fast as the shell can: any instruction it runs shows in the file. */
const APPENDER = ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i >> /h/all; done'];

function bindHost(dir: string): string[] {
  return ['--mount', `type=bind,src=${dir},dst=/h,options=rbind:rw`];
}

function lines(file: string): number[] {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  return text.split('\n').filter(Boolean).map(Number);
}

/** 1..n in order, each once: the counter never ran on after its dump. Reports the first break. */
function firstBreak(seq: number[]): string | undefined {
  for (let i = 0; i < seq.length; i++) {
    if (seq[i] !== i + 1) return `line ${i + 1} is ${seq[i]} (after ${seq[i - 1]})`;
  }
  return undefined;
}

/**
 * tmpfs sizes in pages for a snapshot that needs `pages` without its manifest: a third of it (CRIU's
 * writes fail), then page by page around the size where the images and our marker fit and the manifest
 * does not (a dump a page larger or smaller than the one measured moves that size by a page).
 */
function sweep(pages: number): number[] {
  return [Math.ceil(pages / 3), pages - 1, pages, pages + 1, pages + 2];
}

/** Pages a tmpfs needs for these files (tmpfs charges whole pages of data). */
function pagesOf(entries: TarEntry[]): number {
  return entries.reduce((n, e) => n + Math.ceil(e.data.length / PAGE), 0);
}

const xdgOf = new Map<ContainerdVersion, string>();

function daemonOptions(v: ContainerdVersion) {
  const xdg = tmpfs('64m');
  xdgOf.set(v, xdg);
  // containerd makes its checkpoint directory in XDG_RUNTIME_DIR (2.x, later 1.x) or TMPDIR (1.6).
  return { env: { ...CRIU_DAEMON_ENV, XDG_RUNTIME_DIR: xdg, TMPDIR: xdg } };
}

function fixture(ctx: MatrixContext) {
  const leases: string[] = [];
  const digests: string[] = [];
  afterEach(async () => {
    resize(xdgOf.get(ctx.version)!, 64 << 20);
    for (const d of digests.splice(0)) await contentRm(ctx.cd, d);
    for (const l of leases.splice(0)) await deleteLease(ctx.cd, l);
  });
  return {
    async lease(id: string): Promise<string> {
      leases.push(id);
      return createLease(ctx.cd, id);
    },
    async put(cd: Containerd, id: string, entries: TarEntry[]): Promise<Descriptor> {
      const data = await writeTar(entries);
      const digest = await contentPut(cd, `kybernate-${id}`, data, await this.lease(`${id}-put`));
      digests.push(digest);
      return { mediaType: CRIU_TAR_MEDIA_TYPE, digest, size: Long.fromNumber(data.length) };
    },
  };
}

describeMatrix('checkpoint promises', (ctx) => {
  const fx = fixture(ctx);

  it('an --exit snapshot is the last state: restored, the counter repeats no line', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('exit-last');
    const host = hostDir();
    const all = join(host, 'all');
    await runDetached(cd, rt.runtime, id, APPENDER, bindHost(host));
    await waitFor('the appender to write', () => lines(all).length > 1000);
    const ck = criuTar(await checkpointTask(cd, id, { exit: true }, await fx.lease(id)));
    await waitStatus(cd, id, 'STOPPED');
    const atDump = lines(all).length;
    await deleteTaskOf(cd, id);
    expect(lines(all).length).toBe(atDump);

    await restoreTask(cd, id, ck);
    await waitFor('the restored appender to write', () => lines(all).length > atDump + 1000);
    await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
    await waitStatus(cd, id, 'STOPPED');
    expect(firstBreak(lines(all))).toBeUndefined();
  });
}, { start: daemonOptions, skip: () => criuMissing() });

describeMatrix('checkpoint promises of the kybernate shim', (ctx) => {
  const fx = fixture(ctx);

  interface Dumped { id: string; entries: TarEntry[]; all: string; size: number; good: Descriptor }

  /** An appender checkpointed with --exit into the content store; its task is deleted, the container kept. */
  async function dumped(prefix: string): Promise<Dumped> {
    const { cd, rt } = ctx;
    const id = ctx.id(prefix);
    const host = hostDir();
    const all = join(host, 'all');
    await runDetached(cd, rt.runtime, id, APPENDER, bindHost(host));
    await waitFor('the appender to write', () => lines(all).length > 100);
    const good = criuTar(await checkpointTask(cd, id, { exit: true }, await fx.lease(id)));
    await waitStatus(cd, id, 'STOPPED');
    await deleteTaskOf(cd, id);
    const entries = await readTar(await contentGet(cd, good.digest!));
    return { id, entries, all, size: statSync(all).size, good };
  }

  function largestPages(entries: TarEntry[]): TarEntry {
    const pages = entries.filter((e) => /^pages-\d+\.img$/.test(entryName(e))).sort((a, b) => b.data.length - a.data.length);
    if (!pages[0]) throw new Error(`no pages-*.img among ${entries.map(entryName).join(', ')}`);
    return pages[0];
  }

  /** The restore is refused, the host file did not grow by a byte, and the good image still restores. */
  async function refusedWithoutRunning(d: Dumped, damaged: TarEntry[], target: string): Promise<void> {
    const { cd } = ctx;
    const failure = await failureOf(restoreTask(cd, d.id, await fx.put(cd, d.id, damaged)));
    expect(failure.details).toContain(`${target} is corrupt`);
    expect((await task(cd, d.id))?.status).not.toBe('RUNNING');
    expect(statSync(d.all).size).toBe(d.size);
    await deleteTaskOf(cd, d.id);
    // The same appender from the good image does run: the file grows.
    await restoreTask(cd, d.id, d.good);
    await waitFor('the restored appender to write', () => statSync(d.all).size > d.size);
  }

  it('a pages image with one byte flipped is refused before any of its code runs', async () => {
    const d = await dumped('gate-flip');
    const target = largestPages(d.entries);
    const damaged = d.entries.map((e) => {
      if (e !== target) return e;
      const data = Buffer.from(e.data);
      data[data.length >> 1] ^= 0xff;
      return { ...e, data };
    });
    await refusedWithoutRunning(d, damaged, entryName(target));
  });

  it('a manifest with one hex digit of a sha256 changed is refused before any code runs', async () => {
    const d = await dumped('gate-digest');
    const target = entryName(largestPages(d.entries));
    const damaged = d.entries.map((e) => {
      if (entryName(e) !== MANIFEST) return e;
      const m = JSON.parse(e.data.toString('utf8')) as { files: Array<{ name: string; sha256: string }> };
      const f = m.files.find((x) => x.name === target)!;
      f.sha256 = (f.sha256[0] === '0' ? '1' : '0') + f.sha256.slice(1);
      return { ...e, data: Buffer.from(JSON.stringify(m)) };
    });
    await refusedWithoutRunning(d, damaged, target);
  });

  it('a container without a CRIU gate (as an older shim created it): --exit on a full disk keeps it running; with room it stops at its last state', async () => {
    const { cd, rt, version } = ctx;
    const xdg = xdgOf.get(version)!;
    const id = ctx.id('exit-nogate');
    const host = hostDir();
    const all = join(host, 'all');
    const { pid } = await runDetached(cd, rt.runtime, id, APPENDER, bindHost(host));
    rmSync(join(bundleDir(cd, id), 'criu-gate', 'gate.sh'));
    await waitFor('the appender to write', () => lines(all).length > 100);
    // 16 pages: far less than the appender's images.
    resize(xdg, 16 * PAGE);
    const failure = await failureOf(checkpointTask(cd, id, { exit: true }, await fx.lease(`${id}-full`)));
    expect(failure.details).toMatch(/ENOSPC|No space left|no space/i);
    expect(await task(cd, id)).toEqual({ pid, status: 'RUNNING' });
    const before = lines(all).length;
    await waitFor('the appender to go on', () => lines(all).length > before + 100);
    resize(xdg, 64 << 20);
    const ck = criuTar(await checkpointTask(cd, id, { exit: true }, await fx.lease(id)));
    await waitStatus(cd, id, 'STOPPED');
    const atDump = lines(all).length;
    await deleteTaskOf(cd, id);
    await restoreTask(cd, id, ck);
    await waitFor('the restored appender to write', () => lines(all).length > atDump + 1000);
    await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
    await waitStatus(cd, id, 'STOPPED');
    expect(firstBreak(lines(all))).toBeUndefined();
  });

  it('--exit into a disk too small for the snapshot fails and the container keeps running with nothing left behind', async () => {
    const { cd, rt, version } = ctx;
    const xdg = xdgOf.get(version)!;
    const id = ctx.id('exit-full');
    let { pid } = await runDetached(cd, rt.runtime, id, COUNTER);
    let seen = await counterPast(pid, 1);
    // The snapshot's size, from one made with --leave-running (nil options).
    const probed = await checkpointTask(cd, id, {}, await fx.lease(id));
    const probe = await readTar(await contentGet(cd, criuTar(probed).digest!));
    // containerd 1.x fails a checkpoint whose blobs (the same spec) are in the store already.
    for (const d of probed) await contentRm(cd, d.digest!);
    let pages = pagesOf(probe.filter((e) => entryName(e) !== MANIFEST)) + 1;
    const failedAt = new Set<string>();
    let good: Descriptor | undefined;
    let goodBlobs: Descriptor[] = [];
    // Each dump differs from the probe by a few pages, so no fixed window of sizes is sure to hold the one
    // where the images and the marker fit and the manifest does not. The sweep goes up a page at a time
    // from far too small to success; a sweep that succeeded without failing at the manifest (the dump
    // shrank across the window) restores the snapshot it made and sweeps again, a bounded number of times.
    for (let sweepNo = 0; sweepNo < 4 && !failedAt.has('manifest'); sweepNo++) {
      good = undefined;
      // A page at a time around the expected size, then wider steps: a dump that grew past the window (a
      // loaded machine dirties more pages between probe and sweep) still meets a size it fits in.
      const sizes = [Math.ceil(pages / 3), ...Array.from({ length: 16 }, (_, i) => pages - 3 + i), ...[16, 32, 64, 128, 256].map((d) => pages + d)];
      for (const size of sizes) {
        resize(xdg, size * PAGE);
        let descriptors: Descriptor[];
        try {
          descriptors = await checkpointTask(cd, id, { exit: true }, await fx.lease(`${id}-${sweepNo}-${size}`));
        } catch (err) {
          const failure = callFailure(err);
          expect(failure.details, `the failure with ${size} pages`).toMatch(/ENOSPC|No space left|no space/i);
          failedAt.add(/ failed at ([\w-]+):/.exec(failure.details)?.[1] ?? failure.details);
          expect(await task(cd, id), `task after failing with ${size} pages`).toEqual({ pid, status: 'RUNNING' });
          expect((await counterPast(pid, seen.n, 'counter after the failed checkpoint')).token).toBe(seen.token);
          expect(readdirSync(xdg).filter((n) => n.startsWith('ctd-checkpoint'))).toEqual([]);
          continue;
        }
        good = criuTar(descriptors);
        goodBlobs = descriptors;
        break;
      }
      expect(good, 'a checkpoint with room enough').toBeDefined();
      resize(xdg, 64 << 20);
      await waitStatus(cd, id, 'STOPPED');
      await deleteTaskOf(cd, id);
      pid = await restoreTask(cd, id, good!);
      const restored = await counterPast(pid, 0, 'restored counter');
      expect(restored.token).toBe(seen.token);
      seen = restored;
      // The next sweep centres on this snapshot's size.
      pages = pagesOf((await readTar(await contentGet(cd, good!.digest!))).filter((e) => entryName(e) !== MANIFEST)) + 1;
      // As with the probe: the next sweep's checkpoints would find this one's blobs (the same spec) in the
      // store, which containerd 1.x fails with "already exists" instead of running out of room.
      for (const d of goodBlobs) await contentRm(cd, d.digest!);
    }
    expect([...failedAt].sort()).toEqual(['criu-dump', 'manifest']);
  });
}, { runtimes: ['kybernate'], start: daemonOptions, skip: () => criuMissing() });

// ctr task checkpoint --image-path reaches a non-runc shim on containerd 2.x only.
describeMatrix('checkpoint promises of the kybernate shim with --image-path', (ctx) => {
  fixture(ctx);

  it('ctr task checkpoint --exit --image-path on a nearly full tmpfs fails, keeps the task running, and leaves the directory empty', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('imgpath-full');
    const { pid } = await runDetached(cd, rt.runtime, id, COUNTER);
    const seen = await counterPast(pid, 1);
    const sz = tmpfs('64m');
    const ck = join(sz, 'ck');
    await cd.ctrOk(['tasks', 'checkpoint', '--image-path', ck, id]);
    // containerd's client also records an image for a checkpoint by a runtime it does not know as runc's,
    // --image-path or not, named after the container and the time to the second: a sweep checkpoint that
    // succeeds within that second would be checkpointed and then fail to record it ("already exists").
    for (const name of (await cd.ctrOk(['images', 'ls', '-q'])).split('\n')) {
      if (name.startsWith(`containerd.io/checkpoint/${id}:`)) await cd.ctrOk(['images', 'rm', name]);
    }
    const files = readdirSync(ck);
    expect(files).toContain(MANIFEST);
    expect(files).not.toContain(INCOMPLETE);
    const need = files.filter((n) => n !== MANIFEST).reduce((n, f) => n + Math.ceil(statSync(join(ck, f)).size / PAGE), 0);
    rmSync(ck, { recursive: true });
    const failedAt = new Set<string>();
    for (const pages of sweep(need + 1)) {
      resize(sz, pages * PAGE);
      const r = await cd.ctr(['tasks', 'checkpoint', '--exit', '--image-path', ck, id]);
      if (r.code === 0) {
        // Room enough at last: the snapshot is complete and the task gone.
        expect(readdirSync(ck)).toContain(MANIFEST);
        await waitStatus(cd, id, 'STOPPED');
        break;
      }
      expect(r.stderr).toMatch(/ENOSPC|No space left|no space/i);
      failedAt.add(/ failed at ([\w-]+):/.exec(r.stderr)?.[1] ?? r.stderr);
      expect(await task(cd, id)).toEqual({ pid, status: 'RUNNING' });
      expect((await counterPast(pid, seen.n, 'counter after the failed checkpoint')).token).toBe(seen.token);
      expect(existsSync(ck) ? readdirSync(ck) : []).toEqual([]);
    }
    expect([...failedAt].sort()).toEqual(['criu-dump', 'manifest']);
  });

  it('a shim killed during a checkpoint leaves the directory marked incomplete; restore refuses it, the next checkpoint reuses it', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('imgpath-kill');
    const t = await runDetached(cd, rt.runtime, id, COUNTER);
    await counterPast(t.pid, 1);
    const shim = ppid(t.pid);
    const ck = join(hostDir(), 'ck');
    const ctrDone = cd.ctr(['tasks', 'checkpoint', '--exit', '--image-path', ck, id]);
    // Stopped as soon as its marker exists, long before CRIU could have finished: the shim cannot have
    // committed the snapshot, whatever runc and CRIU do meanwhile.
    await waitFor('the checkpoint to begin', () => existsSync(join(ck, INCOMPLETE)), 20_000, 1);
    process.kill(shim, 'SIGSTOP');
    await sleep(300);
    process.kill(shim, 'SIGKILL');
    expect((await ctrDone).code).not.toBe(0);
    expect(readdirSync(ck)).toContain(INCOMPLETE);
    expect(readdirSync(ck)).not.toContain(MANIFEST);
    await waitFor('the task to be gone or stopped', async () => {
      const now = await task(cd, id);
      return now === undefined || now.status === 'STOPPED';
    });

    // A restore from the directory itself (containerd 2.x hands runc options' criu_image_path to any shim).
    const fresh = ctx.id('imgpath-kill-restore');
    await cd.ctrOk(['containers', 'create', '--runtime', rt.runtime, TEST_IMAGE, fresh, ...COUNTER]);
    const rootfs = await snapshotMounts(cd, fresh);
    const options = { type_url: 'containerd.runc.v1.Options', value: containerd.runc.v1.Options.encode({ criuImagePath: ck }).finish() };
    const client = new ContainerdClient(cd.address, cd.namespace);
    try {
      const failure = await failureOf(client.unary('/containerd.services.tasks.v1.Tasks/Create', containerd.services.tasks.v1.CreateTaskRequest,
        containerd.services.tasks.v1.CreateTaskResponse, { containerId: fresh, rootfs, options }));
      expect(failure.details).toMatch(/is incomplete: the checkpoint that wrote it failed or was cut short/);
    } finally {
      client.close();
    }

    // The next checkpoint into it starts afresh and completes.
    const next = ctx.id('imgpath-kill-next');
    const { pid } = await runDetached(cd, rt.runtime, next, COUNTER);
    await counterPast(pid, 1);
    await cd.ctrOk(['tasks', 'checkpoint', '--image-path', ck, next]);
    expect(readdirSync(ck)).toContain(MANIFEST);
    expect(readdirSync(ck)).not.toContain(INCOMPLETE);
  });

}, {
  runtimes: ['kybernate'],
  start: daemonOptions,
  skip: (v) => criuMissing() ?? (v === '2.1' ? undefined : 'containerd 1.x ignores --image-path for runtimes not named io.containerd.runc.*'),
});
