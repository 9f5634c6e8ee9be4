// runc, the OCI runtime, driven through its command line. Every invocation goes through the native reaper
// (the shim is the subreaper and reaps all exits in one place), with NOTIFY_SOCKET stripped (runc treats it
// specially) and SIGKILL as parent-death signal so that no runc outlives a dead shim.
//
// Every invocation runs in the container's bundle directory: containerd's runc shim runs runc (go-runc sets
// no Dir) in its own working directory, which is the bundle containerd started it in, and runc wrappers
// given as BinaryName (failpoint and logging wrappers) read ./config.json from there.
import * as fs from 'node:fs';
import { KybernateError } from '../errors';
import { reaper } from '../native/reaper';
import { run, type RunResult } from '../native/run';
import { trace } from './trace';

const SIGKILL = 9;
const COMMAND_TIMEOUT_MS = 60_000;
/** A dump or restore moves the whole memory of the container (GiBs for GPU workloads). */
const CRIU_TIMEOUT_MS = 30 * 60_000;

/**
 * Environment for runc: ours without NOTIFY_SOCKET. runc hands it on to criu, so
 * KYBERNATE_CRIU_NO_BREAKPOINTS=1 becomes CRIU_FAULT=130 (stop the parasite by syscall tracing: on VMs
 * whose debug registers do not work, dumps otherwise hang).
 */
export function runcEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env = { ...base };
  delete env.NOTIFY_SOCKET;
  if (env.KYBERNATE_CRIU_NO_BREAKPOINTS === '1' && env.CRIU_FAULT === undefined) env.CRIU_FAULT = '130';
  return env;
}

function envList(): string[] {
  return Object.entries(runcEnv()).map(([k, v]) => `${k}=${v ?? ''}`);
}

/** CRIU options a dump was made with; a restore repeats them. */
export interface CriuFlags {
  tcpEstablished?: boolean;
  extUnixSk?: boolean;
  shellJob?: boolean;
  fileLocks?: boolean;
  /** soft | full | strict | ignore */
  manageCgroupsMode?: string;
}

export interface CheckpointOpts extends CriuFlags {
  imagePath: string;
  workPath: string;
  leaveRunning: boolean;
  parentPath?: string;
  emptyNamespaces?: string[];
}

export interface RestoreOpts extends CriuFlags {
  imagePath: string;
  workPath: string;
  bundle: string;
  pidFile: string;
  consoleSocket?: string;
  noPivot?: boolean;
  stdio: [number, number, number];
}

function criuFlagArgs(f: CriuFlags): string[] {
  const a: string[] = [];
  if (f.tcpEstablished) a.push('--tcp-established');
  if (f.extUnixSk) a.push('--ext-unix-sk');
  if (f.shellJob) a.push('--shell-job');
  if (f.fileLocks) a.push('--file-locks');
  if (f.manageCgroupsMode) a.push('--manage-cgroups-mode', f.manageCgroupsMode);
  return a;
}

export interface RuncConfig {
  binary: string;
  root: string;
  /** The container's bundle: every runc runs with it as working directory. */
  bundle: string;
  /** runc's JSON log (errors are read back from it). */
  logPath: string;
  systemdCgroup: boolean;
}

export interface CreateOpts {
  pidFile: string;
  consoleSocket?: string;
  noPivot?: boolean;
  noNewKeyring?: boolean;
  /** fds for the container's stdin/stdout/stderr; -1 = /dev/null. */
  stdio: [number, number, number];
}

export interface ExecOpts {
  pidFile: string;
  consoleSocket?: string;
  stdio: [number, number, number];
}

export interface ProcessState { id: string; pid: number; status: string; bundle: string }

function logSize(logPath: string): number {
  try {
    return fs.statSync(logPath).size;
  } catch {
    return 0;
  }
}

/**
 * Last error message runc wrote to its JSON log since byte `from` (the log's size before this invocation):
 * the log is the container's, and an earlier invocation's error must not pass for this one's.
 */
function lastLogError(logPath: string, from: number): string | undefined {
  let text: string;
  try {
    const fd = fs.openSync(logPath, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= from) return undefined;
      const buf = Buffer.alloc(Math.min(size - from, 1 << 20));
      const n = fs.readSync(fd, buf, 0, buf.length, size - buf.length);
      text = buf.subarray(0, n).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
  const lines = text.trimEnd().split('\n').slice(-50).reverse();
  for (const line of lines) {
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.level === 'error' && entry.msg) return entry.msg;
    } catch {
      // runc writes plain text when it fails before the logger is set up
      if (line.trim()) return line.trim();
    }
  }
  return undefined;
}

/**
 * runc's message for an id it has no state for: "container does not exist" (libcontainer.ErrNotExist;
 * runc 1.0 named the id in quotes). runc reports errors as text only, so this is the one place its text
 * is classified: such a failure is KYB_ERR_NOT_FOUND (containerd's runc shim maps the same text to
 * errdefs.ErrNotFound), every other one KYB_ERR_RUNTIME, and callers decide by the code.
 */
const CONTAINER_MISSING = /\bcontainer (?:"[^"]*" )?does not exist\b/;

function exitText(status: number, signal: number): string {
  return signal ? `was killed by signal ${signal}` : `exited with status ${status}`;
}

export class Runc {
  constructor(readonly config: RuncConfig) {}

  private args(sub: string[]): string[] {
    const c = this.config;
    return ['--root', c.root, '--log', c.logPath, '--log-format', 'json', ...(c.systemdCgroup ? ['--systemd-cgroup'] : []), ...sub];
  }

  /**
   * The error of a failed invocation: runc's own message from its log when it wrote one; else what the
   * binary wrote to stderr (`stderr` undefined: its stderr was the container's, not captured), with the
   * binary and its exit named, since a wrapper (BinaryName) may fail before runc ever runs. An id runc
   * does not know is KYB_ERR_NOT_FOUND (CONTAINER_MISSING), judged on runc's own words only.
   */
  private runtimeError(op: string, logFrom: number, exit: { status: number; signal: number }, stderr: string | undefined): KybernateError {
    const c = this.config;
    const logged = lastLogError(c.logPath, logFrom);
    const said = logged ?? stderr?.trim();
    let msg = logged;
    if (msg === undefined) {
      const how = `${JSON.stringify(c.binary)} ${exitText(exit.status, exit.signal)}`;
      if (said) msg = `${said} (${how})`;
      else if (stderr !== undefined) msg = `${how} without an error in its log ${c.logPath} or on stderr`;
      else msg = `${how} without an error in its log ${c.logPath}; its stderr went to the container's stderr`;
    }
    const code = said !== undefined && CONTAINER_MISSING.test(said) ? 'KYB_ERR_NOT_FOUND' : 'KYB_ERR_RUNTIME';
    return new KybernateError(code, `runc ${op} failed: ${msg}`);
  }

  /** The working directory of every runc: the bundle; '/' once the bundle is gone (a late delete). */
  private cwd(): string {
    return fs.existsSync(this.config.bundle) ? this.config.bundle : '/';
  }

  private missing(err: unknown, cwd: string): never {
    const e = err as NodeJS.ErrnoException & { path?: string };
    if (e?.code === 'ENOENT' && e.path !== cwd) {
      throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `OCI runtime ${JSON.stringify(this.config.binary)} not found on PATH`, { cause: err });
    }
    throw err;
  }

  /** Runs a runc command whose output we capture. */
  private async call(op: string, sub: string[], input?: string, timeoutMs = COMMAND_TIMEOUT_MS): Promise<RunResult> {
    let res: RunResult;
    const cwd = this.cwd();
    const logFrom = logSize(this.config.logPath);
    const t0 = performance.now();
    try {
      res = await run(this.config.binary, this.args(sub), { env: runcEnv(), cwd, input, deathSignal: SIGKILL, timeoutMs });
    } catch (err) {
      this.missing(err, cwd);
    } finally {
      trace('runc', op, sub[sub.length - 1] ?? '', performance.now() - t0);
    }
    if (res.status !== 0) throw this.runtimeError(op, logFrom, res, res.stderr.toString());
    return res;
  }

  /** Runs a runc command whose stdio belongs to the container (create, exec, restore). */
  private async spawnWithStdio(op: string, sub: string[], stdio: [number, number, number]): Promise<void> {
    let exited: Promise<{ status: number; signal: number }>;
    const cwd = this.cwd();
    const logFrom = logSize(this.config.logPath);
    const t0 = performance.now();
    try {
      ({ exited } = reaper.spawn({ file: this.config.binary, args: this.args(sub), env: envList(), cwd, stdio, deathSignal: SIGKILL }));
    } catch (err) {
      this.missing(err, cwd);
    }
    const exit = await exited;
    trace('runc', op, sub[sub.length - 1] ?? '', performance.now() - t0);
    if (exit.status !== 0) throw this.runtimeError(op, logFrom, exit, undefined);
  }

  async create(id: string, bundle: string, o: CreateOpts): Promise<void> {
    const sub = ['create', '--bundle', bundle, '--pid-file', o.pidFile];
    if (o.consoleSocket) sub.push('--console-socket', o.consoleSocket);
    if (o.noPivot) sub.push('--no-pivot');
    if (o.noNewKeyring) sub.push('--no-new-keyring');
    await this.spawnWithStdio('create', [...sub, id], o.stdio);
  }

  async start(id: string): Promise<void> { await this.call('start', ['start', id]); }

  async exec(id: string, processFile: string, o: ExecOpts): Promise<void> {
    const sub = ['exec', '--process', processFile, '--detach', '--pid-file', o.pidFile];
    if (o.consoleSocket) sub.push('--console-socket', o.consoleSocket);
    await this.spawnWithStdio('exec', [...sub, id], o.stdio);
  }

  async kill(id: string, signal: number, all: boolean): Promise<void> {
    await this.call('kill', ['kill', ...(all ? ['--all'] : []), id, String(signal)]);
  }

  async delete(id: string, force: boolean): Promise<void> {
    await this.call('delete', ['delete', ...(force ? ['--force'] : []), id]);
  }

  async pause(id: string): Promise<void> { await this.call('pause', ['pause', id]); }
  async resume(id: string): Promise<void> { await this.call('resume', ['resume', id]); }

  /** Applies OCI LinuxResources (JSON) to the running container. */
  async update(id: string, resourcesJson: string): Promise<void> {
    await this.call('update', ['update', '--resources', '-', id], resourcesJson);
  }

  /** runc checkpoint: CRIU dumps the container into o.imagePath (its logs go to o.workPath). */
  async checkpoint(id: string, o: CheckpointOpts): Promise<void> {
    const sub = ['checkpoint', '--image-path', o.imagePath, '--work-path', o.workPath, ...criuFlagArgs(o)];
    if (o.leaveRunning) sub.push('--leave-running');
    if (o.parentPath) sub.push('--parent-path', o.parentPath);
    for (const ns of o.emptyNamespaces ?? []) sub.push('--empty-ns', ns);
    await this.call('checkpoint', [...sub, id], undefined, CRIU_TIMEOUT_MS);
  }

  /**
   * runc restore, detached: the restored init is reparented to the shim (the subreaper), which reaps it.
   * stdio are the new process's fds; runc maps the dumped pipes onto them (descriptors.json in the image).
   */
  async restore(id: string, o: RestoreOpts): Promise<void> {
    const sub = ['restore', '--image-path', o.imagePath, '--work-path', o.workPath, '--detach', '--pid-file', o.pidFile,
      '--no-subreaper', '--bundle', o.bundle, ...criuFlagArgs(o)];
    if (o.noPivot) sub.push('--no-pivot');
    if (o.consoleSocket) sub.push('--console-socket', o.consoleSocket);
    await this.spawnWithStdio('restore', [...sub, id], o.stdio);
  }

  async ps(id: string): Promise<number[]> {
    const res = await this.call('ps', ['ps', '--format', 'json', id]);
    const pids = JSON.parse(res.stdout.toString() || '[]') as number[] | null;
    return pids ?? [];
  }

  async state(id: string): Promise<ProcessState> {
    const res = await this.call('state', ['state', id]);
    return JSON.parse(res.stdout.toString()) as ProcessState;
  }
}

/** Reads a pid file written by runc. */
export function readPidFile(file: string): number {
  const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0) throw new KybernateError('KYB_ERR_RUNTIME', `invalid pid file ${file}`);
  return pid;
}
