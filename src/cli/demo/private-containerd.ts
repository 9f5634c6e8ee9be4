// A private containerd for the demo's duration, from what `make setup` installed: its own socket, state,
// root and config under <runDir>/containerd and <stateDir>/containerd (never /run/containerd or
// /var/lib/containerd), CRI and NRI off, and on its PATH the directory of our shim's launcher, so that
// `--runtime io.containerd.kybernate.v2` finds containerd-shim-kybernate-v2.
//
// Invariants:
// - One demo at a time owns these directories: owner.json names the demo process and its containerd (pid and
//   start time, so a reused pid never counts). A live owner makes a second start refuse; a dead one left
//   leftovers: its containerd is stopped and a new one starts on the same directories, which brings the
//   leftover shims and containers back under its control, so stop() removes them too.
// - containerd runs in its own process group: Ctrl-C at the terminal reaches the demo only, which then takes
//   its workload down through containerd before stopping it.
// - stop() removes every container in every namespace (whatever state it is in), stops containerd, kills
//   shims still serving its socket, unmounts what is left below its directories and removes them.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ContainerdClient } from '../../containerd/client';
import { KybernateError } from '../../errors';
import { which } from '../../host/versions';
import { run } from '../../native/run';
import { ctr, lines, type CtrTarget } from './ctr';
import { SHIM_BINARY, SYSTEM_PATH, shimBinDir } from './paths';
import { removeWorkload } from './workload';

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

export interface PrivateDirs {
  /** Socket, state, config, log and owner.json. */
  run: string;
  /** containerd's root (images, snapshots) and its opt directory. */
  lib: string;
}

export interface PrivateContainerd extends CtrTarget {
  address: string;
  state: string;
  root: string;
  version: string;
  pid: number;
  stop(): Promise<void>;
}

/** "<pid> <start time in clock ticks>": a process, not just a pid (pids are reused). */
export function identity(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return `${pid} ${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]}`;
  } catch {
    return undefined;
  }
}

const aliveAs = (id: string | undefined): boolean => id !== undefined && identity(Number(id.split(' ')[0])) === id;

interface Owner { demo?: string; containerd?: string }

/**
 * The config file: `version = 3` for containerd 2.x, 2 for 1.x; everything containerd writes below `dirs`.
 * Disabled: CRI (it would want CNI, a pause image and its streaming port; ctr does not use it) and NRI (one
 * fixed socket per host).
 */
function configText(major: number, address: string, state: string, root: string, opt: string): string {
  const str = JSON.stringify;
  const disabled = major >= 2
    ? ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.runtime', 'io.containerd.cri.v1.images',
      'io.containerd.podsandbox.controller.v1.podsandbox', 'io.containerd.sandbox.controller.v1.shim', 'io.containerd.nri.v1.nri']
    : ['io.containerd.grpc.v1.cri', 'io.containerd.nri.v1.nri'];
  return [
    `version = ${major >= 2 ? 3 : 2}`,
    `root = ${str(root)}`,
    `state = ${str(state)}`,
    `disabled_plugins = [${disabled.map((d) => str(d)).join(', ')}]`,
    '',
    '[grpc]',
    `  address = ${str(address)}`,
    '',
    '[ttrpc]',
    `  address = ${str(`${address}.ttrpc`)}`,
    '',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${str(opt)}`,
    '',
  ].join('\n');
}

/** Starts containerd `binary` (version `version`) in `dirs`; resolves once it answers. */
export async function startPrivateContainerd(binary: string, version: string, dirs: PrivateDirs,
  env: Record<string, string> = {}): Promise<PrivateContainerd> {
  const shimDir = shimBinDir();
  if (!shimDir) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `${SHIM_BINARY} not found beside the kybernate CLI: run \`make build\``);
  const paths = {
    address: path.join(dirs.run, 'containerd.sock'), state: path.join(dirs.run, 'state'), config: path.join(dirs.run, 'config.toml'),
    log: path.join(dirs.run, 'containerd.log'), owner: path.join(dirs.run, 'owner.json'),
    root: path.join(dirs.lib, 'root'), opt: path.join(dirs.lib, 'opt'),
  };
  fs.mkdirSync(dirs.run, { recursive: true, mode: 0o700 });
  fs.mkdirSync(dirs.lib, { recursive: true, mode: 0o700 });
  await takeOver(paths.owner, dirs.run);

  const major = Number.parseInt(version, 10) || 1;
  fs.writeFileSync(paths.config, configText(major, paths.address, paths.state, paths.root, paths.opt), { mode: 0o600 });
  const log = fs.openSync(paths.log, 'a', 0o600);
  // Our shim first; then containerd's own directory (its containerd-shim-runc-v2); then the usual PATH.
  const PATH = [shimDir, path.dirname(binary), process.env.PATH || SYSTEM_PATH].join(':');
  const child = spawn(binary, ['--config', paths.config], {
    env: { ...process.env, ...env, PATH }, stdio: ['ignore', log, log], detached: true, cwd: dirs.run,
  });
  fs.closeSync(log);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', () => undefined);
  child.unref();
  const pid = child.pid ?? 0;
  fs.writeFileSync(paths.owner, `${JSON.stringify({ demo: identity(process.pid), containerd: identity(pid) } satisfies Owner)}\n`);

  const cd: PrivateContainerd = {
    address: paths.address, state: paths.state, root: paths.root, version, pid, ctr: path.join(path.dirname(binary), 'ctr'),
    snapshotter: 'overlayfs',
    // ref(): stopPrivate awaits the child's 'exit', which an unref'd child does not keep the event loop alive
    // for: the CLI would end right there (exit 0, the rest of its output never written).
    stop: once(() => { child.ref(); return stopPrivate(cd, child.pid === undefined ? Promise.resolve() : exited, dirs, paths.owner); }),
  };
  try {
    await waitReady(paths.address, () => child.exitCode !== null || child.signalCode !== null || pid === 0, paths.log);
    cd.snapshotter = await usableSnapshotter(cd);
  } catch (err) {
    await cd.stop().catch(() => undefined);
    throw err;
  }
  return cd;
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= fn());
}

/** Refuses while another live demo owns `dir`; stops the containerd a dead owner left running. */
async function takeOver(ownerFile: string, dir: string): Promise<void> {
  let owner: Owner = {};
  try {
    owner = JSON.parse(fs.readFileSync(ownerFile, 'utf8')) as Owner;
  } catch {
    return; // no owner: a fresh directory (or one a clean stop() removed)
  }
  if (aliveAs(owner.demo)) {
    throw new KybernateError('KYB_ERR_ALREADY_EXISTS',
      `another kybernate demo (pid ${owner.demo!.split(' ')[0]}) runs its private containerd in ${dir}: stop it first`);
  }
  if (aliveAs(owner.containerd)) await terminate(Number(owner.containerd!.split(' ')[0]));
}

/** SIGTERM, and SIGKILL after STOP_TIMEOUT_MS; resolves once the process is gone (or a zombie of someone else's). */
async function terminate(pid: number): Promise<void> {
  const id = identity(pid);
  if (!id) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const killAt = Date.now() + STOP_TIMEOUT_MS;
  let killed = false;
  while (identity(pid) === id && !/^State:\s+Z/m.test(readOr(`/proc/${pid}/status`))) {
    if (!killed && Date.now() > killAt) {
      killed = true;
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await sleep(20);
  }
}

const readOr = (f: string): string => { try { return fs.readFileSync(f, 'utf8'); } catch { return ''; } };

async function waitReady(address: string, exitedEarly: () => boolean, log: string): Promise<void> {
  const client = new ContainerdClient({ address, timeoutMs: 2_000 });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  try {
    for (;;) {
      if (exitedEarly()) throw new KybernateError('KYB_ERR_UNAVAILABLE', `the private containerd exited before it answered; its log (${log}):\n${tail(log)}`);
      if (fs.existsSync(address) && await client.version().then(() => true, () => false)) return;
      if (Date.now() > deadline) throw new KybernateError('KYB_ERR_DEADLINE', `the private containerd did not answer in ${READY_TIMEOUT_MS / 1000} s; its log (${log}):\n${tail(log)}`);
      await sleep(50);
    }
  } finally {
    client.close();
  }
}

const tail = (file: string): string => readOr(file).split('\n').slice(-15).join('\n');

/** 'overlayfs' where containerd could load it, 'native' otherwise (e.g. its root on a filesystem overlay refuses). */
export async function usableSnapshotter(cd: CtrTarget): Promise<string> {
  const r = await ctr(cd, 'default', ['plugins', 'ls']);
  const overlay = r.stdout.split('\n').find((l) => /\bio\.containerd\.snapshotter\.v1\s+overlayfs\b/.test(l));
  return overlay && /\sok\s*$/.test(overlay) ? 'overlayfs' : 'native';
}

async function stopPrivate(cd: PrivateContainerd, exited: Promise<void>, dirs: PrivateDirs, ownerFile: string): Promise<void> {
  if (identity(cd.pid) !== undefined) {
    const namespaces = await ctr(cd, 'default', ['namespaces', 'ls', '-q'], 15_000);
    for (const ns of lines(namespaces.stdout)) {
      for (const id of lines((await ctr(cd, ns, ['containers', 'ls', '-q'], 15_000)).stdout)) {
        await removeWorkload(cd, ns, id).catch(() => undefined);
      }
    }
    await terminate(cd.pid);
    await exited;
  }
  // Shims outlive containerd by design; any still serving this containerd are killed (their tasks with them).
  for (const pid of processesMentioning(cd.address)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  for (const dir of [dirs.run, dirs.lib]) {
    for (const point of mountsUnder(dir)) await run(which('umount') ?? 'umount', ['-l', point], { timeoutMs: 10_000 }).catch(() => undefined);
  }
  fs.rmSync(ownerFile, { force: true });
  fs.rmSync(dirs.run, { recursive: true, force: true });
  fs.rmSync(dirs.lib, { recursive: true, force: true });
}

/** Pids (not ours) whose command line has `needle` as one of its arguments. */
function processesMentioning(needle: string): number[] {
  return fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)
    .filter((e) => readOr(`/proc/${e}/cmdline`).split('\0').includes(needle)).map(Number);
}

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const points = readOr('/proc/self/mountinfo').split('\n').map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}
