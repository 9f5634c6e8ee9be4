// Helpers for the operation-queue e2e file (operations.test.ts): CUDA containers on the fake libcuda whose
// processes really map a libcuda.so (so that Task.Checkpoint does its GPU steps too), the fake's per-pid
// call log and the rules it must obey, holds that stop an operation in the middle of its driver calls,
// an nvidia-smi stand-in, and every operation as a call that settles to { ok, code }.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { containerd } from '../../../src/gen/proto';
import { CRIU_DAEMON_ENV, callFailure, checkpointToDir } from './checkpoint';
import { ContainerdClient } from './grpc';
import { REPO_ROOT, TEST_IMAGE, binDir, type Containerd, type ContainerdVersion, type StartOptions } from './harness';
import { waitFor, waitStatus } from './ctr';

const exec = promisify(execFile);
const tasksApi = containerd.services.tasks.v1;
const Empty = { decode: (): Record<string, never> => ({}) };
const CLI = join(REPO_ROOT, 'dist', 'kybernate.cjs');
const ADDON = join(REPO_ROOT, 'build', 'Release', 'kybernate.node');
const FIXTURES = join(REPO_ROOT, 'test', 'native', 'fixtures');
export const MARKER = 'HAS_CUDA=1';
/** Device memory the nvidia-smi stand-in reports per CUDA process on the GPU. */
export const GPU_MIB = 300;
export const MIB = 1024 * 1024;

export const tmp = mkdtempSync(join(tmpdir(), 'kyb-ops-'));
/** Named libcuda.so.1: the shim decides whether a paused container must be thawed by "libcuda.so" in its maps. */
const fakeDir = join(tmp, 'fake');
export const fakeLib = join(fakeDir, 'libcuda.so.1');
const procLib = join(tmp, 'fake-nvidia-proc.so');
const procDir = join(tmp, 'nvidia-proc');
const stubDir = join(tmp, 'stub-bin');
export const holdDir = join(tmp, 'hold');
const stateDir = join(tmp, 'state');

/** Why this file cannot run here, if it cannot; builds the fakes and bundles the shim and CLI otherwise. */
export function prepare(): string | undefined {
  if (!existsSync(ADDON)) return 'the addon is not built (make build)';
  for (const d of [fakeDir, procDir, stubDir, holdDir, stateDir]) mkdirSync(d, { recursive: true });
  try {
    execFileSync('cc', ['-shared', '-fPIC', '-o', fakeLib, join(FIXTURES, 'fake-libcuda.c')]);
    execFileSync('cc', ['-shared', '-fPIC', '-o', procLib, join(FIXTURES, 'fake-nvidia-proc.c'), '-ldl']);
  } catch (err) {
    return `cannot build the fakes with cc: ${(err as Error).message.split('\n')[0]}`;
  }
  writeFileSync(join(procDir, 'version'), 'NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  (fake for the e2e tests)\n');
  // The nvidia-smi stand-in: `--query-compute-apps=pid,used_memory --format=csv,noheader,nounits` lists
  // every process with the marker in its environment whose fake driver state is not checkpointed (a
  // checkpointed process has given its device memory back), with GPU_MIB MiB each.
  const smi = join(stubDir, 'nvidia-smi');
  writeFileSync(smi, `#!/bin/sh
case "$*" in *--query-compute-apps=pid,used_memory*) ;; *) echo "nvidia-smi stand-in: unsupported: $*" >&2; exit 2 ;; esac
for f in $(grep -lzxF "$FAKE_CUDA_MARKER" /proc/[0-9]*/environ 2>/dev/null); do
  pid=\${f#/proc/}; pid=\${pid%/environ}
  [ "$(cat "$FAKE_CUDA_STATE_DIR/$pid" 2>/dev/null)" = checkpointed ] && continue
  echo "$pid, ${GPU_MIB}"
done
`);
  chmodSync(smi, 0o755);
  execFileSync(process.execPath, [join(REPO_ROOT, 'scripts', 'bundle.cjs')], { stdio: 'ignore' });
  return undefined;
}

export const cudaLog = (v: ContainerdVersion): string => join(tmp, `cuda-${v}.log`);

/** The daemon environment: CRIU's, the fake libcuda with every log and hold, nvidia-smi and /proc stand-ins. */
export function daemonOptions(v: ContainerdVersion): StartOptions {
  const xdg = join(tmp, `xdg-${v}`);
  mkdirSync(xdg, { recursive: true });
  return {
    env: {
      ...CRIU_DAEMON_ENV, XDG_RUNTIME_DIR: xdg,
      KYBERNATE_LIBCUDA: fakeLib, FAKE_CUDA_LOG: cudaLog(v), FAKE_CUDA_LOG_FROZEN: '1', FAKE_CUDA_LOG_DONE: '1',
      FAKE_CUDA_MARKER: MARKER, FAKE_CUDA_HOLD_DIR: holdDir, FAKE_CUDA_STATE_DIR: stateDir,
      LD_PRELOAD: procLib, FAKE_NVIDIA_PROC: procDir,
      // The harness's PATH with the stand-ins first.
      PATH: [stubDir, join(REPO_ROOT, 'bin'), binDir(v), process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'].join(delimiter),
    },
  };
}

// --- holds: the fake stops every call of an operation after its log line until released ---

export function hold(op: string): void { writeFileSync(join(holdDir, op), ''); }
export function release(op: string): void { rmSync(join(holdDir, op), { force: true }); }
/** Every call of `op` takes `ms` longer (the test of many operations: long GPU steps overlap more). */
export function slow(op: string, ms: number): void { writeFileSync(join(holdDir, op), `${ms}\n`); }
export function releaseAll(): void { for (const f of readdirSync(holdDir)) rmSync(join(holdDir, f), { force: true }); }

// --- containers ---

const HOST_LIBDIR = '/usr/lib/x86_64-linux-gnu';
const HOST_SLEEP = '/usr/bin/sleep';

export function hostSleepMissing(): string | undefined {
  for (const f of [HOST_SLEEP, join(HOST_LIBDIR, 'ld-linux-x86-64.so.2')]) {
    if (!existsSync(f)) return `${f} not found (the container's processes run the host's sleep with the fake libcuda preloaded)`;
  }
  return undefined;
}

/**
 * Two CUDA processes (the init and a child) that map the fake libcuda: the host's sleep through the
 * host's loader with the fake preloaded from a read-only bind mount (the busybox image's sleep is static).
 */
const SLEEP = '/hostlib/ld-linux-x86-64.so.2 --library-path /hostlib --preload /kyb/libcuda.so.1 /hostbin/sleep 100000';
const MOUNTS = [
  '--mount', `type=bind,src=${HOST_LIBDIR},dst=/hostlib,options=rbind:ro`,
  '--mount', `type=bind,src=${HOST_SLEEP},dst=/hostbin/sleep,options=rbind:ro`,
  '--mount', `type=bind,src=${fakeDir},dst=/kyb,options=rbind:ro`,
];

/** Container pids as containerd lists them, sorted. */
export async function containerPids(cd: Containerd, id: string): Promise<number[]> {
  const out = await cd.ctrOk(['tasks', 'ps', id]);
  return out.split('\n').slice(1).map((l) => Number(l.trim().split(/\s+/)[0])).filter((n) => n > 0).sort((a, b) => a - b);
}

export async function startCuda(cd: Containerd, runtime: string, id: string): Promise<number[]> {
  await cd.ctrOk(['run', '-d', '--runtime', runtime, '--env', MARKER, ...MOUNTS, TEST_IMAGE, id, 'sh', '-c', `${SLEEP} & exec ${SLEEP}`]);
  await waitStatus(cd, id, 'RUNNING');
  return waitFor(`two processes mapping libcuda in ${id}`, async () => {
    const pids = await containerPids(cd, id);
    const mapped = pids.every((p) => { try { return readFileSync(`/proc/${p}/maps`, 'utf8').includes('libcuda.so'); } catch { return false; } });
    return pids.length === 2 && mapped ? pids : undefined;
  });
}

// --- the fake's call log ---

export interface DriverCall { kind: 'begin' | 'done'; op: string; pid: number; r?: number; frozen: string; line: string }

export function driverCalls(v: ContainerdVersion, pids: number[]): DriverCall[] {
  const text = existsSync(cudaLog(v)) ? readFileSync(cudaLog(v), 'utf8') : '';
  const want = new Set(pids);
  const out: DriverCall[] = [];
  for (const line of text.split('\n')) {
    const m = /^(done )?(lock|checkpoint|restore|unlock) pid=(\d+)\b.*?(?: r=(-?\d+))?(?: frozen=(-?\d+))?$/.exec(line);
    if (!m || !want.has(Number(m[3]))) continue;
    out.push({ kind: m[1] ? 'done' : 'begin', op: m[2]!, pid: Number(m[3]), r: m[4] === undefined ? undefined : Number(m[4]), frozen: m[5] ?? '?', line });
  }
  return out;
}

export const begins = (calls: DriverCall[], op?: string): DriverCall[] => calls.filter((c) => c.kind === 'begin' && (!op || c.op === op));

const NEXT: Record<string, Record<string, string>> = {
  running: { lock: 'locked' },
  locked: { checkpoint: 'checkpointed', unlock: 'running' },
  checkpointed: { restore: 'locked' },
};

/**
 * What the driver log of `pids` breaks of the rules one operation at a time keeps: per pid, no call
 * begins before the previous one returned; each call is legal in the state the successful earlier ones
 * left (running -lock-> locked -checkpoint-> checkpointed -restore-> locked -unlock-> running); every
 * call found its target thawed and, unless `failuresAllowed` (processes killed under an operation answer
 * with errors, and the fake then finds no cgroup for them: frozen=-1), succeeded. Empty when the log is clean.
 */
export function driverViolations(calls: DriverCall[], opts: { failuresAllowed?: boolean } = {}): string[] {
  const problems: string[] = [];
  const state = new Map<number, string>();
  const inFlight = new Map<number, string>();
  for (const c of calls) {
    // frozen=-1: the fake found no cgroup for the pid, so it had exited (killed under an operation).
    if (c.frozen === '1' || (c.frozen !== '0' && !(opts.failuresAllowed && c.frozen === '-1'))) {
      problems.push(`${c.line}: the target was not thawed`);
    }
    const s = state.get(c.pid) ?? 'running';
    if (c.kind === 'begin') {
      const busy = inFlight.get(c.pid);
      if (busy) problems.push(`pid ${c.pid}: ${c.op} began while ${busy} was still in flight`);
      inFlight.set(c.pid, c.op);
      if (!NEXT[s]?.[c.op]) problems.push(`pid ${c.pid}: ${c.op} while ${s}`);
    } else {
      inFlight.delete(c.pid);
      if (c.r === 0) state.set(c.pid, NEXT[s]?.[c.op] ?? s);
      else if (!opts.failuresAllowed) problems.push(`${c.line}: the driver answered ${c.r}`);
    }
  }
  return problems;
}

// --- operations, each settling to a result ---

/** gRPC status codes the tests name. */
export const Code = { OK: 0, CANCELLED: 1, NOT_FOUND: 5, FAILED_PRECONDITION: 9, ABORTED: 10, INTERNAL: 13, UNAVAILABLE: 14 } as const;
/** Codes a queue may refuse a racing operation with ("busy") instead of running it after the first. */
export const BUSY_CODES: number[] = [Code.ABORTED, Code.UNAVAILABLE];

export interface OpResult { ok: boolean; code: number; message: string; value?: unknown }

async function settle(p: Promise<unknown>): Promise<OpResult> {
  try {
    return { ok: true, code: 0, message: '', value: await p };
  } catch (err) {
    try {
      const f = callFailure(err);
      return { ok: false, code: f.code, message: f.details };
    } catch {
      const e = err as { status?: number; code?: unknown; message?: string };
      return { ok: false, code: typeof e.status === 'number' ? e.status : -1, message: String(e.message ?? err) };
    }
  }
}

/** The kybernate CLI with --json: ok, or the gRPC code it reports. */
export async function cli(cd: Containerd, ...args: string[]): Promise<OpResult> {
  let stdout = '';
  let stderr = '';
  try {
    ({ stdout, stderr } = await exec(process.execPath, [CLI, ...args, '-n', cd.namespace, '--state-dir', cd.state, '--json'], { timeout: 90_000 }));
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    stdout = e.stdout ?? '';
    stderr = e.stderr ?? '';
  }
  let j: { ok?: boolean; code?: number; error?: string; message?: string } = {};
  try {
    j = JSON.parse(stdout) as typeof j;
  } catch {
    return { ok: false, code: -1, message: `kybernate ${args.join(' ')}: no JSON: ${stdout}${stderr}` };
  }
  return { ok: j.ok === true, code: j.ok === true ? 0 : j.code ?? -1, message: j.error ?? j.message ?? stderr, value: j };
}

function withClient<T>(cd: Containerd, fn: (c: ContainerdClient) => Promise<T>): Promise<OpResult> {
  const c = new ContainerdClient(cd.address, cd.namespace);
  return settle(fn(c).finally(() => c.close()));
}

export const pause = (cd: Containerd, id: string): Promise<OpResult> => withClient(cd, (c) =>
  c.unary('/containerd.services.tasks.v1.Tasks/Pause', tasksApi.PauseTaskRequest, Empty, { containerId: id }));
export const resume = (cd: Containerd, id: string): Promise<OpResult> => withClient(cd, (c) =>
  c.unary('/containerd.services.tasks.v1.Tasks/Resume', tasksApi.ResumeTaskRequest, Empty, { containerId: id }));
export const kill = (cd: Containerd, id: string): Promise<OpResult> => withClient(cd, (c) =>
  c.unary('/containerd.services.tasks.v1.Tasks/Kill', tasksApi.KillRequest, Empty, { containerId: id, signal: 9, all: true }));
export const deleteTask = (cd: Containerd, id: string): Promise<OpResult> => withClient(cd, (c) =>
  c.unary('/containerd.services.tasks.v1.Tasks/Delete', tasksApi.DeleteTaskRequest, tasksApi.DeleteResponse, { containerId: id }));
/** Tasks.Get's status name (RUNNING, PAUSED, ...). */
export const state = (cd: Containerd, id: string): Promise<OpResult> => withClient(cd, async (c) => {
  const r = await c.unary('/containerd.services.tasks.v1.Tasks/Get', tasksApi.GetRequest, tasksApi.GetResponse, { containerId: id });
  return containerd.v1.types.Status[r.process?.status ?? 0];
});
export const pids = (cd: Containerd, id: string): Promise<OpResult> => withClient(cd, async (c) => {
  const r = await c.unary('/containerd.services.tasks.v1.Tasks/ListPids', tasksApi.ListPidsRequest, tasksApi.ListPidsResponse, { containerId: id });
  return r.processes.map((p) => Number(p.pid)).sort((a, b) => a - b);
});
export const update = (cd: Containerd, id: string, shares: number): Promise<OpResult> => withClient(cd, (c) =>
  c.unary('/containerd.services.tasks.v1.Tasks/Update', tasksApi.UpdateTaskRequest, Empty, {
    containerId: id,
    resources: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources', value: Buffer.from(JSON.stringify({ cpu: { shares } })) },
  }));

/** Checkpoint --leave-running of `id` into `dir` (checkpointToDir), settled. */
export function checkpoint(cd: Containerd, id: string, dir: string): Promise<OpResult> {
  return settle(checkpointToDir(cd, id, dir, false));
}

// --- snapshot directories ---

export interface Manifest {
  files: Array<{ name: string; size: number; sha256: string; chunks?: string[] }>;
  cuda: { pids: number[]; deviceMemoryBytes: number };
  options: { suspendedInPlace?: boolean };
}

const CHUNK = 64 * MIB;

/**
 * The manifest of a complete snapshot in `dir`, checked here independently of the product's reader: no
 * incomplete marker, every listed file there with its size and sha256 (hash lists for files above one
 * chunk), no image file it does not list. Throws naming what is wrong.
 */
export function completeSnapshot(dir: string): Manifest {
  if (existsSync(join(dir, 'kybernate-checkpoint.incomplete'))) throw new Error(`${dir}: marked incomplete`);
  const m = JSON.parse(readFileSync(join(dir, 'kybernate-manifest.json'), 'utf8')) as Manifest;
  for (const f of m.files) {
    const data = readFileSync(join(dir, f.name));
    if (data.length !== f.size) throw new Error(`${dir}: ${f.name} has ${data.length} bytes, the manifest says ${f.size}`);
    const hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    let got: string;
    if (!f.chunks) got = hex(data);
    else {
      const digests: Buffer[] = [];
      for (let o = 0; o < data.length; o += CHUNK) digests.push(createHash('sha256').update(data.subarray(o, o + CHUNK)).digest());
      got = hex(Buffer.concat(digests));
    }
    if (got !== f.sha256) throw new Error(`${dir}: ${f.name} does not match its sha256`);
  }
  const listed = new Set(m.files.map((f) => f.name));
  for (const name of readdirSync(dir)) {
    if (name.endsWith('.img') && !listed.has(name)) throw new Error(`${dir}: ${name} is not in the manifest`);
  }
  return m;
}

/** The regular files in `dir` ([] when it does not exist). */
export function filesIn(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => statSync(join(dir, n)).isFile());
}

export function freshDir(name: string): string {
  return mkdtempSync(join(tmp, `${name}-`));
}

export { prng } from './prng';
