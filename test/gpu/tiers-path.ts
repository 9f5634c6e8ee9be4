// The snapshot-tier round of the GPU container suite (issue 12): the suite's kybernate-agent runs with a config
// file whose "storage" key adds a disk tier on the machine's local disk (chooseDiskDir: the candidate with the
// most free space that is no tmpfs; the snapshot directory, the ram tier, stays on /dev/shm where the suite
// puts it), and one CUDA container holding --tier-gib GiB of device memory (KYB_GPU_TIER_GIB, default 16) goes
// through, in one round:
//   Agent.Checkpoint{exit} into ram → Agent.Restore from ram (row restore-from-ram) → answers checked →
//   Agent.Checkpoint{exit} again → Agent.MoveSnapshot{tier: disk} (row move-to-disk: bytes written, MB/s) →
//   the chunk files evicted from the page cache (posix_fadvise DONTNEED through python3, else drop_caches) →
//   Agent.Restore from disk (row restore-from-disk: the promotion back into ram, step promote-disk, then the
//   restore from ram) → answers checked;
// with GPU memory released after each checkpoint, the snapshot's tiers after the move (disk only, the ram copy
// gone) and after the restore (ram and disk: a promotion keeps the lower copy), and at the end
// DeleteSnapshot + CollectGarbage{grace 1 s} freeing the disk chunks. A step that throws fails its check and
// ends the round. Times are the wall of one unary call from this process over an open channel.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { AgentClient } from '../../src/agent-api/client';
import { kybernate } from '../../src/gen/proto';
import { num, partsOf, type AgentCtx, type AgentHost } from './agent-path';
import { manifestSteps } from './shim-log';
import { dirBytes, exec, gpuUsedMiB } from './stock';
import type { Sample } from './report';
import type { Workload } from './workloads';

const S = kybernate.agent.v1.WorkloadState;
/** A 16 GiB checkpoint or move takes a minute or so; this bounds a hung call only. */
const OP_TIMEOUT_MS = 20 * 60_000;
const GIB = 2 ** 30;
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
const r1 = (x: number): number => Math.round(x * 10) / 10;
const gib = (b: number): string => (b / GIB).toFixed(2);
/** Decimal MB/s, as disks are rated. */
const mbps = (bytes: number, ms: number): number => (ms > 0 ? bytes / 1e6 / (ms / 1000) : 0);

/** The disk tier's directory: of `candidates` (created here if their parent exists), the one with the most free space that is no tmpfs/ramfs. */
export function chooseDiskDir(candidates: string[], needBytes: number): { dir?: string; freeBytes: number; why: string } {
  const seen: string[] = [];
  let best: { dir: string; free: number } | undefined;
  for (const dir of candidates) {
    try {
      const st = fs.statfsSync(path.dirname(dir));
      const free = st.bavail * st.bsize;
      const ram = st.type === TMPFS_MAGIC || st.type === RAMFS_MAGIC;
      seen.push(`${dir}: ${gib(free)} GiB free${ram ? ' (tmpfs: not a disk)' : ''}`);
      if (!ram && (!best || free > best.free)) best = { dir, free };
    } catch (err) {
      seen.push(`${dir}: ${(err as Error).message}`);
    }
  }
  if (!best || best.free < needBytes) return { freeBytes: best?.free ?? 0, why: `no local disk with ${gib(needBytes)} GiB free (${seen.join('; ')})` };
  fs.rmSync(best.dir, { recursive: true, force: true });
  fs.mkdirSync(best.dir, { recursive: true, mode: 0o700 });
  return { dir: best.dir, freeBytes: best.free, why: seen.join('; ') };
}

/** The agent's config file with the disk tier in `dir`; its path. */
export function writeTierConfig(file: string, dir: string, freeBytes: number): string {
  const capacity = `${Math.max(1, Math.floor(freeBytes / GIB))}GiB`;
  fs.writeFileSync(file, `${JSON.stringify({ '//': 'written by test/gpu/tiers-path.ts', storage: { disk: { dir, capacity } } }, null, 2)}\n`);
  return file;
}

export interface TiersOptions {
  /** The suite's kybernate-agent. */
  socket: string;
  namespace: string;
  /** The agent's disk tier (its config file's storage.disk.dir). */
  diskDir: string;
  gib: number;
}

type Snap = kybernate.agent.v1.ISnapshot;

export class TiersPath {
  private readonly client: AgentClient;

  constructor(private readonly o: TiersOptions, private readonly host: AgentHost, private readonly log: (s: string) => void) {
    this.client = new AgentClient({ address: o.socket, timeoutMs: 30_000 });
  }

  async run(w: Workload, a: AgentCtx): Promise<void> {
    const name = `${w.name} tiers`;
    const req = { namespace: this.o.namespace, id: a.id };
    const snapshots: string[] = [];
    let moved = false;
    let stored = 0;
    let what = 'Agent.Checkpoint{exit} into ram';
    try {
      const s1 = await this.checkpoint(w, a, 1);
      snapshots.push(s1.id!);
      what = 'Agent.Restore from ram';
      const fromRam = await this.restore(w, a, s1, 'restore-from-ram');
      await this.client.deleteSnapshot({ snapshot: s1.id! }); // frees its 16 GiB of /dev/shm before the second checkpoint
      snapshots.shift();

      what = 'Agent.Checkpoint{exit} again';
      const s2 = await this.checkpoint(w, a, 2);
      snapshots.push(s2.id!);
      what = 'Agent.MoveSnapshot{tier: disk}';
      let t0 = performance.now();
      const m = await this.client.moveSnapshot({ snapshot: s2.id!, tier: 'disk' }, { timeoutMs: OP_TIMEOUT_MS });
      const moveMs = performance.now() - t0;
      moved = true;
      const size = num(s2.sizeBytes);
      const written = num(m.bytesWritten);
      t0 = performance.now();
      const onDisk = dirBytes(this.o.diskDir);
      const duMs = performance.now() - t0;
      stored = num(m.snapshot?.storedBytes);
      this.host.sample({ workload: w.name, path: 'ours', op: 'move-to-disk', round: 1, ms: moveMs, bytes: size, written,
        parts: { agentMs: r1(m.durationMs ?? 0), aroundMs: r1(moveMs - (m.durationMs ?? 0)) },
        detail: `${gib(written)} GiB written, stored ${gib(stored)} GiB, disk dir ${gib(onDisk)} GiB (${this.o.diskDir}; counted in ${duMs.toFixed(0)} ms)` });
      const tiers = m.snapshot?.tiers ?? [];
      this.host.check(tiers.length === 1 && tiers[0] === 'disk', `${name}: after the move the snapshot is on disk only`, `tiers ${JSON.stringify(tiers)}`);
      this.host.check(!!s2.path && !fs.existsSync(s2.path), `${name}: the move released the ram copy`, s2.path ?? '');
      this.host.check(onDisk >= size * 0.95, `${name}: the disk tier holds the snapshot's bytes`, `${gib(onDisk)} GiB in ${this.o.diskDir} for ${gib(size)} GiB`);

      what = 'evicting the chunk files from the page cache';
      const cache = await this.evictPageCache();
      what = 'Agent.Restore from disk';
      const fromDisk = await this.restore(w, a, s2, 'restore-from-disk', cache);
      const promote = (fromDisk.steps ?? []).find((s) => (s.name ?? '').startsWith('promote-'));
      this.host.check(promote?.name === 'promote-disk', `${name}: the restore from disk promoted the snapshot into ram first`,
        `steps ${(fromDisk.steps ?? []).map((s) => `${s.name} ${r1(s.durationMs ?? 0)}`).join(', ')}`);
      what = 'Agent.ListSnapshots after the restore from disk';
      const after = (await this.client.listSnapshots(req)).snapshots?.find((s) => s.id === s2.id);
      this.host.check(JSON.stringify(after?.tiers ?? []) === JSON.stringify(['ram', 'disk']), `${name}: the promotion kept the disk copy`,
        `tiers ${JSON.stringify(after?.tiers ?? [])}`);

      const ramMs = this.host.report.samples.find((s) => s.workload === w.name && s.op === 'restore-from-ram')?.ms ?? 0;
      const diskSample = this.host.report.samples.find((s) => s.workload === w.name && s.op === 'restore-from-disk');
      const promoteMs = promote?.durationMs ?? 0;
      const line = `${w.name} tiers (${this.o.gib} GiB of device memory; snapshot ${gib(size)} GiB, one round): ` +
        `restore from ram ${ramMs.toFixed(0)} ms (agent ${(fromRam.durationMs ?? 0).toFixed(0)}); ` +
        `restore from disk ${(diskSample?.ms ?? 0).toFixed(0)} ms = promote-disk ${promoteMs.toFixed(0)} ms (${mbps(size, promoteMs).toFixed(0)} MB/s) + ` +
        `the restore from ram ${((fromDisk.durationMs ?? 0) - promoteMs).toFixed(0)} ms (+ ${((diskSample?.ms ?? 0) - (fromDisk.durationMs ?? 0)).toFixed(0)} ms around the call; ${cache}); ` +
        `move to disk ${moveMs.toFixed(0)} ms, ${gib(written)} GiB written = ${mbps(size, moveMs).toFixed(0)} MB/s of snapshot (${mbps(written, moveMs).toFixed(0)} MB/s written)`;
      this.host.report.notes.push(line);
      this.log(line);
    } catch (err) {
      this.host.check(false, `${name}: ${what}`, (err as Error).stack ?? String(err));
      this.host.report.notes.push(`${name}: the round stopped at ${what}`);
    } finally {
      for (const id of snapshots) {
        await this.client.deleteSnapshot({ snapshot: id }).catch((err: Error) => this.log(`delete snapshot ${id}: ${err.message}`));
      }
      if (moved) {
        try {
          // Chunks younger than the grace period are kept; the move's are a minute old or more by now.
          const g = await this.client.collectGarbage({ graceS: 1 }, { timeoutMs: OP_TIMEOUT_MS });
          const disk = (g.tiers ?? []).find((t) => t.tier === 'disk');
          const freed = num(disk?.freedBytes);
          this.host.check(freed >= stored * 0.99 && freed > 0, `${name}: DeleteSnapshot + CollectGarbage freed the snapshot's disk chunks`,
            `${num(disk?.deletedChunks)} chunks, ${gib(freed)} GiB freed, ${num(disk?.keptChunks)} kept (stored ${gib(stored)} GiB)`);
        } catch (err) {
          this.host.check(false, `${name}: CollectGarbage`, (err as Error).stack ?? String(err));
        }
      }
      this.client.close();
    }
  }

  /** Checkpoint{exit} into ram, checked like the agent path's (GPU memory released, state, the snapshot's size). */
  private async checkpoint(w: Workload, a: AgentCtx, n: number): Promise<Snap> {
    const name = `${w.name} tiers`;
    const t0 = performance.now();
    const c = await this.client.checkpoint({ namespace: this.o.namespace, id: a.id, exit: true }, { timeoutMs: OP_TIMEOUT_MS });
    const ms = performance.now() - t0;
    const used = await gpuUsedMiB();
    const s = c.snapshot ?? {};
    const size = num(s.sizeBytes);
    this.host.sample({ workload: w.name, path: 'ours', op: 'checkpoint-tier', round: n, ms, bytes: size,
      parts: { ...(s.path ? manifestSteps(s.path) : undefined), ...partsOf(c, ms, 'agentMs') } });
    this.host.check(used < a.used0 - 500, `${name} checkpoint ${n}: GPU memory released after checkpoint`, `${a.used0} -> ${used} MiB`);
    this.host.check(c.workload?.state === S.CHECKPOINTED && !!s.id && JSON.stringify(s.tiers ?? []) === '["ram"]',
      `${name} checkpoint ${n}: the agent reports the workload checkpointed, the snapshot in ram`,
      `state ${S[c.workload?.state ?? 0]}, snapshot ${s.id || 'none'}, tiers ${JSON.stringify(s.tiers ?? [])}`);
    this.host.check(size >= this.o.gib * GIB, `${name} checkpoint ${n}: the snapshot holds >= ${this.o.gib} GiB`,
      `${gib(size)} GiB (device memory ${gib(num(s.gpuMemoryBytes))} GiB) in ${s.path}`);
    if (!s.id) throw new Error('Checkpoint returned no snapshot');
    return s;
  }

  /** Restore{snapshot}, the workload's answers checked against those before the first checkpoint. */
  private async restore(w: Workload, a: AgentCtx, s: Snap, op: Extract<Sample['op'], 'restore-from-ram' | 'restore-from-disk'>, detail?: string) {
    const name = `${w.name} tiers`;
    const req = { namespace: this.o.namespace, id: a.id };
    const t0 = performance.now();
    const r = await this.client.restore({ ...req, snapshot: s.id! }, { timeoutMs: OP_TIMEOUT_MS });
    const ms = performance.now() - t0;
    a.pid = r.workload?.pid || (await this.client.get(req)).pid || 0;
    const used = await gpuUsedMiB();
    this.host.sample({ workload: w.name, path: 'ours', op, round: 1, ms, bytes: num(s.sizeBytes), parts: partsOf(r, ms, 'agentMs'),
      detail: `${detail ? `${detail}; ` : ''}GPU used after it ${used} MiB (${a.used0} before the first checkpoint)` });
    this.host.check(r.workload?.state === S.RUNNING, `${name} ${op}: the agent reports the workload running`, `state ${S[r.workload?.state ?? 0]}, pid ${a.pid}`);
    const got = await w.check(a.pid);
    this.host.check(got === a.expected, `${name} ${op}: answers after restore`, got === a.expected ? '' : `got ${got.slice(0, 300)}`);
    return r;
  }

  /**
   * The chunk files were just written (and fsynced): without this the promotion would read them from the page
   * cache, not the disk. Evicts those files only (the CUDA libraries and our binaries stay cached).
   */
  private async evictPageCache(): Promise<string> {
    const t0 = performance.now();
    const py = 'import os,sys\nn=0\nfor d,_,fs in os.walk(sys.argv[1]):\n for f in fs:\n  fd=os.open(os.path.join(d,f),os.O_RDONLY)\n' +
      '  os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)\n  os.close(fd)\n  n+=1\nprint(n)\n';
    const r = await exec('python3', ['-c', py, this.o.diskDir], { timeoutMs: 120_000 }).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message, ms: 0 }));
    if (r.code === 0) return `page cache of the ${r.stdout.trim()} chunk-store files evicted first (posix_fadvise DONTNEED, ${(performance.now() - t0).toFixed(0)} ms)`;
    try {
      await exec('sync', []);
      fs.writeFileSync('/proc/sys/vm/drop_caches', '1\n');
      return `whole page cache dropped first (drop_caches; python3 failed: ${(r.stderr || '').trim().slice(0, 200)})`;
    } catch (err) {
      return `page cache NOT dropped (python3: ${(r.stderr || '').trim().slice(0, 200)}; drop_caches: ${(err as Error).message}): the promotion may have read the page cache`;
    }
  }
}
