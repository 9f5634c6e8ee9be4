// Private Docker Engine daemons for end-to-end tests and benchmarks: a dockerd started against one of the
// harness's containerd daemons (daemon.json "containerd"), with its data root, exec root, pid file, socket
// and config in a directory below that containerd's own, so that a test run killed halfway leaves nothing
// that cleanupLeftovers() does not remove with the containerd directory (dockerd's command line names it).
//
// The Kybernate runtime is declared as the README's daemon.json declares it
// ("runtimes": {"kybernate": {"runtimeType": "io.containerd.kybernate.v2"}}); containerd finds this
// checkout's shim first on its PATH, as for ctr. No iptables and no bridge (this VM has neither to spare):
// containers run with `--network none` (or host). live-restore is on, so restart() keeps containers running.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { removeDaemonDir, terminate } from './cleanup';
import {
  SHIM_RUNTIME, TEST_IMAGE_TAR, ensureTestImage, execCollect, type Containerd, type CtrOptions, type CtrResult,
} from './containerd';

/** The runtime name daemon.json gives io.containerd.kybernate.v2 (`docker run --runtime kybernate`). */
export const DOCKER_RUNTIME = 'kybernate';
/** TEST_IMAGE as `docker load` tags it. */
export const DOCKER_TEST_IMAGE = 'busybox:kybernate-test';

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;
const LOG_LIMIT = 4 << 20;
const SYSTEM_DIRS = ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin'];

function findOnPath(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...SYSTEM_DIRS];
  return dirs.map((d) => join(d, name)).find((p) => existsSync(p));
}

/** dockerd: $KYBERNATE_DOCKERD, else the first on PATH (Debian's docker.io puts it in /usr/sbin). */
export function dockerdPath(): string | undefined {
  const env = process.env.KYBERNATE_DOCKERD;
  if (env !== undefined) return existsSync(env) ? env : undefined;
  return findOnPath('dockerd');
}

/**
 * The docker CLI: $KYBERNATE_DOCKER_CLI, else the one installed beside dockerd (<prefix>/bin/docker, the
 * same release: docker-cli for docker.io), else the first on PATH.
 */
export function dockerCliPath(): string | undefined {
  if (process.env.KYBERNATE_DOCKER_CLI) return process.env.KYBERNATE_DOCKER_CLI;
  const dockerd = dockerdPath();
  const beside = dockerd ? join(dirname(dirname(dockerd)), 'bin', 'docker') : undefined;
  return beside && existsSync(beside) ? beside : findOnPath('docker');
}

/** Why Docker Engine cannot be tested here, worded for a skip message; undefined when it can. */
export function dockerMissingReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (dockerd runs as root)';
  if (!dockerdPath()) {
    const env = process.env.KYBERNATE_DOCKERD;
    return `dockerd not installed${env ? ` (KYBERNATE_DOCKERD=${env} does not exist)` : ''} (make setup installs docker.io from Debian trixie)`;
  }
  if (!dockerCliPath()) return 'the docker CLI is not installed (make setup installs docker-cli from Debian trixie)';
  return undefined;
}

/** `dockerd --version`, e.g. "Docker version 26.1.5+dfsg1, build 411e817". */
export function dockerdVersion(): string {
  const dockerd = dockerdPath();
  if (!dockerd) return 'not installed';
  try {
    return execFileSync(dockerd, ['--version'], { encoding: 'utf8', timeout: 10_000 }).trim();
  } catch (err) {
    return `unusable (${(err as Error).message.split('\n')[0]})`;
  }
}

export interface Docker {
  /** DOCKER_HOST for this daemon: unix://<dir>/docker.sock. */
  readonly host: string;
  /** What a docker CLI needs to talk to this daemon: DOCKER_HOST, and DOCKER_CONFIG (not ~/.docker). */
  readonly env: Record<string, string>;
  readonly dir: string;
  /** daemon.json, as written. */
  readonly config: Record<string, unknown>;
  /** dockerd's pid; changes on restart(). */
  readonly pid: number;
  readonly containerd: Containerd;
  /** The docker CLI against this daemon; timeoutMs (default 60 s) as for ctr. */
  docker(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** Like docker(), but throws (with stderr) on a non-zero exit; resolves to stdout, trimmed. */
  dockerOk(args: string[], opts?: CtrOptions): Promise<string>;
  /** `docker inspect --format {{json <path>}} id`, parsed. */
  inspect<T = unknown>(id: string, path?: string): Promise<T>;
  /** SIGTERM dockerd (live-restore: its containers keep running), start it again, wait until it answers. */
  restart(): Promise<void>;
  /** Removes every container (docker rm -f), stops dockerd, unmounts and removes its directory. */
  stop(): Promise<void>;
  /** dockerd's stdout and stderr so far (the last 4 MiB). */
  logs(): string;
}

export interface DockerOptions {
  /** daemon.json "runtimes"; default { kybernate: { runtimeType: io.containerd.kybernate.v2 } }. */
  runtimes?: Record<string, unknown>;
  /** daemon.json "live-restore"; default true. */
  liveRestore?: boolean;
  /** Environment for the docker CLI calls. */
  env?: Record<string, string>;
}

/** Whether the image tarball has Docker's manifest.json (older builds of it have only the OCI layout). */
function loadableByDocker(tarball: string): boolean {
  try {
    return execFileSync('tar', ['-tf', tarball], { encoding: 'utf8', timeout: 30_000 }).split('\n').includes('manifest.json');
  } catch {
    return false;
  }
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** A test process that exits without stop() must not leave dockerd running (its containers go with containerd's cleanup). */
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => { for (const c of live) c.kill('SIGKILL'); });
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

class Daemon implements Docker {
  readonly host: string;
  readonly config: Record<string, unknown>;
  readonly env: Record<string, string>;
  pid = 0;
  private child: ChildProcess | undefined;
  private log = '';
  private stopped = false;
  private readonly configPath: string;
  private readonly cli: string;
  private readonly cliEnv: NodeJS.ProcessEnv;

  constructor(readonly containerd: Containerd, readonly dir: string, opts: DockerOptions) {
    const socket = join(dir, 'docker.sock');
    this.host = `unix://${socket}`;
    this.configPath = join(dir, 'daemon.json');
    this.cli = dockerCliPath() ?? 'docker';
    this.config = {
      containerd: containerd.address,
      'data-root': join(dir, 'root'),
      'exec-root': join(dir, 'x'),
      pidfile: join(dir, 'docker.pid'),
      hosts: [this.host],
      runtimes: opts.runtimes ?? { [DOCKER_RUNTIME]: { runtimeType: SHIM_RUNTIME } },
      'live-restore': opts.liveRestore ?? true,
      // docker checkpoint is experimental in Docker 26.
      experimental: true,
      iptables: false,
      ip6tables: false,
      bridge: 'none',
      'log-level': process.env.KYBERNATE_DOCKERD_LOG_LEVEL ?? 'info',
    };
    writeFileSync(this.configPath, `${JSON.stringify(this.config, null, 2)}\n`);
    mkdirSync(join(dir, 'cli'), { recursive: true });
    // The CLI's own config (~/.docker) stays out of it.
    this.env = { DOCKER_HOST: this.host, DOCKER_CONFIG: join(dir, 'cli') };
    this.cliEnv = { ...process.env, ...this.env, ...opts.env };
  }

  docker(args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
    return execCollect(this.cli, args, { ...this.cliEnv, ...opts.env }, opts);
  }

  async dockerOk(args: string[], opts?: CtrOptions): Promise<string> {
    const r = await this.docker(args, opts);
    if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }

  async inspect<T = unknown>(id: string, path = ''): Promise<T> {
    return JSON.parse(await this.dockerOk(['inspect', '--format', `{{json .${path.replace(/^\./, '')}}}`, id])) as T;
  }

  logs(): string {
    return this.log;
  }

  async launch(): Promise<void> {
    const dockerd = dockerdPath();
    if (!dockerd) throw new Error('dockerd not installed');
    const child = spawn(dockerd, ['--config-file', this.configPath], { env: process.env, cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    track(child);
    child.stdout?.on('data', (d: Buffer) => this.append(d));
    child.stderr?.on('data', (d: Buffer) => this.append(d));
    this.pid = child.pid ?? 0;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`dockerd exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${this.log.slice(-4000)}`);
      }
      const r = await this.docker(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 5_000 });
      if (r.code === 0) return;
      if (Date.now() > deadline) throw new Error(`dockerd not ready after ${READY_TIMEOUT_MS} ms:\n${this.log.slice(-4000)}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  private append(chunk: Buffer): void {
    this.log += chunk.toString('utf8');
    if (this.log.length > LOG_LIMIT) this.log = this.log.slice(-LOG_LIMIT / 2);
  }

  private halt(): Promise<void> {
    return terminate(this.child, STOP_TIMEOUT_MS);
  }

  async restart(): Promise<void> {
    if (this.stopped) throw new Error(`dockerd in ${this.dir} was stopped`);
    await this.halt();
    await this.launch();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try {
      const child = this.child;
      if (child && child.exitCode === null && child.signalCode === null) {
        const ids = (await this.docker(['ps', '-aq'], { timeoutMs: 15_000 })).stdout.split('\n').filter(Boolean);
        if (ids.length > 0) await this.docker(['rm', '-f', ...ids], { timeoutMs: 60_000 });
      }
    } finally {
      await this.halt();
      await removeDaemonDir(this.dir);
    }
  }
}

/**
 * Starts dockerd against `cd` in a fresh directory below cd.dir and `docker load`s the test image (rebuilding
 * the tarball first when it predates Docker's manifest.json). Throws with dockerMissingReason() when Docker
 * is not installed. Stop it before `cd`.
 */
export async function startDocker(cd: Containerd, opts: DockerOptions = {}): Promise<Docker> {
  const missing = dockerMissingReason();
  if (missing !== undefined) throw new Error(`cannot start dockerd: ${missing}`);
  ensureTestImage();
  if (!loadableByDocker(TEST_IMAGE_TAR)) ensureTestImage(true);
  const d = new Daemon(cd, mkdtempSync(join(cd.dir, 'dk-')), opts);
  try {
    await d.launch();
    await d.dockerOk(['load', '--quiet', '--input', TEST_IMAGE_TAR], { timeoutMs: 120_000 });
  } catch (err) {
    await d.stop().catch(() => undefined);
    throw err;
  }
  return d;
}
