// The snapshot manifest's format: its file names, its types and its validation. A snapshot is either a
// container's (Task.Checkpoint through the shim) or a process tree's (`kybernate process checkpoint`);
// both carry the same versions, GPU, CUDA, steps and files sections, and the same verification applies.
//
// Invariants:
// - manifestProblem accepts exactly what writeManifest writes; a manifest may be hostile (it travels
//   in images), so every file name stays inside its directory and every number is a safe count.
// - A file of at most CHUNK_BYTES is recorded with its plain sha256; a larger one as a hash list
//   (`chunks`: the sha256 of each 64 MiB chunk; `sha256`: the sha256 of the raw chunk digests).
import crypto from 'node:crypto';
import { CHUNK_BYTES } from './hash';

export const MANIFEST_FILE = 'kybernate-manifest.json';
export const MANIFEST_VERSION = 1;
/** A crash while writing leaves at most this file behind; verification ignores it (not an image). */
export const MANIFEST_TMP = `.${MANIFEST_FILE}.tmp`;
/**
 * Present from the first byte a checkpoint writes into a directory until its manifest is durable
 * (src/snapshot/attempt.ts): a directory holding it is never restored, whatever else it holds.
 */
export const INCOMPLETE_FILE = 'kybernate-checkpoint.incomplete';
/** Refuse to parse anything bigger: a real manifest lists a few hundred files. */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

export interface GpuInfo {
  uuid: string;
  name: string;
  memoryBytes: number;
}

export interface ManifestFile {
  /** Path relative to the checkpoint directory, '/'-separated. */
  name: string;
  size: number;
  /** Plain sha256 (hex) for a file of at most 64 MiB; the hash list's sha256 for a larger one. */
  sha256: string;
  /** sha256 (hex) of each 64 MiB chunk; present only for files larger than 64 MiB. */
  chunks?: string[];
}

/** One timed step of the checkpoint; GPU steps per process are named "<step>:<pid>". */
export interface ManifestStep { step: string; ms: number; bytes?: number }

interface ManifestCommon {
  version: 1;
  createdAt: string;
  /** driver: the CUDA driver version as the caller knows it ("580.159.04", or the driver API's number). runc: container snapshots. */
  versions: { criu: string; runc?: string; kernel: string; shim: string; driver?: string };
  /** The node's GPUs that the workload used at checkpoint time ([] when not known). */
  gpus: GpuInfo[];
  /**
   * The CUDA processes checkpointed, and the device memory they held (0: not known).
   * nsPids[i]: pids[i] as its own pid namespace numbers it — what CRIU restores it as.
   */
  cuda: { pids: number[]; deviceMemoryBytes: number; nsPids?: number[] };
  /** The checkpoint options used (exit, openTcp, fileLocks, ...): a restore repeats the CRIU ones. */
  options: Record<string, unknown>;
  steps: ManifestStep[];
  /** Every regular file of the directory, recursively, except the manifest; sorted by name. */
  files: ManifestFile[];
}

export interface ContainerManifest extends ManifestCommon {
  kind: 'container';
  container: { id: string; namespace: string; image?: string; bundle?: string };
  /** sha256 of the bundle's config.json at checkpoint time. */
  spec: { digest: string };
}

export interface ProcessManifest extends ManifestCommon {
  kind: 'process';
  /** The root of the process tree (CRIU restores it with this pid), and whether it ran on after the dump. */
  process: { pid: number; leaveRunning: boolean };
}

export type SnapshotManifest = ContainerManifest | ProcessManifest;

type Written = 'version' | 'files' | 'createdAt';
/** What a checkpoint hands writeManifest: everything but what writing adds. `kind` defaults to 'container'. */
export type ContainerManifestInput = Omit<ContainerManifest, Written | 'kind'> & { kind?: 'container' };
export type ProcessManifestInput = Omit<ProcessManifest, Written>;
export type ManifestInput = ContainerManifestInput | ProcessManifestInput;

/** The sha256 (hex) of a hash list: of the chunk digests concatenated as raw bytes. */
export function hashListDigest(chunks: readonly string[]): string {
  const h = crypto.createHash('sha256');
  for (const c of chunks) h.update(Buffer.from(c, 'hex'));
  return h.digest('hex');
}

export const chunkCount = (size: number) => Math.max(1, Math.ceil(size / CHUNK_BYTES));

// ---- validation: the first problem found, or undefined ----

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStr = (v: unknown): v is string => typeof v === 'string';
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isHex = (v: unknown) => isStr(v) && /^[0-9a-f]{64}$/.test(v);

/** A relative '/'-separated path that stays inside the directory (a manifest may be hostile). */
function badName(name: unknown): boolean {
  if (!isStr(name) || name === '' || name.includes('\0') || name.includes('\\')) return true;
  return name.split('/').some((seg) => seg === '' || seg === '.' || seg === '..');
}

/** The kind-specific part: a container's identity and spec, or a process tree's root. */
function subjectProblem(m: Record<string, unknown>): string | undefined {
  if (m.kind === 'process') {
    const p = m.process;
    if (!isObj(p) || !isCount(p.pid) || p.pid === 0 || typeof p.leaveRunning !== 'boolean') return 'process needs a pid and leaveRunning';
    return undefined;
  }
  if (m.kind !== 'container') return `kind ${JSON.stringify(m.kind)}, expected "container" or "process"`;
  const c = m.container;
  if (!isObj(c) || !isStr(c.id) || c.id === '' || !isStr(c.namespace)) return 'container needs an id and a namespace';
  if ((c.image !== undefined && !isStr(c.image)) || (c.bundle !== undefined && !isStr(c.bundle))) {
    return 'container.image and container.bundle must be strings';
  }
  if (!isObj(m.spec) || !isStr(m.spec.digest) || !/^sha256:[0-9a-f]{64}$/.test(m.spec.digest)) {
    return 'spec.digest must be sha256:<64 hex digits>';
  }
  return undefined;
}

function filesProblem(files: unknown): string | undefined {
  if (!Array.isArray(files)) return 'files must be an array';
  const seen = new Set<string>();
  for (const f of files) {
    if (!isObj(f) || badName(f.name)) return `files: bad name ${JSON.stringify(isObj(f) ? f.name : f)}`;
    const name = f.name as string;
    if (name === MANIFEST_FILE) return `files: lists ${MANIFEST_FILE} itself`;
    if (seen.has(name)) return `files: ${name} is listed twice`;
    seen.add(name);
    if (!isCount(f.size)) return `files: ${name} has no valid size`;
    if (!isHex(f.sha256)) return `files: ${name} has no valid sha256`;
    if (f.size <= CHUNK_BYTES) {
      if (f.chunks !== undefined) return `files: ${name} has chunks but is not larger than one chunk`;
      continue;
    }
    if (!Array.isArray(f.chunks) || !f.chunks.every(isHex)) return `files: ${name} needs chunk digests`;
    if (f.chunks.length !== chunkCount(f.size)) {
      return `files: ${name} has ${f.chunks.length} chunk digests, its size needs ${chunkCount(f.size)}`;
    }
    if (hashListDigest(f.chunks as string[]) !== f.sha256) return `files: ${name}: sha256 does not match its chunk digests`;
  }
  return undefined;
}

export function manifestProblem(m: unknown): string | undefined {
  if (!isObj(m)) return 'not a JSON object';
  if (m.version !== MANIFEST_VERSION) return `version ${JSON.stringify(m.version)} (this kybernate reads ${MANIFEST_VERSION})`;
  const subject = subjectProblem(m);
  if (subject) return subject;
  if (!isStr(m.createdAt) || Number.isNaN(Date.parse(m.createdAt))) return 'createdAt is not an ISO time';

  const v = m.versions;
  if (!isObj(v)) return 'versions is missing';
  for (const k of m.kind === 'container' ? ['criu', 'runc', 'kernel', 'shim'] : ['criu', 'kernel', 'shim']) {
    if (!isStr(v[k]) || v[k] === '') return `versions.${k} must be a non-empty string`;
  }
  for (const k of ['driver', 'runc']) {
    if (v[k] !== undefined && (!isStr(v[k]) || v[k] === '')) return `versions.${k} must be a non-empty string`;
  }

  if (!Array.isArray(m.gpus)) return 'gpus must be an array';
  for (const g of m.gpus) {
    if (!isObj(g) || !isStr(g.uuid) || !isStr(g.name) || !isCount(g.memoryBytes)) {
      return `gpus: ${JSON.stringify(g)} needs uuid, name and memoryBytes`;
    }
  }

  const cuda = m.cuda;
  if (!isObj(cuda) || !Array.isArray(cuda.pids) || !isCount(cuda.deviceMemoryBytes)) {
    return 'cuda needs pids and deviceMemoryBytes';
  }
  if (!cuda.pids.every((p) => isCount(p) && p > 0)) return 'cuda.pids must be process ids';
  if (cuda.nsPids !== undefined && (!Array.isArray(cuda.nsPids) || cuda.nsPids.length !== cuda.pids.length || !cuda.nsPids.every((p) => isCount(p) && p > 0))) {
    return 'cuda.nsPids must be one process id per cuda.pids entry';
  }
  if (cuda.pids.length > 0 && v.driver === undefined) return 'versions.driver is required when cuda.pids is not empty';

  if (!isObj(m.options)) return 'options must be an object';
  if (!Array.isArray(m.steps)) return 'steps must be an array';
  for (const s of m.steps) {
    if (!isObj(s) || !isStr(s.step) || typeof s.ms !== 'number' || !Number.isFinite(s.ms) || s.ms < 0
      || (s.bytes !== undefined && !isCount(s.bytes))) {
      return `steps: ${JSON.stringify(s)} needs step, ms (and optional bytes)`;
    }
  }
  return filesProblem(m.files);
}
