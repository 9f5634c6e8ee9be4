// The seam between checkpoint/restore and where snapshots live. A checkpoint asks a store for a
// SnapshotWriter (a directory CRIU writes into), commits it with its manifest and gets a Snapshot; a
// restore asks the store to open a Snapshot by reference and gets a directory CRIU reads from. The shim's
// process layer sees only these interfaces: a tiered store (RAM, local disk, S3) implements them without
// touching it.
//
// Invariants:
// - A Snapshot exists only for a complete directory: its manifest is there, valid, and every listed file
//   is present with its size; it is compatible with what the caller said this node offers. Its bytes are
//   checked against their sha256 by verify(), which a restore runs before (or, with the CRIU gate, while)
//   anything restored executes.
// - `id` is the sha256 of the manifest's bytes: it names the content (each file's digest is in the
//   manifest), so two snapshots with one id hold the same bytes, wherever they are stored.
// - A writer that is not committed leaves no snapshot behind (see attempt.ts for the directory rules).
import * as path from 'node:path';
import { KybernateError } from '../errors';
import { SnapshotAttempt, type AttemptInfo } from './attempt';
import {
  checkManifestWithId, verifyChecksums, writeManifestWithId, type Expectations, type ManifestInput,
  type SnapshotManifest,
} from './manifest';

export interface Snapshot {
  /** 'sha256:' + hex of the manifest file's bytes. */
  readonly id: string;
  /** The directory that holds its files on this node. */
  readonly dir: string;
  readonly manifest: SnapshotManifest;
  /** Reads every byte against the manifest's digests; rejects with KYB_ERR_CHECKPOINT_INVALID. */
  verify(): Promise<void>;
}

export interface SnapshotWriter {
  /** Where the checkpoint writes its images. */
  readonly dir: string;
  /**
   * Writes the manifest (hashing every file; `durable`: every file and directory synced first) and marks
   * the snapshot complete. Once this resolves the snapshot stands, whatever fails afterwards.
   */
  commit(input: ManifestInput, opts?: { durable?: boolean }): Promise<Snapshot>;
  /** Removes what this writer wrote; never throws, says what it could not remove. No-op after commit. */
  abort(): Promise<string | undefined>;
}

export interface SnapshotStore {
  /** A writer for a new snapshot at `ref`. */
  begin(ref: string, owner: AttemptInfo): Promise<SnapshotWriter>;
  /**
   * The complete snapshot at `ref`, checked against `expect` (null: on any node, for listing);
   * KYB_ERR_CHECKPOINT_INVALID / _INCOMPATIBLE.
   */
  open(ref: string, expect: Expectations | null): Promise<Snapshot>;
}

class DirectorySnapshot implements Snapshot {
  constructor(readonly id: string, readonly dir: string, readonly manifest: SnapshotManifest) {}
  verify(): Promise<void> { return verifyChecksums(this.dir, this.manifest); }
}

/** Refs are absolute directory paths on this node: what containerd passes in Task.Checkpoint and Create. */
export class LocalDirectoryStore implements SnapshotStore {
  private static dirOf(ref: string): string {
    if (!path.isAbsolute(ref)) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `checkpoint path must be absolute: ${JSON.stringify(ref)}`);
    return path.normalize(ref);
  }

  async begin(ref: string, owner: AttemptInfo): Promise<SnapshotWriter> {
    const dir = LocalDirectoryStore.dirOf(ref);
    const attempt = await SnapshotAttempt.begin(dir, owner);
    return {
      dir,
      async commit(input, opts = {}) {
        const { manifest, id } = await writeManifestWithId(dir, input, opts);
        await attempt.commit();
        return new DirectorySnapshot(id, dir, manifest);
      },
      abort: () => attempt.abort(),
    };
  }

  async open(ref: string, expect: Expectations | null): Promise<Snapshot> {
    const dir = LocalDirectoryStore.dirOf(ref);
    const { manifest, id } = await checkManifestWithId(dir, expect);
    return new DirectorySnapshot(id, dir, manifest);
  }
}
