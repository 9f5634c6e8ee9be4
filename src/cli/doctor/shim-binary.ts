// Can containerd find our shim? `ctr run --runtime io.containerd.kybernate.v2` fails with "binary not
// installed" when it cannot. The lookup is containerd's own (1.6 and 1.7 runtime/v2/manager.go, 2.x
// core/runtime/v2/shim_manager.go, resolveRuntimePath; shim.BinaryName), done with the running containerd's
// environment read from /proc/<pid>: its working directory, its PATH, the directory of its executable.
import fs from 'node:fs';
import path from 'node:path';
import { RUNTIME_NAME } from '../../version';
import type { CheckResult } from './result';

export const DEFAULT_ADDRESS = '/run/containerd/containerd.sock';
const INSTALL_DIR = '/usr/local/bin'; // `make install`'s $(PREFIX)/bin

/** shim.BinaryName: "io.containerd.kybernate.v2" → "containerd-shim-kybernate-v2"; undefined for an invalid name. */
export function binaryName(runtime: string): string | undefined {
  const parts = runtime.split('.');
  if (parts.length < 2 || parts[0] === '') return undefined;
  return `containerd-shim-${parts[parts.length - 2]}-${parts[parts.length - 1]}`;
}

/** What of a containerd process the lookup depends on. Paths are as that process sees them. */
export interface LookupEnv {
  pid?: number;
  /** Prefix under which its paths are read here: /proc/<pid>/root for a process, '' for this one's view. */
  root: string;
  cwd: string;
  /** Its PATH; undefined when it has none (then nothing is found on it, as with Go's exec.LookPath). */
  path: string | undefined;
  exe: string | undefined;
}

export interface Lookup {
  binary: string;
  found?: string;
  /** How it was found: 'cwd', 'PATH' or 'beside containerd'. */
  via?: string;
  /** Where it was looked for, in order. */
  tried: string[];
}

function exists(root: string, p: string): boolean {
  try {
    fs.statSync(root + p);
    return true;
  } catch {
    return false;
  }
}

/** Go's exec.LookPath test: a file (not a directory) with an execute bit, symlinks followed. */
function executable(root: string, p: string): boolean {
  try {
    const st = fs.statSync(root + p);
    return !st.isDirectory() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** resolveRuntimePath for a runtime name, step by step. */
export function lookupShim(runtime: string, env: LookupEnv): Lookup {
  const binary = binaryName(runtime);
  if (binary === undefined) return { binary: runtime, tried: [] };
  const tried: string[] = [];
  // shim.BinaryPath: filepath.Dir(runtime) is "." for a name, so containerd's working directory (stat only).
  const inCwd = path.resolve(env.cwd, binary);
  tried.push(inCwd);
  if (exists(env.root, inCwd)) return { binary, found: inCwd, via: 'cwd', tried };
  // exec.LookPath: PATH's entries in order; an empty one is ".", relative ones count from the cwd.
  for (const dir of env.path === undefined || env.path === '' ? [] : env.path.split(':')) {
    const p = path.resolve(env.cwd, dir === '' ? '.' : dir, binary);
    tried.push(p);
    if (executable(env.root, p)) return { binary, found: p, via: 'PATH', tried };
  }
  // Last, the directory of containerd's own executable (stat only).
  if (env.exe !== undefined) {
    const beside = path.join(path.dirname(env.exe), binary);
    tried.push(beside);
    if (exists(env.root, beside)) return { binary, found: beside, via: 'beside containerd', tried };
  }
  return { binary, tried };
}

/** The pid of the process listening on the unix socket `address`, from /proc/net/unix and /proc/<pid>/fd. */
export function listenerPid(address: string): number | undefined {
  const want = path.resolve(address.replace(/^unix:\/\//, ''));
  const inodes = new Set<string>();
  for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 (__SO_ACCEPTCON) marks a listener.
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f.slice(7).join(' ') === want && (parseInt(f[3]!, 16) & 0x10000) !== 0) inodes.add(f[6]!);
  }
  if (inodes.size === 0) return undefined;
  const holders: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = fs.readlinkSync(`/proc/${entry}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1]!)) {
        holders.push(Number(entry));
        break;
      }
    }
  }
  // Children may inherit the listener; the daemon is the holder named containerd.
  return holders.find((pid) => comm(pid) === 'containerd') ?? holders[0];
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** A running process's lookup environment. */
export function processEnv(pid: number): LookupEnv {
  const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  const pathVar = environ.find((e) => e.startsWith('PATH='));
  let exe: string | undefined;
  try {
    exe = fs.readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
  } catch {
    exe = undefined;
  }
  return { pid, root: `/proc/${pid}/root`, cwd: fs.readlinkSync(`/proc/${pid}/cwd`), path: pathVar?.slice(5), exe };
}

/** The doctor's check: the containerd listening on `address`, or, when none is, this shell's view. */
export function shimBinaryCheck(address: string, containerdOnPath: string | undefined): CheckResult {
  const name = 'shim binary';
  let env: LookupEnv;
  let who: string;
  const pid = listenerPid(address);
  if (pid !== undefined) {
    try {
      env = processEnv(pid);
    } catch (err) {
      return { name, status: 'WARN', value: `cannot read containerd's environment (pid ${pid}): ${(err as Error).message}`,
        fix: 'run kybernate doctor as root', required: false };
    }
    who = `containerd (pid ${pid}, ${address})`;
  } else {
    // systemd starts containerd in / with the unit's PATH; this shell's PATH is the best guess left.
    env = { root: '', cwd: '/', path: process.env.PATH, exe: containerdOnPath };
    who = `containerd (not running at ${address}; this shell's PATH assumed)`;
  }
  const r = lookupShim(RUNTIME_NAME, env);
  const data = { runtime: RUNTIME_NAME, binary: r.binary, containerdPid: pid ?? null, path: env.path ?? null, found: r.found ?? null, tried: r.tried };
  if (r.found !== undefined) {
    return { name, status: 'OK', value: `${r.found} (${r.via}; as ${who} finds ${RUNTIME_NAME})`, required: true, data };
  }
  // Only a running containerd's own environment is certain; without one this is a warning.
  const certain = pid !== undefined;
  return {
    name,
    status: certain ? 'FAIL' : 'WARN',
    value: `${who} cannot find ${r.binary} for ${RUNTIME_NAME} (ctr/CRI fail with "binary not installed"); ` +
      `PATH searched: ${env.path ?? '(unset)'}`,
    fix: installFix(r.binary, env),
    required: certain,
    data,
  };
}

function installFix(binary: string, env: LookupEnv): string {
  const restart = 'then restart containerd';
  const unitPath = 'systemd: a drop-in for containerd.service with Environment="PATH=...", systemctl daemon-reload';
  const installed = [path.join(INSTALL_DIR, binary), ...(process.env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, binary))]
    .find((p) => executable('', p));
  const onContainerdPath = (env.path ?? '').split(':').find((d) => d.startsWith('/'));
  if (installed !== undefined) {
    return `${installed} exists but is not on containerd's PATH: add ${path.dirname(installed)} to containerd's PATH ` +
      `(${unitPath}), ${restart}; or ln -s ${installed} ${onContainerdPath ?? '/usr/bin'}/`;
  }
  return `run \`make install\` (installs ${path.join(INSTALL_DIR, binary)}) with ${INSTALL_DIR} on containerd's PATH ` +
    `(${unitPath}), ${restart}; or put ${binary} in a directory of containerd's PATH`;
}
