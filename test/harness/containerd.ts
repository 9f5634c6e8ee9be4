// Private containerd daemons for end-to-end tests: one fresh daemon per startContainerd() call,
// each with its own root, state, socket and config, the test image imported, and containerd's
// PATH set so that it finds this repository's shim (bin/) and the runc shim of its own version.
//
// Versions: 1.6 is Debian 12's system package (/usr/bin); 1.7 and 2.1 are unpacked by
// `make setup` into .deps/containerd-<v>/bin. Every daemon is stopped with stop(); daemons of
// test processes that died are removed by the next startContainerd() (see cleanup.ts).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import {
  DIR_PREFIX, OWNER_FILE, cleanupLeftovers, daemonBaseDir, processIdentity, removeDaemonDir, terminate,
} from './cleanup';
import { daemonConfig, daemonHeader, type DaemonPaths } from './config';

export type ContainerdVersion = '1.6' | '1.7' | '2.1';
export const ALL_VERSIONS: readonly ContainerdVersion[] = ['1.6', '1.7', '2.1'];
export const TEST_IMAGE = 'docker.io/library/busybox:kybernate-test';
export const SHIM_RUNTIME = 'io.containerd.kybernate.v2';
export const RUNC_RUNTIME = 'io.containerd.runc.v2';

export const REPO_ROOT = resolve(__dirname, '..', '..');
/** Built by test/images/build-busybox-image.cjs (`make setup`, or on demand from /bin/busybox). */
export const TEST_IMAGE_TAR = join(REPO_ROOT, '.deps', 'images', 'busybox.tar');
/** TEST_IMAGE's root filesystem with a default command that sleeps: CRI's pod sandbox ("pause") image. */
export const PAUSE_IMAGE = 'docker.io/library/busybox:kybernate-pause';
export const PAUSE_IMAGE_TAR = join(REPO_ROOT, '.deps', 'images', 'busybox-pause.tar');
const IMAGE_BUILDER = join(REPO_ROOT, 'test', 'images', 'build-busybox-image.cjs');
const BUSYBOX = '/bin/busybox';
const BINARIES = ['containerd', 'ctr', 'containerd-shim-runc-v2'];

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const CTR_TIMEOUT_MS = 60_000;
const LOG_LIMIT = 4 << 20;

export interface CtrResult { code: number; stdout: string; stderr: string }
export interface CtrOptions {
  /** Written to ctr's stdin. `ctr run` and `ctr tasks exec` never pass EOF on to the process. */
  input?: string | Buffer;
  /** ctr is killed after this long (default 60 s) and the result has code 124. */
  timeoutMs?: number;
  env?: Record<string, string>;
}

export interface Containerd {
  version: ContainerdVersion;
  address: string;
  root: string;
  state: string;
  namespace: string;
  /** containerd's pid; changes on restart(). */
  pid: number;
  /** The directory holding root, state, socket and config; removed by stop(). */
  dir: string;
  /** 'overlayfs', or 'native' where overlayfs does not work (ctr calls get CONTAINERD_SNAPSHOTTER). */
  snapshotter: string;
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** Like ctr(), but throws (with stderr) on a non-zero exit; resolves to stdout. */
  ctrOk(args: string[], opts?: CtrOptions): Promise<string>;
  /** SIGTERM containerd (its shims keep running), start it again on the same directories, wait until ready. */
  restart(): Promise<void>;
  /** Kills all tasks in all namespaces, stops the daemon, unmounts and removes its directory. */
  stop(): Promise<void>;
  /** containerd's stdout and stderr so far (the last 4 MiB). */
  logs(): string;
}

export interface StartOptions {
  /** Namespace for ctr() calls and the imported image; default 'kybernate-test'. */
  namespace?: string;
  /** Extra environment for containerd, and so for the shims it starts. */
  env?: Record<string, string>;
  /** containerd --log-level; default KYBERNATE_CONTAINERD_LOG_LEVEL or 'info'. */
  logLevel?: string;
  /** How long stop() asks containerd to remove tasks before it kills shims itself; default 30 s. */
  stopTasksTimeoutMs?: number;
  /**
   * Keeps containerd's CRI plugin enabled (it is disabled by default) with these runtime handlers,
   * and imports PAUSE_IMAGE as well. CRI sees only the `k8s.io` namespace, which becomes the default
   * namespace of such a daemon.
   */
  cri?: CriOptions;
}

export interface CriOptions {
  /** Runtime handler name (RunPodSandboxRequest.runtime_handler) → runtime_type, e.g. { kybernate: SHIM_RUNTIME }. */
  runtimes: Record<string, string>;
  /** The pod sandbox image; default PAUSE_IMAGE, which the harness builds and imports. Others must be imported by the caller. */
  sandboxImage?: string;
}

/** The namespace in which CRI keeps its images, containers and sandboxes. */
export const CRI_NAMESPACE = 'k8s.io';

/** Where a version's containerd, ctr and containerd-shim-runc-v2 live. */
export function binDir(v: ContainerdVersion): string {
  const override = process.env[`KYBERNATE_CONTAINERD_${v.replace('.', '_')}_DIR`];
  if (override) return override;
  return v === '1.6' ? '/usr/bin' : join(REPO_ROOT, '.deps', `containerd-${v}`, 'bin');
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].map((d) => join(d, name)).find((p) => existsSync(p));
}

const versionCache = new Map<string, string>();

/** `containerd --version` reduced to its version field, e.g. "1.6.20~ds1". */
function binaryVersion(containerd: string): string {
  let v = versionCache.get(containerd);
  if (v === undefined) {
    try {
      v = execFileSync(containerd, ['--version'], { encoding: 'utf8', timeout: 10_000 }).trim().split(/\s+/)[2] ?? '';
    } catch (err) {
      v = `unusable (${(err as Error).message.split('\n')[0]})`;
    }
    versionCache.set(containerd, v);
  }
  return v;
}

/** Why `v` cannot be tested on this machine, worded for a skip message; undefined when it can. */
export function missingReason(v: ContainerdVersion): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (containerd and runc run as root)';
  const dir = binDir(v);
  const hint = v === '1.6' ? 'apt-get install containerd, or run `make setup`' : 'run `make setup`';
  const absent = BINARIES.filter((b) => !existsSync(join(dir, b)));
  if (absent.length > 0) return `containerd ${v} not installed: ${absent.map((b) => join(dir, b)).join(', ')} missing (${hint})`;
  const actual = binaryVersion(join(dir, 'containerd'));
  if (!actual.replace(/^v/, '').startsWith(`${v}.`)) return `${join(dir, 'containerd')} is version ${actual}, not ${v}.x`;
  if (!onPath('runc')) return 'runc not found on PATH (apt-get install runc, or run `make setup`)';
  if (!existsSync(TEST_IMAGE_TAR) && !existsSync(BUSYBOX)) {
    return `test image ${TEST_IMAGE_TAR} missing and ${BUSYBOX} not there to build it (run \`make setup\`)`;
  }
  return undefined;
}

export function availableVersions(): ContainerdVersion[] {
  return ALL_VERSIONS.filter((v) => missingReason(v) === undefined);
}

/** Builds TEST_IMAGE_TAR when it is missing, or again when `rebuild` (written beside it and renamed). */
export function ensureTestImage(rebuild = false): void {
  if (existsSync(TEST_IMAGE_TAR) && !rebuild) return;
  execFileSync(process.execPath, [IMAGE_BUILDER, '--busybox', BUSYBOX, '--out', TEST_IMAGE_TAR],
    { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
}

function ensurePauseImage(): void {
  if (existsSync(PAUSE_IMAGE_TAR)) return;
  execFileSync(process.execPath, [IMAGE_BUILDER, '--pause', '--busybox', BUSYBOX, '--out', PAUSE_IMAGE_TAR],
    { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
}

// CRI gives sandboxes oom_score_adj -998, which needs CAP_SYS_RESOURCE; where the test runs without it
// (some VMs and CI containers), runc init fails with "can't get final child's PID from pipe: EOF".
// Restricted, CRI never goes below containerd's own value.
const RESTRICT_OOM = '  restrict_oom_score_adj = true';

/**
 * A config file like daemonConfig()'s, with CRI enabled: the handlers of `cri`, the sandbox image, and
 * everything CRI would otherwise take from the host (CNI directories, a fixed streaming port) kept in
 * the daemon's own directory. NRI stays disabled (one fixed host socket). Pods must use the host network.
 */
function criDaemonConfig(version: ContainerdVersion, p: DaemonPaths, logLevel: string, cri: CriOptions,
  snapshotter: string, dir: string): string {
  const v3 = version.startsWith('2.');
  const str = (x: string): string => JSON.stringify(x);
  const cniBin = join(dir, 'cni', 'bin');
  const cniConf = join(dir, 'cni', 'net.d');
  mkdirSync(cniBin, { recursive: true });
  mkdirSync(cniConf, { recursive: true });
  const runtimeTable = v3 ? 'io.containerd.cri.v1.runtime' : 'io.containerd.grpc.v1.cri';
  const sandboxImage = cri.sandboxImage ?? PAUSE_IMAGE;
  const handlers = Object.entries(cri.runtimes).flatMap(([name, type]) => [
    `[plugins.${str(runtimeTable)}.containerd.runtimes.${str(name)}]`,
    `  runtime_type = ${str(type)}`,
    '',
  ]);
  const lines = [
    ...daemonHeader(version, p, logLevel, ['io.containerd.nri.v1.nri']),
    '[plugins."io.containerd.grpc.v1.cri"]',
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    ...(v3 ? [] : [`  sandbox_image = ${str(sandboxImage)}`, '  enable_selinux = false', RESTRICT_OOM]),
    '',
    ...(v3 ? [
      '[plugins."io.containerd.cri.v1.images"]',
      `  snapshotter = ${str(snapshotter)}`,
      '',
      '[plugins."io.containerd.cri.v1.images".pinned_images]',
      `  sandbox = ${str(sandboxImage)}`,
      '',
      '[plugins."io.containerd.cri.v1.runtime"]',
      '  enable_selinux = false',
      RESTRICT_OOM,
      '',
    ] : []),
    `[plugins.${str(runtimeTable)}.containerd]`,
    ...(v3 ? [] : [`  snapshotter = ${str(snapshotter)}`]),
    `  default_runtime_name = ${str(Object.keys(cri.runtimes)[0] ?? 'runc')}`,
    '',
    ...handlers,
    `[plugins.${str(runtimeTable)}.cni]`,
    // 2.1 deprecates bin_dir for bin_dirs; 1.x knows only bin_dir.
    v3 ? `  bin_dirs = [${str(cniBin)}]` : `  bin_dir = ${str(cniBin)}`,
    `  conf_dir = ${str(cniConf)}`,
    '',
  ];
  return lines.join('\n');
}

/** Runs `file` and collects its output; killed after opts.timeoutMs (default 60 s), which resolves with code 124. */
export function execCollect(file: string, args: string[], env: NodeJS.ProcessEnv, opts: CtrOptions): Promise<CtrResult> {
  const timeoutMs = opts.timeoutMs ?? CTR_TIMEOUT_MS;
  return new Promise((resolvePromise) => {
    const child = spawn(file, args, { env, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let done = false;
    const finish = (code: number): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(hardStop);
      let stderr = Buffer.concat(err).toString('utf8');
      if (timedOut) stderr += `\n${file} ${args.join(' ')}: killed after ${timeoutMs} ms`;
      resolvePromise({ code, stdout: Buffer.concat(out).toString('utf8'), stderr });
    };
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    // 'close' waits for the output pipes; a grandchild that inherited them could hold them open.
    const hardStop = setTimeout(() => finish(124), timeoutMs + 5_000);
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => { err.push(Buffer.from(String(e))); finish(127); });
    child.on('close', (code, signal) => finish(timedOut ? 124 : code ?? (signal ? 128 + 9 : 1)));
    if (opts.input !== undefined) {
      child.stdin?.on('error', () => { /* the process exited before reading all input */ });
      child.stdin?.end(opts.input);
    }
  });
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
let leftoversCleaned: Promise<unknown> | undefined;

/** A test process that exits without stop() must not leave daemons running; shims are caught later by cleanupLeftovers. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

class Daemon implements Containerd {
  readonly root: string;
  readonly state: string;
  readonly address: string;
  readonly namespace: string;
  pid = 0;
  snapshotter = 'overlayfs';
  private child: ChildProcess | undefined;
  private log = '';
  private stopped = false;
  private readonly bin: string;
  private readonly configPath: string;
  private readonly env: NodeJS.ProcessEnv;
  private readonly stopTasksTimeoutMs: number;
  private readonly logLevel: string;
  readonly cri: CriOptions | undefined;

  constructor(readonly version: ContainerdVersion, readonly dir: string, opts: StartOptions) {
    this.bin = binDir(version);
    this.root = join(dir, 'root');
    this.state = join(dir, 'state');
    this.address = join(dir, 'containerd.sock');
    this.cri = opts.cri;
    this.namespace = opts.namespace ?? (opts.cri ? CRI_NAMESPACE : 'kybernate-test');
    this.configPath = join(dir, 'config.toml');
    this.stopTasksTimeoutMs = opts.stopTasksTimeoutMs ?? 30_000;
    this.logLevel = opts.logLevel ?? process.env.KYBERNATE_CONTAINERD_LOG_LEVEL ?? 'info';
    this.writeConfig();
    // bin/ first: the shim under test; then this version's own containerd-shim-runc-v2.
    const path = [join(REPO_ROOT, 'bin'), this.bin, process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'].join(delimiter);
    this.env = { ...process.env, PATH: path, ...opts.env };
  }

  /** Written before every launch: CRI's snapshotter is fixed by the config, so it follows chooseSnapshotter(). */
  writeConfig(): void {
    const paths: DaemonPaths = { root: this.root, state: this.state, address: this.address, opt: join(this.dir, 'opt') };
    writeFileSync(this.configPath, this.cri
      ? criDaemonConfig(this.version, paths, this.logLevel, this.cri, this.snapshotter, this.dir)
      : daemonConfig(this.version, paths, this.logLevel));
  }

  ctr(args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
    const env: NodeJS.ProcessEnv = { ...this.env, ...opts.env };
    if (this.snapshotter !== 'overlayfs') env.CONTAINERD_SNAPSHOTTER = this.snapshotter;
    return execCollect(join(this.bin, 'ctr'), ['--address', this.address, '--namespace', this.namespace, ...args], env, opts);
  }

  async ctrOk(args: string[], opts?: CtrOptions): Promise<string> {
    const r = await this.ctr(args, opts);
    if (r.code !== 0) {
      throw new Error(`ctr ${args.join(' ')} (containerd ${this.version}) exited ${r.code}: ${r.stderr.trim()}`);
    }
    return r.stdout;
  }

  logs(): string {
    return this.log;
  }

  private appendLog(chunk: Buffer): void {
    this.log += chunk.toString('utf8');
    if (this.log.length > LOG_LIMIT) this.log = this.log.slice(-LOG_LIMIT / 2);
  }

  async launch(): Promise<void> {
    // Not detached: a terminal's Ctrl-C reaches containerd along with the test runner. Shims
    // put themselves in their own process groups, so they survive containerd, as in production.
    const child = spawn(join(this.bin, 'containerd'), ['--config', this.configPath], {
      env: this.env, cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    live.add(child);
    child.once('exit', () => live.delete(child));
    child.stdout?.on('data', (d: Buffer) => this.appendLog(d));
    child.stderr?.on('data', (d: Buffer) => this.appendLog(d));
    this.pid = child.pid ?? 0;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`containerd ${this.version} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${this.tail()}`);
      }
      if (existsSync(this.address)) {
        const r = await this.ctr(['version'], { timeoutMs: 5_000 });
        if (r.code === 0) return;
      }
      if (Date.now() > deadline) {
        throw new Error(`containerd ${this.version} not ready after ${READY_TIMEOUT_MS} ms:\n${this.tail()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** overlayfs needs a backing filesystem that supports it; the plugin reports itself skipped otherwise. */
  async chooseSnapshotter(): Promise<void> {
    const plugins = await this.ctrOk(['plugins', 'ls']);
    const overlay = plugins.split('\n').find((l) => /\bio\.containerd\.snapshotter\.v1\s+overlayfs\b/.test(l));
    if (!overlay || !/\sok\s*$/.test(overlay)) this.snapshotter = 'native';
  }

  async importImage(): Promise<void> {
    await this.ctrOk(['images', 'import', TEST_IMAGE_TAR], { timeoutMs: 120_000 });
    if (this.cri && this.cri.sandboxImage === undefined) {
      await this.ctrOk(['images', 'import', PAUSE_IMAGE_TAR], { timeoutMs: 120_000 });
    }
  }

  private tail(): string {
    return this.log.slice(-4000);
  }

  private halt(): Promise<void> {
    return terminate(this.child, STOP_TIMEOUT_MS);
  }

  async restart(): Promise<void> {
    if (this.stopped) throw new Error(`containerd ${this.version} in ${this.dir} was stopped`);
    await this.halt();
    await this.launch();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try {
      if (this.child && this.child.exitCode === null && this.child.signalCode === null) await this.removeAllTasks();
    } finally {
      await this.halt();
      await removeDaemonDir(this.dir);
    }
  }

  /**
   * Kills and deletes every task and container, so their shims exit cleanly. Bounded in time: a
   * shim that does not answer is SIGKILLed afterwards by removeDaemonDir, and its containers
   * are killed through runc.
   */
  private async removeAllTasks(): Promise<void> {
    const deadline = Date.now() + this.stopTasksTimeoutMs;
    const call = (ns: string, args: string[]): Promise<CtrResult> => {
      const timeoutMs = Math.min(10_000, deadline - Date.now());
      if (timeoutMs <= 0) return Promise.resolve({ code: 124, stdout: '', stderr: 'out of time' });
      return this.ctr(['--namespace', ns, ...args], { timeoutMs });
    };
    const nsList = await call(this.namespace, ['namespaces', 'ls', '-q']);
    const namespaces = nsList.code === 0 ? lines(nsList.stdout) : [this.namespace];
    for (const ns of namespaces) {
      const tasks = await call(ns, ['tasks', 'ls', '-q']);
      for (const id of lines(tasks.stdout)) {
        await call(ns, ['tasks', 'kill', '--all', '--signal', 'SIGKILL', id]);
        await call(ns, ['tasks', 'delete', '--force', id]);
      }
      const containers = await call(ns, ['containers', 'ls', '-q']);
      for (const id of lines(containers.stdout)) await call(ns, ['containers', 'delete', id]);
    }
  }
}

function lines(s: string): string[] {
  return s.split('\n').map((l) => l.trim()).filter(Boolean);
}

/**
 * Starts a private containerd of `version` in a fresh directory, waits until it answers and
 * imports TEST_IMAGE into `opts.namespace` (default 'kybernate-test'). Throws with
 * missingReason() when the version is not installed.
 */
export async function startContainerd(version: ContainerdVersion, opts: StartOptions = {}): Promise<Containerd> {
  const missing = missingReason(version);
  if (missing !== undefined) throw new Error(`cannot start containerd ${version}: ${missing}`);
  installExitHook();
  leftoversCleaned ??= cleanupLeftovers();
  await leftoversCleaned;
  ensureTestImage();
  if (opts.cri) ensurePauseImage();

  const base = daemonBaseDir();
  mkdirSync(base, { recursive: true });
  const dir = mkdtempSync(join(base, DIR_PREFIX));
  writeFileSync(join(dir, OWNER_FILE), `${processIdentity(process.pid)}\n`);
  const daemon = new Daemon(version, dir, opts);
  try {
    await daemon.launch();
    await daemon.chooseSnapshotter();
    if (daemon.cri && daemon.snapshotter !== 'overlayfs') {
      daemon.writeConfig();
      await daemon.restart();
    }
    await daemon.importImage();
  } catch (err) {
    await daemon.stop().catch(() => undefined);
    throw err;
  }
  return daemon;
}
