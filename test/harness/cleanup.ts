// Removal of test containerd daemons and everything they leave behind: shims, containers,
// mounts, directories. Used by Containerd.stop() and, for runs that died without stopping
// their daemons, by cleanupLeftovers().
import { type ChildProcess, execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Every test daemon lives in a directory named `<base>/<DIR_PREFIX>XXXXXX`. */
export const DIR_PREFIX = 'kyb-ctd-';

/** Where the daemon directories go: short, because the gRPC socket path must stay under 108 bytes. */
export function daemonBaseDir(): string {
  const t = tmpdir();
  return t.length <= 40 ? t : '/tmp';
}

/** The runc shim keeps container state under /run/containerd/runc/<namespace>, for every daemon. */
const RUNC_STATE = '/run/containerd/runc';

interface RunResult { code: number; stdout: string; stderr: string }

export function runTool(file: string, args: string[], timeoutMs = 15_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stdout, stderr: stderr || (err ? err.message : '') });
      });
  });
}

/** "<pid> <start time in clock ticks>": identifies a process across pid reuse. */
export function processIdentity(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may contain spaces and parentheses; the fields after its closing ')' do not.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return `${pid} ${fields[19]}`;
  } catch {
    return undefined;
  }
}

/** Pids (other than ours) whose command line mentions `needle`. */
export function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (cmdline.includes(needle)) pids.push(Number(name));
    } catch {
      // The process exited while we were looking.
    }
  }
  return pids;
}

function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const points = readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map(unescapeMountPath)
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

export async function unmountUnder(dir: string): Promise<void> {
  for (const point of mountsUnder(dir)) {
    // Lazy: a mount still held by a dying process must not keep the directory alive.
    await runTool('umount', ['-l', point]);
  }
}

interface RuncContainer { id: string; bundle: string; status: string }

/** Kills and deletes runc containers whose bundle lies below `dir` (shims killed too early leave them). */
export async function killRuncContainersUnder(dir: string, roots: string[] = runcRoots()): Promise<void> {
  for (const root of roots) {
    const ls = await runTool('runc', ['--root', root, 'list', '--format', 'json']);
    if (ls.code !== 0) continue;
    let list: RuncContainer[] = [];
    try {
      list = (JSON.parse(ls.stdout || '[]') as RuncContainer[] | null) ?? [];
    } catch {
      continue;
    }
    for (const c of list.filter((x) => x.bundle.startsWith(`${dir}/`))) {
      await runTool('runc', ['--root', root, 'kill', '--all', c.id, 'KILL']);
      await runTool('runc', ['--root', root, 'delete', '--force', c.id]);
    }
  }
}

function runcRoots(): string[] {
  if (!existsSync(RUNC_STATE)) return [];
  return readdirSync(RUNC_STATE).map((ns) => join(RUNC_STATE, ns));
}

/**
 * runc roots kept below `dir`, at most three levels down: a test dockerd's exec root (test/harness/docker.ts)
 * holds runtime-runc/<namespace>, the Root it gives its runc runtime.
 */
function runcRootsBelow(dir: string, depth = 3): string[] {
  const out: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return out;
  }
  for (const name of entries) {
    if (name === 'runtime-runc') out.push(...readdirSync(join(dir, name)).map((ns) => join(dir, name, ns)));
    else if (depth > 1) out.push(...runcRootsBelow(join(dir, name), depth - 1));
  }
  return out;
}

/** True while `pid` exists and is not a zombie (a killed process whose parent has not reaped it yet). */
export function processAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`) && !isZombie(pid);
}

async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = pids;
  while (alive.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    alive = alive.filter(processAlive);
  }
  return alive;
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * Leaves no trace of the daemon directory `dir`: kills its containers and every process whose
 * command line names the directory (containerd, shims), unmounts what is mounted below it and
 * removes it. Safe to call on a directory whose daemon is already stopped.
 */
export async function removeDaemonDir(dir: string): Promise<void> {
  await killRuncContainersUnder(dir, [...runcRoots(), ...runcRootsBelow(dir)]);
  const pids = processesMentioning(dir);
  for (const pid of pids) kill(pid, 'SIGKILL');
  await waitGone(pids, 5_000);
  await unmountUnder(dir);
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** The file in a daemon directory that names the test process owning it. */
export const OWNER_FILE = 'owner';

function ownerAlive(dir: string): boolean {
  let owner: string;
  try {
    owner = readFileSync(join(dir, OWNER_FILE), 'utf8').trim();
  } catch {
    // The owner file is written right after the directory is made: a young directory without
    // one belongs to a process that is still setting it up.
    try {
      return Date.now() - statSync(dir).mtimeMs < 60_000;
    } catch {
      return false;
    }
  }
  return processIdentity(Number(owner.split(' ')[0])) === owner;
}

/**
 * Removes daemon directories (with their processes, containers and mounts) whose owning test
 * process is gone: leftovers of runs that crashed or were killed. Directories of live test
 * processes, this one included, are left alone. Returns the directories removed.
 */
export async function cleanupLeftovers(base: string = daemonBaseDir()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of readdirSync(base)) {
    if (!name.startsWith(DIR_PREFIX)) continue;
    const dir = join(base, name);
    if (ownerAlive(dir)) continue;
    await removeDaemonDir(dir);
    removed.push(dir);
  }
  return removed;
}

/**
 * Ends a daemon the harness started: SIGTERM to the pid only (never the group: shims and containers must
 * outlive containerd, as they do under systemd), SIGKILL after `graceMs`; resolves once it exited.
 */
export async function terminate(child: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
