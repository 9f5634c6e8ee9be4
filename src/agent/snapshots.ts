// The agent's snapshot directory: <root>/<namespace>/<container id>/<snapshot dir>, one complete snapshot
// (kybernate-manifest.json, src/snapshot) per leaf directory. The index is derived from the directory
// every time it is asked (level-based): an agent restart loses nothing, and nothing but the files says
// what exists.
//
// Invariants:
// - A snapshot is listed only when its manifest is complete and readable, and its files are all there
//   with their sizes (LocalDirectoryStore.open); a directory still marked incomplete, or emptied by a
//   failed checkpoint, is never listed.
// - Namespace and container id become path components: both pass containerd's identifier rule first.
// - Delete renames the directory out of the index (a dot name) before removing it, so a crash during the
//   removal leaves nothing half-listed; removeOrphans() on start finishes such removals and clears
//   directories that a dead checkpoint left incomplete.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KybernateError, errNotFound } from '../errors';
import { alive } from '../host/process';
import { validateId } from '../ids';
import { INCOMPLETE_FILE, MANIFEST_FILE } from '../snapshot/manifest';
import { LocalDirectoryStore, type Snapshot } from '../snapshot/store';
import { UNPACK_TEMP } from '../storage/pack';

export interface SnapshotInfo {
  /** 'sha256:' + hex of its manifest. */
  id: string;
  namespace: string;
  containerId: string;
  path: string;
  createdAt: Date;
  sizeBytes: number;
  gpuMemoryBytes: number;
  /** The CUDA processes it holds GPU state for (host pids at checkpoint time). */
  cudaPids: number[];
  /** The task ended with the checkpoint (scale to zero). */
  exited: boolean;
  /** The storage tiers holding a complete copy, fastest first (tiers.ts); ram alone when unset. */
  tiers?: string[];
  /** Bytes stored for it in its slowest tier (its chunks there; its files in ram). */
  storedBytes?: number;
  /** The tier its copy is pinned in (hsm.ts), if any. */
  pinned?: string;
}

const DELETING_PREFIX = '.deleting-';
/** What the agent keeps beside a snapshot directory (not in it: the manifest vouches for its files only). */
const SIDECAR = '.io.json';
/** Snapshot directories are named by their creation time, so names sort oldest first. */
const SNAPSHOT_DIR = /^\d{13}-[0-9a-f]{8}$/;

function info(namespace: string, containerId: string, snap: { id: string; dir: string; manifest: Snapshot['manifest'] }): SnapshotInfo {
  const m = snap.manifest;
  return {
    id: snap.id, namespace, containerId, path: snap.dir, createdAt: new Date(m.createdAt),
    sizeBytes: m.files.reduce((n, f) => n + f.size, 0), gpuMemoryBytes: m.cuda.deviceMemoryBytes,
    cudaPids: [...m.cuda.pids], exited: m.options.exit === true,
  };
}

async function children(dir: string): Promise<string[]> {
  try {
    return (await fs.promises.readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export class SnapshotDirectory {
  readonly store = new LocalDirectoryStore();

  constructor(readonly root: string) {}

  private containerDir(namespace: string, id: string): string {
    validateId('namespace', namespace);
    validateId('container id', id);
    return path.join(this.root, namespace, id);
  }

  /** A new, empty directory for a checkpoint of namespace/id (root-only). */
  async allocate(namespace: string, id: string): Promise<string> {
    const parent = this.containerDir(namespace, id);
    await fs.promises.mkdir(parent, { recursive: true, mode: 0o700 });
    const name = `${Date.now()}-${Math.floor(Math.random() * 0x1_0000_0000).toString(16).padStart(8, '0')}`;
    const dir = path.join(parent, name);
    await fs.promises.mkdir(dir, { mode: 0o700 });
    return dir;
  }

  /** Removes a directory allocate() gave out whose checkpoint failed (only if it holds no snapshot). */
  async release(dir: string): Promise<void> {
    if (fs.existsSync(path.join(dir, MANIFEST_FILE)) && !fs.existsSync(path.join(dir, INCOMPLETE_FILE))) return;
    await fs.promises.rm(dir, { recursive: true, force: true });
    await fs.promises.rm(`${dir}${SIDECAR}`, { force: true });
  }

  /** The complete snapshot a checkpoint just wrote into `dir` (from allocate); KYB_ERR_CHECKPOINT_INVALID otherwise. */
  async at(namespace: string, id: string, dir: string): Promise<SnapshotInfo> {
    if (path.dirname(dir) !== this.containerDir(namespace, id)) {
      throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `${dir} is not a snapshot directory of ${namespace}/${id}`);
    }
    const snap = await this.open(dir);
    if (!snap) throw new KybernateError('KYB_ERR_CHECKPOINT_INVALID', `the checkpoint of ${namespace}/${id} left no complete snapshot in ${dir}`);
    return info(namespace, id, snap);
  }

  /** The complete snapshots, oldest first; of one namespace, or of one container. */
  async list(namespace?: string, id?: string): Promise<SnapshotInfo[]> {
    if (id !== undefined && namespace === undefined) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'a container id needs its namespace');
    const namespaces = namespace !== undefined ? (validateId('namespace', namespace), [namespace]) : await children(this.root);
    const out: SnapshotInfo[] = [];
    for (const ns of namespaces) {
      if (ns.startsWith('.')) continue;
      const ids = id !== undefined ? [id] : await children(path.join(this.root, ns));
      for (const cid of ids) {
        const parent = this.containerDir(ns, cid);
        for (const name of await children(parent)) {
          if (!SNAPSHOT_DIR.test(name)) continue;
          const snap = await this.open(path.join(parent, name));
          if (snap) out.push(info(ns, cid, snap));
        }
      }
    }
    return out.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.path < b.path ? -1 : 1));
  }

  /** The newest complete snapshot of namespace/id. */
  async newest(namespace: string, id: string): Promise<SnapshotInfo | undefined> {
    const all = await this.list(namespace, id);
    return all[all.length - 1];
  }

  /** The snapshot named by its id ('sha256:<hex>') or a unique prefix of the hex; NotFound otherwise. */
  async find(ref: string, scope?: { namespace: string; id: string }): Promise<SnapshotInfo> {
    checkRef(ref);
    // Two directories holding the same snapshot (one id) are two things to delete: ambiguous by path here.
    return pickSnapshot(await this.list(scope?.namespace, scope?.id), ref, scope, (s) => s.path);
  }

  /** Deletes one snapshot (see find for `ref`). */
  async delete(ref: string): Promise<SnapshotInfo> {
    const s = await this.find(ref);
    const gone = path.join(path.dirname(s.path), `${DELETING_PREFIX}${path.basename(s.path)}`);
    await fs.promises.rename(s.path, gone);
    await fs.promises.rm(gone, { recursive: true, force: true });
    await fs.promises.rm(`${s.path}${SIDECAR}`, { force: true });
    return s;
  }

  /**
   * Finishes what a killed agent left: deletions cut short, and directories of checkpoints whose writer is
   * gone (marked incomplete by a dead shim, or empty). Returns the directories removed.
   */
  async removeOrphans(): Promise<string[]> {
    const removed: string[] = [];
    for (const ns of await children(this.root)) {
      for (const cid of await children(path.join(this.root, ns))) {
        const parent = path.join(this.root, ns, cid);
        for (const name of await children(parent)) {
          const dir = path.join(parent, name);
          // UNPACK_TEMP: a promotion from a chunk tier that a killed agent left half-written beside its target.
          if (name.startsWith(DELETING_PREFIX) || UNPACK_TEMP.test(name) || (SNAPSHOT_DIR.test(name) && await abandoned(dir))) {
            await fs.promises.rm(dir, { recursive: true, force: true });
            if (SNAPSHOT_DIR.test(name)) await fs.promises.rm(`${dir}${SIDECAR}`, { force: true });
            removed.push(dir);
          }
        }
      }
    }
    return removed;
  }

  private async open(dir: string): Promise<{ id: string; dir: string; manifest: Snapshot['manifest'] } | undefined> {
    if (fs.existsSync(path.join(dir, INCOMPLETE_FILE))) return undefined;
    try {
      // The files listed with their sizes; the bytes are read only by a restore's verification.
      return await this.store.open(dir, null);
    } catch (err) {
      if (KybernateError.is(err) && err.code === 'KYB_ERR_CHECKPOINT_INVALID') return undefined;
      throw err;
    }
  }
}

/** A snapshot reference must be its id (sha256:<hex>) or at least 4 of its hex digits. */
export function checkRef(ref: string): void {
  if (!/^[0-9a-f]{4,64}$/.test(ref.startsWith('sha256:') ? ref.slice('sha256:'.length) : ref)) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `snapshot ${JSON.stringify(ref)}: give its id (sha256:...) or at least 4 of its hex digits`);
  }
}

/**
 * The one snapshot of `all` that `ref` (checked by checkRef) names: NotFound when none, INVALID_ARGUMENT when
 * the hits are more than one thing (`distinct` tells what counts as one).
 */
export function pickSnapshot(all: SnapshotInfo[], ref: string, scope: { namespace: string; id: string } | undefined,
  distinct: (s: SnapshotInfo) => string): SnapshotInfo {
  const hex = ref.startsWith('sha256:') ? ref.slice('sha256:'.length) : ref;
  const hits = all.filter((s) => s.id.slice('sha256:'.length).startsWith(hex));
  if (hits.length === 0) throw errNotFound(`snapshot ${ref}${scope ? ` of ${scope.namespace}/${scope.id}` : ''}`);
  if (new Set(hits.map(distinct)).size > 1) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `snapshot ${ref} is ambiguous: ${hits.map((h) => h.id).join(', ')}`);
  }
  return hits[0]!;
}

/** A snapshot directory no live checkpoint is writing, and that holds no complete snapshot. */
async function abandoned(dir: string): Promise<boolean> {
  const marker = path.join(dir, INCOMPLETE_FILE);
  let text: string;
  try {
    text = await fs.promises.readFile(marker, 'utf8');
  } catch {
    // No marker: complete (manifest there) or never begun (empty, left by a killed agent before the shim began).
    if (fs.existsSync(path.join(dir, MANIFEST_FILE))) return false;
    return (await fs.promises.readdir(dir)).length === 0 && Date.now() - (await fs.promises.stat(dir)).mtimeMs > 60_000;
  }
  let shimPid = 0;
  try {
    shimPid = Number((JSON.parse(text) as { shimPid?: unknown }).shimPid) || 0;
  } catch {
    return true;
  }
  // A live shim may still be writing the checkpoint.
  return shimPid <= 0 || !alive(shimPid);
}
