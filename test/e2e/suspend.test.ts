// GPU suspend in place through real containerd, the kybernate shim and the bundled `kybernate` CLI,
// without a GPU: the shim loads the fake libcuda.so.1 (test/native/fixtures/fake-libcuda.c) through
// KYBERNATE_LIBCUDA, which containerd passes on to its shims. The fake logs each driver call with the
// target's cgroup freeze state read independently (FAKE_CUDA_LOG_FROZEN), and only processes started
// with HAS_CUDA=1 in their environment have CUDA state (FAKE_CUDA_MARKER).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { kybernate as pb } from '../../src/gen/proto';
import { RUNC_RUNTIME, REPO_ROOT, type Containerd, type ContainerdVersion } from './support/harness';
import { describeMatrix } from './support/matrix';
import { alive, runDetached, task, waitFor, waitStatus } from './support/ctr';
import { watchEvents } from './support/grpc';

const exec = promisify(execFile);
const CLI = join(REPO_ROOT, 'dist', 'kybernate.cjs');
const ADDON = join(REPO_ROOT, 'build', 'Release', 'kybernate.node');
const MARKER = 'HAS_CUDA=1';

const tmp = mkdtempSync(join(tmpdir(), 'kyb-suspend-'));
const fake = join(tmp, 'libcuda-fake.so.1');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function prepare(): string | undefined {
  if (!existsSync(ADDON)) return 'the addon is not built (make build)';
  try {
    execFileSync('cc', ['-shared', '-fPIC', '-o', fake, join(REPO_ROOT, 'test', 'native', 'fixtures', 'fake-libcuda.c')]);
  } catch (err) {
    return `cannot build the fake libcuda with cc: ${(err as Error).message.split('\n')[0]}`;
  }
  // The shim and the CLI from this tree (the shim bundle also carries dist/kybernate.node).
  execFileSync(process.execPath, [join(REPO_ROOT, 'scripts', 'bundle.cjs')], { stdio: 'ignore' });
  return undefined;
}
const lacks = prepare();
const cudaLog = (v: ContainerdVersion) => join(tmp, `cuda-${v}.log`);

interface Run { code: number; stdout: string; stderr: string }

async function cli(cd: Containerd, ...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [CLI, ...args, '-n', cd.namespace, '--state-dir', cd.state],
      { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

async function cliJson<T>(cd: Containerd, ...args: string[]): Promise<T> {
  const r = await cli(cd, ...args, '--json');
  if (r.code !== 0) throw new Error(`kybernate ${args.join(' ')}: exit ${r.code}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** The container's pids as containerd lists them (Task.Pids). */
async function containerPids(cd: Containerd, id: string): Promise<number[]> {
  const out = await cd.ctrOk(['tasks', 'ps', id]);
  return out.split('\n').slice(1).map((l) => Number(l.trim().split(/\s+/)[0])).filter((n) => n > 0).sort((a, b) => a - b);
}

/** 'FROZEN' / 'THAWED' from the v1 freezer, '1' / '0' from v2's cgroup.freeze: read here, not by the shim. */
function freezeState(pid: number): string {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const v1 = lines.find((l) => l.split(':')[1] === 'freezer');
  if (v1) return readFileSync(`/sys/fs/cgroup/freezer${v1.split(':')[2]}/freezer.state`, 'utf8').trim() === 'THAWED' ? 'thawed' : 'frozen';
  const group = lines.find((l) => l.startsWith('0::'))!.slice(3);
  const file = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].map((r) => `${r}${group}/cgroup.freeze`).find(existsSync)!;
  return readFileSync(file, 'utf8').trim() === '1' ? 'frozen' : 'thawed';
}

function logLines(v: ContainerdVersion, pids: number[]): string[] {
  const text = existsSync(cudaLog(v)) ? readFileSync(cudaLog(v), 'utf8') : '';
  return text.split('\n').filter((l) => pids.some((p) => l.includes(` pid=${p} `)));
}

interface StepJson { step: string; pid: number; ms: number }
interface SuspendJson { ok: boolean; pids: number[]; steps: StepJson[]; skipped: unknown[]; durationMs: number }
interface StatusJson { ok: boolean; suspended: boolean; suspendedAt: string | null; cudaPids: number[]; taskStatus: string }

/** Two CUDA processes (pid 1 and a child), neither of which forks again. */
const TWO_PROCESSES = ['sh', '-c', 'sleep 100000 & exec sleep 100000'];

async function startCuda(cd: Containerd, runtime: string, id: string, env: string[] = ['--env', MARKER]): Promise<number[]> {
  await runDetached(cd, runtime, id, TWO_PROCESSES, env);
  return waitFor(`two processes in ${id}`, async () => {
    const pids = await containerPids(cd, id);
    return pids.length === 2 ? pids : undefined;
  });
}

describeMatrix('suspend', (ctx) => {
  it('suspend checkpoints every CUDA process, then freezes; resume thaws, then restores; status and events follow', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('gpu');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const events = await watchEvents(cd.address, cd.namespace);
    try {
      expect(await cliJson<StatusJson>(cd, 'gpu-status', id)).toMatchObject({ suspended: false, suspendedAt: null, cudaPids: [], taskStatus: 'running' });

      const s = await cliJson<SuspendJson>(cd, 'suspend', id);
      expect(s.ok).toBe(true);
      expect([...s.pids].sort((a, b) => a - b)).toEqual(pids);
      expect(s.skipped).toEqual([]);
      const names = s.steps.map((x) => `${x.step}:${x.pid}`);
      for (const pid of pids) expect(names).toEqual(expect.arrayContaining([`cuda-lock:${pid}`, `cuda-checkpoint:${pid}`]));
      expect(names[0]).toBe('find:0');
      expect(names[names.length - 1]).toBe('freeze:0');

      expect((await task(cd, id))?.status).toBe('PAUSED');
      for (const pid of pids) expect(freezeState(pid)).toBe('frozen');
      // Every driver call found its target thawed; all locks came before the first checkpoint.
      const suspended = logLines(version, pids);
      expect(suspended).toHaveLength(4);
      expect(suspended.map((l) => l.split(' ')[0])).toEqual(['lock', 'lock', 'checkpoint', 'checkpoint']);
      for (const l of suspended) expect(l).toMatch(/ dirty=0 frozen=0$/);
      for (const pid of pids) expect(suspended).toContain(`lock pid=${pid} timeoutMs=10000 dirty=0 frozen=0`);

      const st = await cliJson<StatusJson>(cd, 'gpu-status', id);
      expect(st).toMatchObject({ suspended: true, taskStatus: 'paused' });
      expect([...st.cudaPids].sort((a, b) => a - b)).toEqual(pids);
      expect(Date.now() - Date.parse(st.suspendedAt!)).toBeGreaterThanOrEqual(0);

      const ev = await events.waitFor((e) => e.topic === '/kybernate/suspended', 10_000);
      expect(ev.typeUrl).toBe('kybernate.events.v1.ContainerSuspended');
      const decoded = pb.events.v1.ContainerSuspended.decode(ev.value);
      expect(decoded.containerId).toBe(id);
      expect([...decoded.pids].sort((a, b) => a - b)).toEqual(pids);

      const twice = await cli(cd, 'suspend', id);
      expect(twice.code).toBe(1);
      expect(twice.stderr).toMatch(new RegExp(`^kybernate: container ${id} is suspended already \\(since `));

      const r = await cliJson<SuspendJson>(cd, 'resume', id);
      expect([...r.pids].sort((a, b) => a - b)).toEqual(pids);
      const rnames = r.steps.map((x) => `${x.step}:${x.pid}`);
      expect(rnames[0]).toBe('thaw:0');
      for (const pid of pids) expect(rnames).toEqual(expect.arrayContaining([`cuda-restore:${pid}`, `cuda-unlock:${pid}`]));
      expect((await task(cd, id))?.status).toBe('RUNNING');
      for (const pid of pids) {
        expect(freezeState(pid)).toBe('thawed');
        expect(alive(pid)).toBe(true);
      }
      const resumed = logLines(version, pids).slice(4);
      expect(resumed.map((l) => l.split(' ')[0])).toEqual(['restore', 'restore', 'unlock', 'unlock']);
      for (const l of resumed) expect(l).toMatch(/ frozen=0$/);

      const rev = await events.waitFor((e) => e.topic === '/kybernate/resumed', 10_000);
      expect(pb.events.v1.ContainerResumed.decode(rev.value).containerId).toBe(id);
      expect(await cliJson<StatusJson>(cd, 'gpu-status', id)).toMatchObject({ suspended: false, cudaPids: [], taskStatus: 'running' });

      const again = await cli(cd, 'resume', id);
      expect(again.code).toBe(1);
      expect(again.stderr).toBe(`kybernate: container ${id} is not suspended\n`);

      // A second round works the same (the driver state went back to RUNNING).
      expect((await cliJson<SuspendJson>(cd, 'suspend', id)).pids).toHaveLength(2);
      expect((await cliJson<SuspendJson>(cd, 'resume', id)).pids).toHaveLength(2);
    } finally {
      events.close();
    }
  });

  it('prints a step table without --json', async () => {
    const { cd } = ctx;
    const id = ctx.id('table');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    const s = await cli(cd, 'suspend', id);
    expect(s.code).toBe(0);
    expect(s.stdout).toMatch(new RegExp(`^suspended container ${id}: GPU state of 2 processes \\(\\d+, \\d+\\) in host memory, container frozen \\(`));
    expect(s.stdout).toMatch(/STEP\s+PID\s+TIME/);
    for (const pid of pids) expect(s.stdout).toMatch(new RegExp(`cuda-checkpoint\\s+${pid}\\s+[\\d.]+ ms`));
    const st = await cli(cd, 'gpu-status', id);
    expect(st.stdout).toMatch(new RegExp(`^container ${id}: suspended since \\d{4}-.*Z \\(CUDA pids \\d+, \\d+; task paused\\)\n$`));
    const r = await cli(cd, 'resume', id);
    expect(r.stdout).toMatch(new RegExp(`^resumed container ${id}: GPU state of 2 processes .* back on the GPU`));
    expect(r.stdout).toMatch(/thaw\s+-\s+[\d.]+ ms/);
  });

  it('refuses a container without CUDA processes and leaves it running', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('nocuda');
    const pids = await startCuda(cd, ctx.rt.runtime, id, []);
    const r = await cli(cd, 'suspend', id);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^kybernate: container ${id} has no CUDA processes \\(\\d+: no CUDA state \\(getRestoreThreadId pid \\d+: CUDA_ERROR_NOT_INITIALIZED`));
    expect((await task(cd, id))?.status).toBe('RUNNING');
    expect(logLines(version, pids)).toEqual([]);
    const j = await cli(cd, 'suspend', id, '--json');
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, code: 9 /* FAILED_PRECONDITION */ });
  });

  it('names unknown containers, stopped ones and containers of another runtime', async () => {
    const { cd } = ctx;
    const unknown = await cli(cd, 'suspend', 'no-such-container');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain(`container no-such-container has no running task in namespace ${cd.namespace}`);

    const bad = await cli(cd, 'suspend', '../x');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('invalid container id "../x"');

    const stopped = ctx.id('stopped');
    await cd.ctrOk(['run', '-d', '--runtime', ctx.rt.runtime, '--env', MARKER, 'docker.io/library/busybox:kybernate-test', stopped, 'true']);
    await waitStatus(cd, stopped, 'STOPPED');
    const s = await cli(cd, 'suspend', stopped);
    expect(s.code).toBe(1);
    expect(s.stderr).toBe(`kybernate: cannot suspend container ${stopped}: it is stopped\n`);

    const runc = ctx.id('runc');
    await runDetached(cd, RUNC_RUNTIME, runc, ['sleep', '100000']);
    const other = await cli(cd, 'gpu-status', runc);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(`container ${runc} is not run by the kybernate runtime`);
  });

  it('ctr tasks resume of a suspended container thaws it and restores its GPU state', async () => {
    const { cd, version } = ctx;
    const id = ctx.id('ctr-resume');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    await cliJson<SuspendJson>(cd, 'suspend', id);
    await cd.ctrOk(['tasks', 'resume', id]);
    expect((await task(cd, id))?.status).toBe('RUNNING');
    const lines = logLines(version, pids).slice(4);
    expect(lines.map((l) => l.split(' ')[0])).toEqual(['restore', 'restore', 'unlock', 'unlock']);
    for (const l of lines) expect(l).toMatch(/ frozen=0$/);
    expect(await cliJson<StatusJson>(cd, 'gpu-status', id)).toMatchObject({ suspended: false, taskStatus: 'running' });
  });

  it('a suspended container can be killed and deleted', async () => {
    const { cd } = ctx;
    const id = ctx.id('kill');
    const pids = await startCuda(cd, ctx.rt.runtime, id);
    await cliJson<SuspendJson>(cd, 'suspend', id);
    expect((await task(cd, id))?.status).toBe('PAUSED');
    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGKILL', id]);
    await waitStatus(cd, id, 'STOPPED');
    for (const pid of pids) await waitFor(`pid ${pid} to exit`, () => !alive(pid));
    const st = await cliJson<StatusJson>(cd, 'gpu-status', id);
    expect(st).toMatchObject({ suspended: false, taskStatus: 'stopped' });
    await cd.ctrOk(['tasks', 'rm', id]);
    expect(await task(cd, id)).toBeUndefined();
  });
}, {
  runtimes: ['kybernate'],
  skip: () => lacks,
  start: (v) => ({
    env: {
      KYBERNATE_LIBCUDA: fake, FAKE_CUDA_LOG: cudaLog(v), FAKE_CUDA_LOG_FROZEN: '1', FAKE_CUDA_MARKER: MARKER,
    },
  }),
});
