// Shared by the storage tests: temporary directories, reproducible bytes, real snapshot directories
// (written by writeManifest), and error helpers.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KybernateError } from '../../src/errors';
import { writeManifestWithId, type ContainerManifestInput } from '../../src/snapshot/manifest';

export const KiB = 1024;
export const MiB = 1024 * KiB;

const dirs: string[] = [];
/** A fresh directory under the system tmpdir; removeTmps() removes them all. */
export function tmpDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `kyb-storage-${prefix}-`));
  dirs.push(d);
  return d;
}
export function removeTmps(): void {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** `size` pseudo-random bytes, the same for the same seed (AES-256-CTR over zeros). */
export function seededBytes(size: number, seed: string): Buffer {
  const key = crypto.createHash('sha256').update(seed).digest();
  const c = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(size)), c.final()]);
}

export const sha256 = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex');

function input(): ContainerManifestInput {
  return {
    container: { id: 'ctr-storage', namespace: 'k8s.io' },
    spec: { digest: `sha256:${sha256(Buffer.from('config.json'))}` },
    versions: { criu: '4.1.1', runc: '1.1.5', kernel: '6.1.0', shim: '0.1.0' },
    gpus: [],
    cuda: { pids: [], deviceMemoryBytes: 0 },
    options: { exit: true },
    steps: [],
  };
}

/** A snapshot directory holding `files` (name → bytes, or [bytes, mode]), with its manifest; returns its id. */
export async function makeSnapshot(dir: string, files: Record<string, Buffer | [Buffer, number]>): Promise<string> {
  for (const [name, v] of Object.entries(files)) {
    const [data, mode] = Array.isArray(v) ? v : [v, 0o644];
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), data, { mode });
    fs.chmodSync(path.join(dir, name), mode);
  }
  return (await writeManifestWithId(dir, input())).id;
}

/** The rejection of `p`, which must be a KybernateError. */
export async function rejection(p: Promise<unknown>): Promise<KybernateError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  if (!KybernateError.is(err)) throw new Error(`expected a KybernateError, got ${err === undefined ? 'success' : String(err)}`);
  return err;
}

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Every file under `root` (relative, '/'-separated), recursively. */
export function listTree(root: string): string[] {
  return (fs.readdirSync(root, { recursive: true }) as string[]).map((n) => n.split(path.sep).join('/')).sort();
}
