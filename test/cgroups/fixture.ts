// Real cgroups and a real child process for the cgroup tests: creates kybernate-test-<rand>
// cgroups in every hierarchy we need (found through mountinfo), moves a Node child into them and
// drives it over stdin ("spin", "alloc", "hog"). Requires root.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cgroupMode, readMounts, unifiedControllers } from '../../src/shim/cgroups/hierarchy';

const CHILD_SCRIPT = `
const hold = [];
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const cmd = buf.slice(0, i); buf = buf.slice(i + 1);
    if (cmd === 'spin') { const end = Date.now() + 300; while (Date.now() < end) {} }
    if (cmd === 'alloc') hold.push(Buffer.alloc(8 << 20, 1));
    if (cmd === 'hog') for (;;) hold.push(Buffer.alloc(4 << 20, 1));
    process.stdout.write('ok\\n');
  }
});
process.stdout.write('ready\\n');
`;

export const V1_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'blkio'] as const;

/** Why the real-cgroup tests cannot run here, or undefined when they can. */
export function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to create cgroups';
  const mode = cgroupMode();
  const mounts = readMounts();
  if (mode === 'v2') {
    const root = mounts.find((m) => m.version === 2 && m.root === '/');
    if (!root) return 'no cgroup2 mount of the root cgroup';
    const have = unifiedControllers(root.mountPoint);
    const missing = ['memory', 'cpu', 'pids'].filter((c) => !have.includes(c));
    return missing.length ? `cgroup2 root lacks controllers: ${missing.join(', ')}` : undefined;
  }
  const missing = V1_CONTROLLERS.filter(
    (c) => !mounts.some((m) => m.version === 1 && m.root === '/' && m.controllers.includes(c)),
  );
  return missing.length ? `cgroup v1 hierarchies not mounted at their root: ${missing.join(', ')}` : undefined;
}

export interface TestCgroup {
  /** v1: controller → dir; v2: "unified" → dir. */
  dirs: Map<string, string>;
  mode: 'v1' | 'v2' | 'hybrid';
  /** Moves a pid into every directory of this cgroup. */
  add(pid: number): void;
  /** Sets a memory limit (bytes) with swap disabled for the cgroup. */
  limitMemory(bytes: number): void;
  remove(): Promise<void>;
}

export function createCgroup(): TestCgroup {
  const name = `kybernate-test-${randomBytes(4).toString('hex')}`;
  const mode = cgroupMode();
  const mounts = readMounts();
  const dirs = new Map<string, string>();
  if (mode === 'v2') {
    const root = mounts.find((m) => m.version === 2 && m.root === '/');
    if (!root) throw new Error('no cgroup2 root mount');
    // The root cgroup may hold processes and still delegate controllers to children.
    fs.writeFileSync(path.join(root.mountPoint, 'cgroup.subtree_control'), '+memory +cpu +pids');
    dirs.set('unified', path.join(root.mountPoint, name));
  } else {
    for (const c of V1_CONTROLLERS) {
      const m = mounts.find((x) => x.version === 1 && x.root === '/' && x.controllers.includes(c));
      if (m) dirs.set(c, path.join(m.mountPoint, name));
    }
  }
  for (const dir of new Set(dirs.values())) fs.mkdirSync(dir);
  return {
    dirs,
    mode,
    add(pid) {
      for (const dir of new Set(dirs.values())) fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
    },
    limitMemory(bytes) {
      if (mode === 'v2') {
        const dir = dirs.get('unified') as string;
        fs.writeFileSync(path.join(dir, 'memory.max'), String(bytes));
        if (fs.existsSync(path.join(dir, 'memory.swap.max'))) fs.writeFileSync(path.join(dir, 'memory.swap.max'), '0');
        return;
      }
      const dir = dirs.get('memory') as string;
      fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(bytes));
      // memsw exists only with swap accounting; it must be >= the memory limit.
      if (fs.existsSync(path.join(dir, 'memory.memsw.limit_in_bytes'))) {
        fs.writeFileSync(path.join(dir, 'memory.memsw.limit_in_bytes'), String(bytes));
      }
      fs.writeFileSync(path.join(dir, 'memory.swappiness'), '0');
    },
    async remove() {
      for (const dir of new Set(dirs.values())) {
        // A just-killed task can keep the cgroup busy for a moment.
        for (let attempt = 0; ; attempt++) {
          try {
            fs.rmdirSync(dir);
            break;
          } catch (err) {
            const code = (err as NodeJS.ErrnoException).code;
            if (code === 'ENOENT') break;
            if (attempt >= 50) throw err;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      }
    },
  };
}

export interface Child {
  proc: ChildProcessWithoutNullStreams;
  pid: number;
  send(cmd: 'spin' | 'alloc' | 'hog'): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(): Promise<void>;
}

export async function startChild(): Promise<Child> {
  const proc = spawn(process.execPath, ['-e', CHILD_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const lines: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  let buf = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  const nextLine = (): Promise<string> =>
    lines.length > 0
      ? Promise.resolve(lines.shift() as string)
      : new Promise((resolve, reject) => {
          waiters.push(resolve);
          void exited.then(({ code, signal }) => reject(new Error(`child exited (${code ?? signal})`)));
        });
  const ready = await nextLine();
  if (ready !== 'ready') throw new Error(`unexpected child output: ${ready}`);
  return {
    proc,
    pid: proc.pid as number,
    async send(cmd) {
      proc.stdin.write(`${cmd}\n`);
      const line = await nextLine();
      if (line !== 'ok') throw new Error(`unexpected child output: ${line}`);
    },
    exited,
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}
