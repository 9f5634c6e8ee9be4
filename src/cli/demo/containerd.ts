// The demo's containerd: the local one when it answers and can start our shim, otherwise a private one
// (private-containerd.ts) for the demo's duration.
//
// "Can start our shim": containerd resolves `--runtime io.containerd.kybernate.v2` to the binary
// containerd-shim-kybernate-v2 on its own PATH, else beside its own executable. Both are read from the
// running containerd (/proc/<pid>/environ and /proc/<pid>/exe), the process that owns the listening socket.
// Where that process cannot be seen (another pid namespace) our own PATH stands in for its.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ContainerdClient } from '../../containerd/client';
import { KybernateError } from '../../errors';
import { toolVersion } from '../../host/versions';
import type { CtrTarget } from './ctr';
import { SHIM_BINARY, SYSTEM_PATH, depsFile, isExecutable, lookPath } from './paths';
import { startPrivateContainerd, usableSnapshotter } from './private-containerd';

export interface DemoContainerd extends CtrTarget {
  address: string;
  /** containerd's state directory (the agent's --containerd-state). */
  state: string;
  root: string;
  /** true: started for the demo, stop() takes it down with everything in it. */
  private: boolean;
  /** containerd's version, e.g. "2.1.4". */
  version: string;
  /** Why a private containerd was started (the local one's problem), for the demo to say. */
  note?: string;
  /** Private: removes its containers, stops it, removes its directories. Local: nothing. */
  stop(): Promise<void>;
}

export interface ContainerdOptions {
  /** The local containerd's socket; default $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock. */
  address?: string;
  /** Skip the local containerd. */
  private?: boolean;
  /** The private containerd's socket, state and config go to <runDir>/containerd; default /run/kybernate-demo. */
  runDir?: string;
  /** Its root (images, snapshots) goes to <stateDir>/containerd; default /var/lib/kybernate-demo. */
  stateDir?: string;
  /** The private containerd's binary; default .deps/containerd-2.1/bin/containerd, else /usr/bin/containerd. */
  containerd?: string;
  /** Extra environment for a private containerd and so its shims (e.g. KYBERNATE_CRIU_NO_BREAKPOINTS=1). */
  env?: Record<string, string>;
}

const DEFAULT_ADDRESS = '/run/containerd/containerd.sock';

export async function findOrStartContainerd(opts: ContainerdOptions = {}): Promise<DemoContainerd> {
  const address = opts.address ?? (process.env.CONTAINERD_ADDRESS || DEFAULT_ADDRESS);
  let note: string | undefined;
  if (!opts.private) {
    const local = await localContainerd(address);
    if ('address' in local) return local;
    note = local.why;
  }
  const binary = opts.containerd ?? [depsFile('containerd-2.1/bin/containerd'), '/usr/bin/containerd', lookPath('containerd')]
    .find((f): f is string => f !== undefined && isExecutable(f));
  if (!binary || !isExecutable(binary)) {
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `${note ? `${note}, and no` : 'No'} containerd to start a private one from: run \`make setup\``);
  }
  const version = (await toolVersion('containerd', binary)).version;
  if (!version) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `${binary} --version did not say its version`);
  const runDir = opts.runDir ?? '/run/kybernate-demo';
  const stateDir = opts.stateDir ?? '/var/lib/kybernate-demo';
  const cd = await startPrivateContainerd(binary, version, { run: path.join(runDir, 'containerd'), lib: path.join(stateDir, 'containerd') }, opts.env);
  return { ...cd, private: true, ...(note ? { note } : {}) };
}

/** The local containerd at `address` when it answers and can start our shim; otherwise why not. */
async function localContainerd(address: string): Promise<DemoContainerd | { why: string }> {
  if (!fs.existsSync(address)) return { why: `no containerd at ${address}` };
  const client = new ContainerdClient({ address, timeoutMs: 3_000 });
  let version: string;
  try {
    version = (await client.version()).version.replace(/^v/, '');
  } catch (err) {
    return { why: `the containerd at ${address} does not answer (${(err as Error).message})` };
  } finally {
    client.close();
  }
  const pid = socketOwner(address);
  const exe = pid === undefined ? undefined : readlink(`/proc/${pid}/exe`);
  const envPath = pid === undefined ? process.env.PATH ?? '' : environ(pid).PATH ?? SYSTEM_PATH;
  const shim = lookPath(SHIM_BINARY, envPath) ?? (exe ? [path.join(path.dirname(exe), SHIM_BINARY)].find(isExecutable) : undefined);
  if (!shim) {
    const whose = pid === undefined ? 'this shell\'s PATH' : `its PATH (${envPath})`;
    return { why: `the containerd at ${address} cannot start ${SHIM_BINARY}: it is not on ${whose} (link bin/${SHIM_BINARY} into one of those directories, or \`make install\`)` };
  }
  const ctr = [exe ? path.join(path.dirname(exe), 'ctr') : undefined, lookPath('ctr'), depsFile('containerd-2.1/bin/ctr')]
    .find((f): f is string => f !== undefined && isExecutable(f));
  if (!ctr) return { why: `no ctr found for the containerd at ${address}` };
  const dirs = pid === undefined ? {} : configuredDirs(pid);
  const cd: DemoContainerd = {
    address, ctr, version, private: false,
    state: dirs.state ?? '/run/containerd', root: dirs.root ?? '/var/lib/containerd',
    stop: async () => {},
  };
  cd.snapshotter = await usableSnapshotter(cd);
  return cd;
}

const readOr = (f: string): string => { try { return fs.readFileSync(f, 'utf8'); } catch { return ''; } };
const readlink = (f: string): string | undefined => { try { return fs.readlinkSync(f); } catch { return undefined; } };

/** The pid of the process listening on unix socket `address`, when it can be seen from here. */
function socketOwner(address: string): number | undefined {
  // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 marks a listening socket.
  const inodes = new Set(readOr('/proc/net/unix').split('\n').map((l) => l.trim().split(/\s+/))
    .filter((f) => f[7] === address && (Number.parseInt(f[3] ?? '0', 16) & 0x10000) !== 0).map((f) => `socket:[${f[6]}]`));
  if (inodes.size === 0) return undefined;
  for (const e of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (!readOr(`/proc/${e}/comm`).startsWith('containerd')) continue;
    let fds: string[] = [];
    try { fds = fs.readdirSync(`/proc/${e}/fd`); } catch { continue; }
    if (fds.some((fd) => inodes.has(readlink(`/proc/${e}/fd/${fd}`) ?? ''))) return Number(e);
  }
  return undefined;
}

function environ(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of readOr(`/proc/${pid}/environ`).split('\0')) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/** --root/--state from containerd's command line, else the top-level root/state of its config file. */
function configuredDirs(pid: number): { root?: string; state?: string } {
  const argv = readOr(`/proc/${pid}/cmdline`).split('\0');
  const flag = (...names: string[]): string | undefined => {
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]!;
      for (const n of names) {
        if (a === n) return argv[i + 1];
        if (a.startsWith(`${n}=`)) return a.slice(n.length + 1);
      }
    }
    return undefined;
  };
  const config = flag('--config', '-c') ?? '/etc/containerd/config.toml';
  // Relative to containerd's working directory, as containerd itself reads it.
  const file = path.isAbsolute(config) ? config : path.join(readlink(`/proc/${pid}/cwd`) ?? '/', config);
  // Top level only: the keys before the first [table].
  const top = readOr(file).split(/^\s*\[/m)[0] ?? '';
  const key = (k: string): string | undefined => new RegExp(`^\\s*${k}\\s*=\\s*"([^"]+)"`, 'm').exec(top)?.[1];
  return { root: flag('--root') ?? key('root'), state: flag('--state') ?? key('state') };
}
