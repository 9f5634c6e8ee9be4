// A snapshot directory while a checkpoint writes into it.
//
// Invariants:
// - From the first byte the attempt writes until commit(), the directory holds INCOMPLETE_FILE, so a
//   checkpoint cut short by anything (ENOSPC, a killed shim or runc, a power cut) is never restored:
//   readManifest refuses a directory that holds it.
// - The manifest of an earlier snapshot in the directory is removed before anything is overwritten.
// - abort() removes what the attempt wrote; files that were there before it stay, with the marker, since
//   the attempt may have overwritten some of them. After commit() it removes nothing: the snapshot is
//   complete, whatever failed later.
// - A directory whose marker an earlier attempt left behind holds nothing of value: begin() empties it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KybernateError } from '../errors';
import { INCOMPLETE_FILE, MANIFEST_FILE } from './manifest';

export interface AttemptInfo {
  container: string;
  namespace: string;
}

async function syncDir(dir: string): Promise<void> {
  const dh = await fs.promises.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

export class SnapshotAttempt {
  private committed = false;
  private constructor(readonly dir: string, private readonly before: ReadonlySet<string>) {}

  static async begin(dir: string, info: AttemptInfo): Promise<SnapshotAttempt> {
    const failed = (err: unknown): never => {
      throw new KybernateError('KYB_ERR_CHECKPOINT_FAILED', `checkpoint ${dir}: cannot prepare it: ${(err as Error).message}`, { cause: err });
    };
    try {
      await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
      let names = await fs.promises.readdir(dir);
      if (names.includes(INCOMPLETE_FILE)) {
        await Promise.all(names.map((n) => fs.promises.rm(path.join(dir, n), { recursive: true, force: true })));
        names = [];
      }
      await fs.promises.rm(path.join(dir, MANIFEST_FILE), { force: true });
      const marker = JSON.stringify({ ...info, shimPid: process.pid, startedAt: new Date().toISOString() });
      const fh = await fs.promises.open(path.join(dir, INCOMPLETE_FILE), 'w', 0o600);
      try {
        await fh.writeFile(`${marker}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await syncDir(dir);
      return new SnapshotAttempt(dir, new Set(names.filter((n) => n !== MANIFEST_FILE)));
    } catch (err) {
      return failed(err);
    }
  }

  /** The manifest is durable: the snapshot is complete. */
  async commit(): Promise<void> {
    await fs.promises.rm(path.join(this.dir, INCOMPLETE_FILE), { force: true });
    await syncDir(this.dir);
    this.committed = true;
  }

  /** The attempt failed: remove what it wrote. Never throws; says what it could not remove. */
  async abort(): Promise<string | undefined> {
    if (this.committed) return undefined;
    try {
      const names = await fs.promises.readdir(this.dir);
      await Promise.all(names.filter((n) => n !== INCOMPLETE_FILE && !this.before.has(n))
        .map((n) => fs.promises.rm(path.join(this.dir, n), { recursive: true, force: true })));
      if (this.before.size === 0) await fs.promises.rm(path.join(this.dir, INCOMPLETE_FILE), { force: true });
      return undefined;
    } catch (err) {
      return `could not remove the partial snapshot in ${this.dir} (${(err as Error).message}); it stays marked ${INCOMPLETE_FILE}`;
    }
  }
}
