// The stock path the container suite compares against: the same container run by runc directly (no
// containerd, no shim), `runc checkpoint`/`runc restore` with CRIU, and the CUDA driver's checkpoint
// calls from raw-checkpoint.c on the container's host pid. Plus the small process helpers both paths use.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as readline from 'node:readline';

export interface ExecResult { code: number; stdout: string; stderr: string; ms: number }

/** Runs a program to its end (argument array, no shell); ms is its wall time. */
export function exec(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(file, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => err.push(Buffer.from(String(e))));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms: performance.now() - t0 });
    });
  });
}

export async function execOk(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<ExecResult> {
  const r = await exec(file, args, opts);
  if (r.code !== 0) throw new Error(`${path.basename(file)} ${args.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-2000)}`);
  return r;
}

export async function gpuUsedMiB(): Promise<number> {
  const r = await exec('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits']);
  return Number(r.stdout.trim().split('\n')[0]);
}

/**
 * raw-checkpoint.c on one pid: cuInit happens before "ready" (outside every timing, as the shim's own
 * cuInit happens once per shim), then each suspend/resume answers one JSON line of driver milliseconds.
 */
export class RawDriver {
  private readonly lines: string[] = [];
  private waiter?: () => void;
  private readonly child;

  constructor(binary: string, readonly pid: number) {
    this.child = spawn(binary, [String(pid)], { stdio: ['pipe', 'pipe', 'inherit'] });
    readline.createInterface({ input: this.child.stdout }).on('line', (l) => {
      this.lines.push(l);
      this.waiter?.();
    });
  }

  private async next(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.child.exitCode !== null) throw new Error(`raw-checkpoint ${this.pid} exited ${this.child.exitCode}`);
      if (Date.now() > deadline) throw new Error(`raw-checkpoint ${this.pid}: no answer within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 100);
      });
    }
    return this.lines.shift()!;
  }

  async ready(): Promise<void> {
    const l = await this.next(60_000);
    if (l !== 'ready') throw new Error(`raw-checkpoint: ${l}`);
  }

  private async step(cmd: string): Promise<Record<string, number>> {
    this.child.stdin.write(`${cmd}\n`);
    const o = JSON.parse(await this.next(120_000)) as Record<string, number> & { error?: string };
    if (o.error) throw new Error(`raw-checkpoint ${cmd} ${this.pid}: ${o.error}`);
    return o;
  }

  /** lock (10 s timeout) + checkpoint: { lockMs, checkpointMs } */
  suspend(): Promise<Record<string, number>> {
    return this.step('suspend');
  }

  /** restore + unlock: { restoreMs, unlockMs } */
  resume(): Promise<Record<string, number>> {
    return this.step('resume');
  }

  close(): void {
    this.child.stdin.end();
  }
}

// The container's stdio must be plain pipes: CRIU dumps a pipe whose other end is outside the container,
// and `runc restore` hands its own stdio pipes in for them (inherit-fd); a socketpair (what node's
// spawn() makes) would be an external unix socket, a host file an unreachable path. bash's process
// substitution makes pipes: stdin from a writer that exits (EOF), stdout/stderr into cat >> log.
// cat's own stdout/stderr must not be ours: it outlives bash, and spawn() would wait for it.
const PIPED = 'log=$1; shift; exec "$@" < <(exec true) > >(exec cat >> "$log" 2>/dev/null) 2>&1';

async function piped(log: string, file: string, args: string[], env: NodeJS.ProcessEnv): Promise<ExecResult> {
  const r = await exec('bash', ['-c', PIPED, 'bash', log, file, ...args], { env });
  if (r.code !== 0) {
    await new Promise((res) => setTimeout(res, 200));
    let tail = '';
    try { tail = fs.readFileSync(log, 'utf8').slice(-2000); } catch { /* none */ }
    throw new Error(`${path.basename(file)} ${args.join(' ')} exited ${r.code}: ${tail.trim()}`);
  }
  return r;
}

export class StockRunc {
  constructor(readonly runc: string, readonly root: string, readonly env: NodeJS.ProcessEnv) {}

  private args(...a: string[]): string[] {
    return ['--root', this.root, ...a];
  }

  async run(id: string, bundle: string, log: string): Promise<ExecResult> {
    return piped(log, this.runc, this.args('run', '-d', '--bundle', bundle, id), this.env);
  }

  /** `runc run` in the foreground (the container's exit status is runc's); output appended to log. */
  async runToEnd(id: string, bundle: string, log: string): Promise<ExecResult> {
    return exec('bash', ['-c', PIPED, 'bash', log, this.runc, ...this.args('run', '--bundle', bundle, id)], { env: this.env, timeoutMs: 120_000 });
  }

  async pid(id: string): Promise<number> {
    const r = await execOk(this.runc, this.args('state', id), { env: this.env });
    return (JSON.parse(r.stdout) as { pid: number }).pid;
  }

  async checkpoint(id: string, images: string, work: string): Promise<ExecResult> {
    fs.mkdirSync(work, { recursive: true });
    return execOk(this.runc, this.args('checkpoint', '--image-path', images, '--work-path', work, id), { env: this.env });
  }

  async restore(id: string, bundle: string, images: string, work: string, log: string): Promise<ExecResult> {
    fs.mkdirSync(work, { recursive: true });
    return piped(log, this.runc, this.args('restore', '-d', '--image-path', images, '--work-path', work, '--bundle', bundle, id), this.env);
  }

  async remove(id: string): Promise<void> {
    await exec(this.runc, this.args('kill', id, 'KILL'), { env: this.env });
    for (let i = 0; i < 50; i++) {
      const r = await exec(this.runc, this.args('delete', '--force', id), { env: this.env });
      if (r.code === 0 || /does not exist|not exist/.test(r.stderr)) return;
      await new Promise((res) => setTimeout(res, 100));
    }
  }
}

/** cgroup v2 freeze/thaw of a container's cgroup; resolves once cgroup.events says so. */
export async function setFrozen(cgroupDir: string, frozen: boolean): Promise<number> {
  const t0 = performance.now();
  fs.writeFileSync(path.join(cgroupDir, 'cgroup.freeze'), frozen ? '1' : '0');
  const want = `frozen ${frozen ? 1 : 0}`;
  const deadline = Date.now() + 10_000;
  while (!fs.readFileSync(path.join(cgroupDir, 'cgroup.events'), 'utf8').includes(want)) {
    if (Date.now() > deadline) throw new Error(`${cgroupDir}: not ${want} after 10 s`);
    await new Promise((r) => setTimeout(r, 1));
  }
  return performance.now() - t0;
}

/** The cgroup v2 directory of a process: its "0::/path" entry under this host's cgroup2 mount. */
export function cgroupDirOf(pid: number): string {
  const line = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (!line) throw new Error(`pid ${pid}: no cgroup v2 entry`);
  // mountinfo: "... <mount point> ... - cgroup2 ..."; /sys/fs/cgroup on v2 hosts, .../unified on hybrid ones.
  const mount = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .find((l) => / - cgroup2 /.test(l))?.split(' ')[4] ?? '/sys/fs/cgroup';
  return path.join(mount, line.slice(3));
}

export function dirBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p);
    else if (e.isFile()) total += fs.statSync(p).size;
  }
  return total;
}
