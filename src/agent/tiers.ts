// The agent's snapshots across storage tiers: ram (plain files in the snapshot directory, which CRIU writes
// and reads in place: no extra copy on the wake path), disk and s3 (content-defined chunks in a ChunkStore,
// deduplicated, with one index per snapshot). A checkpoint is always written as plain files first and moved
// down when asked; a restore from a lower tier first brings the snapshot back into ram (a promotion: the
// lower copy stays) and restores from there.
//
// Invariants:
// - A move writes the new copy completely (chunks, then the index last; or the plain directory renamed into
//   place whole) and verifies it before the old copy is released: a crash leaves the old copy, the new one,
//   or both — never neither, never half of one listed.
// - The chunk tiers are listed from their indexes once at start and kept current by this agent's own moves
//   and deletes (the agent is their only writer); ram is read from the directory every time.
// - One move of a snapshot at a time (moves run in the snapshot's queue), and never during a restore of it.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KybernateError, errNotFound } from '../errors';
import type { ChunkStore } from '../storage/chunk-store';
import { parseIndex, type SnapshotIndex as ChunkIndex } from '../storage/index-format';
import { gcChunks, packSnapshot, unpackSnapshot } from '../storage/pack';
import { manifestProblem, type SnapshotManifest } from '../snapshot/schema';
import { snapshotId } from '../snapshot/manifest';
import { checkRef, pickSnapshot, type SnapshotDirectory, type SnapshotInfo } from './snapshots';

export type TierName = 'ram' | 'disk' | 's3';
export const TIER_ORDER: readonly TierName[] = ['ram', 'disk', 's3'];

interface ChunkedCopy { index: ChunkIndex; info: SnapshotInfo }

export interface MoveResult { snapshot: SnapshotInfo; bytesWritten: number; durationMs: number }

export class SnapshotTiers {
  /** Per chunk tier: snapshot id → its index and what it says. */
  private readonly chunked = new Map<TierName, Map<string, ChunkedCopy>>();
  /** One move per snapshot id at a time. */
  private readonly busy = new Map<string, Promise<unknown>>();

  constructor(private readonly ram: SnapshotDirectory, private readonly stores: Partial<Record<'disk' | 's3', ChunkStore>>) {}

  /** The configured tiers, fastest first. */
  get tiers(): TierName[] {
    return TIER_ORDER.filter((t) => t === 'ram' || this.stores[t as 'disk' | 's3'] !== undefined);
  }

  /** Reads every chunk tier's indexes (start); an index that does not parse is skipped and named. */
  async load(warn: (msg: string) => void): Promise<void> {
    for (const tier of ['disk', 's3'] as const) {
      const store = this.stores[tier];
      if (!store) continue;
      const copies = new Map<string, ChunkedCopy>();
      for await (const id of store.listIndexes()) {
        try {
          copies.set(id, await this.readCopy(store, id));
        } catch (err) {
          warn(`tier ${tier}: snapshot ${id} skipped: ${(err as Error).message}`);
        }
      }
      this.chunked.set(tier, copies);
    }
  }

  /** Every complete snapshot, each once with the tiers holding it, oldest first; of one namespace/container. */
  async list(namespace?: string, id?: string): Promise<SnapshotInfo[]> {
    const byId = new Map<string, SnapshotInfo>();
    for (const s of await this.ram.list(namespace, id)) byId.set(s.id, { ...s, tiers: ['ram'], storedBytes: s.sizeBytes });
    for (const tier of ['disk', 's3'] as const) {
      for (const [sid, copy] of this.chunked.get(tier) ?? []) {
        const i = copy.info;
        if ((namespace !== undefined && i.namespace !== namespace) || (id !== undefined && i.containerId !== id)) continue;
        const seen = byId.get(sid);
        if (seen) seen.tiers = [...(seen.tiers ?? []), tier];
        else byId.set(sid, { ...i, tiers: [tier] });
        byId.get(sid)!.storedBytes = copy.info.storedBytes;
      }
    }
    return [...byId.values()].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : 1));
  }

  async newest(namespace: string, id: string): Promise<SnapshotInfo | undefined> {
    return (await this.list(namespace, id)).at(-1);
  }

  /** By id or a unique prefix of at least 4 hex digits, in any tier. */
  async find(ref: string, scope?: { namespace: string; id: string }): Promise<SnapshotInfo> {
    checkRef(ref);
    // list() holds each id once, whatever tiers or directories hold it.
    return pickSnapshot(await this.list(scope?.namespace, scope?.id), ref, scope, (s) => s.id);
  }


  /** Moves a snapshot to `to`: the copy there complete and verified, then the others released. */
  move(ref: string, to: TierName, onProgress?: (done: number, total: number) => void): Promise<MoveResult> {
    return this.exclusive(ref, async (s) => {
      const t0 = performance.now();
      const bytesWritten = await this.copyTo(s, to, onProgress);
      for (const tier of s.tiers ?? []) if (tier !== to) await this.release(s, tier as TierName);
      const [moved] = (await this.list(s.namespace, s.containerId)).filter((x) => x.id === s.id);
      return { snapshot: moved ?? s, bytesWritten, durationMs: performance.now() - t0 };
    });
  }

  /** The policy's demotion: a complete copy in `to`, then the copy in `from` released (others stay). */
  moveCopy(ref: string, from: TierName, to: TierName): Promise<void> {
    return this.exclusive(ref, async (s) => {
      if (!(s.tiers ?? []).includes(from)) return;
      await this.copyTo(s, to);
      await this.release(s, from);
    });
  }

  /** The policy's drop: the copy in `tier` released, only while another complete copy exists. */
  dropCopy(ref: string, tier: TierName): Promise<void> {
    return this.exclusive(ref, async (s) => {
      const others = (s.tiers ?? []).filter((t) => t !== tier);
      if (others.length === 0 || !(s.tiers ?? []).includes(tier)) return;
      await this.release(s, tier);
    });
  }

  /** Runs fn (a restore reading the ram copy) with the snapshot held: no move or drop of it meanwhile. */
  hold<T>(ref: string, fn: (s: SnapshotInfo) => Promise<T>, scope?: { namespace: string; id: string }): Promise<T> {
    return this.exclusive(ref, fn, scope);
  }

  /** A move, copy or restore of the snapshot is under way. */
  isBusy(id: string): boolean {
    return this.busy.has(id);
  }

  /** Brings a snapshot into ram (restore's promotion), keeping its other copies; its ram path. */
  promote(ref: string, scope?: { namespace: string; id: string }): Promise<SnapshotInfo> {
    return this.exclusive(ref, async (s) => {
      if (!(s.tiers ?? []).includes('ram')) await this.copyTo(s, 'ram');
      return (await this.ram.list(s.namespace, s.containerId)).find((x) => x.id === s.id)!;
    }, scope);
  }

  /** Reads every byte of every copy against the manifest; the tiers verified and the bytes read. */
  verify(ref: string): Promise<{ snapshot: SnapshotInfo; verified: TierName[]; bytesRead: number; durationMs: number }> {
    return this.exclusive(ref, async (s) => {
      const t0 = performance.now();
      const verified: TierName[] = [];
      let bytesRead = 0;
      for (const tier of (s.tiers ?? []) as TierName[]) {
        if (tier === 'ram') {
          const snap = await this.ram.store.open(s.path, null);
          await snap.verify();
          bytesRead += s.sizeBytes;
        } else {
          const store = this.storeOf(tier);
          const index = this.chunked.get(tier)!.get(s.id)!.index;
          for (const f of index.files) {
            const h = createHash('sha256');
            // get() checks each chunk against its digest; the file's digest checks their order and completeness.
            for (const c of f.chunks) h.update(await store.get(c.digest));
            if (h.digest('hex') !== f.sha256) {
              throw new KybernateError('KYB_ERR_CHECKPOINT_INVALID', `snapshot ${s.id} in ${store.name}: file ${f.path} does not match its sha256`);
            }
            bytesRead += f.size;
          }
        }
        verified.push(tier);
      }
      return { snapshot: s, verified, bytesRead, durationMs: performance.now() - t0 };
    });
  }

  /** Deletes unreferenced chunks older than graceMs in each chunk tier. */
  async collectGarbage(graceMs: number): Promise<Array<{ tier: TierName; deleted: number; freedBytes: number; kept: number }>> {
    const out = [];
    for (const tier of ['disk', 's3'] as const) {
      const store = this.stores[tier];
      if (store) out.push({ tier, ...(await gcChunks(store, { graceMs })) });
    }
    return out;
  }

  /** Deletes a snapshot from every tier (its chunks go with the next gc). */
  delete(ref: string): Promise<SnapshotInfo> {
    return this.exclusive(ref, async (s) => {
      for (const tier of s.tiers ?? []) await this.release(s, tier as TierName);
      return s;
    });
  }

  private async exclusive<T>(ref: string, fn: (s: SnapshotInfo) => Promise<T>, scope?: { namespace: string; id: string }): Promise<T> {
    const s0 = await this.find(ref, scope);
    const before = this.busy.get(s0.id) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(async () => fn(await this.find(s0.id, scope)));
    this.busy.set(s0.id, run);
    try {
      return await run;
    } finally {
      if (this.busy.get(s0.id) === run) this.busy.delete(s0.id);
    }
  }

  /** Writes a complete copy of `s` into `to` (nothing when it has one); the bytes written. */
  private async copyTo(s: SnapshotInfo, to: TierName, onProgress?: (done: number, total: number) => void): Promise<number> {
    if ((s.tiers ?? []).includes(to)) return 0;
    const progress = onProgress && ((p: { bytesDone: number; bytesTotal: number }) => onProgress(p.bytesDone, p.bytesTotal));
    if (to === 'ram') {
      const from = this.fastestChunked(s);
      const dest = await this.ram.allocate(s.namespace, s.containerId);
      await fs.promises.rmdir(dest); // unpack renames a complete directory into place
      try {
        await unpackSnapshot(s.id, from.store, dest, { onProgress: progress });
      } catch (err) {
        await fs.promises.rm(dest, { recursive: true, force: true });
        throw err;
      }
      return s.sizeBytes;
    }
    const store = this.storeOf(to);
    if ((s.tiers ?? []).includes('ram')) {
      const r = await packSnapshot(s.path, store, { onProgress: progress });
      if (r.id !== s.id) throw new KybernateError('KYB_ERR_INTERNAL', `snapshot ${s.id} packed as ${r.id}`);
      this.remember(to, await this.readCopy(store, s.id));
      return r.newBytes;
    }
    // Chunk tier to chunk tier: every chunk checked on the way (get verifies), the index written last.
    const from = this.fastestChunked(s);
    const index = this.chunked.get(from.tier)!.get(s.id)!.index;
    let written = 0;
    let done = 0;
    const total = index.files.reduce((n, f) => n + f.size, 0);
    for (const f of index.files) {
      for (const c of f.chunks) {
        if (!(await store.has(c.digest))) {
          await store.put(c.digest, await from.store.get(c.digest));
          written += c.size;
        }
        done += c.size;
        progress?.({ bytesDone: done, bytesTotal: total });
      }
    }
    const data = await from.store.getIndex(s.id);
    if (!data) throw new KybernateError('KYB_ERR_CHECKPOINT_INVALID', `snapshot ${s.id}: its index left ${from.store.name} during the move`);
    await store.putIndex(s.id, data);
    this.remember(to, await this.readCopy(store, s.id));
    return written;
  }

  private async release(s: SnapshotInfo, tier: TierName): Promise<void> {
    if (tier === 'ram') {
      await this.ram.delete(s.id);
      return;
    }
    await this.storeOf(tier).deleteIndex(s.id);
    this.chunked.get(tier)?.delete(s.id);
  }

  private fastestChunked(s: SnapshotInfo): { tier: 'disk' | 's3'; store: ChunkStore } {
    for (const tier of ['disk', 's3'] as const) {
      if ((s.tiers ?? []).includes(tier)) return { tier, store: this.storeOf(tier) };
    }
    throw new KybernateError('KYB_ERR_INTERNAL', `snapshot ${s.id} has no chunked copy`);
  }

  private storeOf(tier: TierName): ChunkStore {
    const store = tier === 'ram' ? undefined : this.stores[tier];
    if (!store) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `the ${tier} tier is not configured on this agent (its config file's "storage" key)`);
    return store;
  }

  private remember(tier: TierName, copy: ChunkedCopy): void {
    let m = this.chunked.get(tier);
    if (!m) this.chunked.set(tier, m = new Map());
    m.set(copy.info.id, copy);
  }

  /** A chunked copy's index and, from the manifest it holds, what it is a snapshot of. */
  private async readCopy(store: ChunkStore, id: string): Promise<ChunkedCopy> {
    const data = await store.getIndex(id);
    if (!data) throw errNotFound(`snapshot ${id} in ${store.name}`);
    const index = parseIndex(data, store.name, id);
    const mf = index.files.find((f) => f.path === index.manifest)!; // parseIndex checked it is there
    const text = Buffer.concat(await Promise.all(mf.chunks.map((c) => store.get(c.digest))));
    if (snapshotId(text) !== id) throw new KybernateError('KYB_ERR_CHECKPOINT_INVALID', `snapshot ${id} in ${store.name}: its manifest does not match its id`);
    const m = JSON.parse(text.toString('utf8')) as SnapshotManifest;
    const problem = manifestProblem(m);
    if (problem || m.kind !== 'container') throw new KybernateError('KYB_ERR_CHECKPOINT_INVALID', `snapshot ${id} in ${store.name}: ${problem ?? 'not a container snapshot'}`);
    const unique = new Map<string, number>();
    for (const f of index.files) for (const c of f.chunks) unique.set(c.digest, c.size);
    return {
      index,
      info: {
        id, namespace: m.container.namespace, containerId: m.container.id, path: '', createdAt: new Date(m.createdAt),
        sizeBytes: m.files.reduce((n, f) => n + f.size, 0), gpuMemoryBytes: m.cuda.deviceMemoryBytes, cudaPids: [...m.cuda.pids],
        exited: m.options.exit === true, storedBytes: [...unique.values()].reduce((a, b) => a + b, 0),
      },
    };
  }
}

export function isTier(s: string): s is TierName {
  return (TIER_ORDER as readonly string[]).includes(s);
}

/** For messages: where a tier keeps its data. */
export function describeTier(tier: TierName, ram: string, stores: Partial<Record<'disk' | 's3', ChunkStore>>): string {
  return tier === 'ram' ? path.resolve(ram) : stores[tier]?.name ?? '(not configured)';
}
