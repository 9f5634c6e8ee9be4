// Private S3 servers for tests: each startS3() runs one Ceph radosgw with its standalone SQLite backend
// (dbstore, no Ceph cluster) in a directory of its own, on a free loopback port, with one user and one
// bucket (../shared/ENVIRONMENT.md has the recipe; `make setup` installs radosgw from trixie).
//
// Invariants:
// - Every server started by a test file is SIGKILLed and its directory removed after that file (the
//   afterAll below, registered when the file imports this module) and when the test process exits;
//   directories of test processes that died are removed by the next startS3() (as containerd's are).
// - restart() keeps the port and the database: the endpoint stays valid and what was stored stays.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll } from 'vitest';
import { OWNER_FILE, daemonBaseDir, processIdentity, removeDaemonDir } from './cleanup';

export interface S3Server {
  /** http://127.0.0.1:<port>: the same for the server's whole life, restarts included. */
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** radosgw's pid; changes on restart(). */
  pid: number;
  /** The directory holding the config, the database and the log; removed by stop(). */
  dir: string;
  /** SIGKILL radosgw and remove its directory. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL radosgw (for fault tests); the directory stays for restart(). */
  kill(): Promise<void>;
  /** Start radosgw again (stopping it first if it runs) on the same port and database; wait until it answers. */
  restart(): Promise<void>;
  /** radosgw's log so far (the last 4000 characters). */
  logTail(): string;
}

const DIR_PREFIX = 'kyb-s3-';
const NAME = 'client.rgw.kybernate';
const BUCKET = 'kybernate-test';
const REGION = 'us-east-1';
const READY_TIMEOUT_MS = 30_000;
/** A SIGTERMed radosgw that has not exited by then is SIGKILLed (see createUser()). */
const STOP_TIMEOUT_MS = 5_000;
/** radosgw's exit status when its frontend cannot bind the port (EADDRINUSE). */
const EXIT_ADDR_IN_USE = 98;

function onPath(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  return dirs.filter(Boolean).map((d) => join(d, name)).find((p) => existsSync(p));
}

/** Why S3 tests cannot run here, worded for a skip message; undefined when they can. */
export function s3MissingReason(): string | undefined {
  const absent = ['radosgw', 'radosgw-admin'].filter((b) => onPath(b) === undefined);
  if (absent.length > 0) return `${absent.join(' and ')} not installed (apt-get install -t trixie radosgw, or run \`make setup\`)`;
  return undefined;
}

const live = new Set<ChildProcess>();
const servers = new Set<Radosgw>();
let leftoversCleaned: Promise<void> | undefined;

process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});
afterAll(async () => {
  await Promise.all([...servers].map((s) => s.stop()));
});

/** Removes the directories (and radosgw processes) of test processes that are gone. */
async function cleanupS3Leftovers(base: string): Promise<void> {
  for (const name of readdirSync(base)) {
    if (!name.startsWith(DIR_PREFIX)) continue;
    const dir = join(base, name);
    let owner: string | undefined;
    try {
      owner = readFileSync(join(dir, OWNER_FILE), 'utf8').trim();
    } catch {
      // No owner file yet: a young directory belongs to a process that is still setting it up.
      try {
        if (Date.now() - statSync(dir).mtimeMs < 60_000) continue;
      } catch {
        continue;
      }
    }
    if (owner !== undefined && processIdentity(Number(owner.split(' ')[0])) === owner) continue;
    await removeDaemonDir(dir);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Any HTTP answer from `endpoint` (radosgw answers an anonymous GET / with a bucket list). */
function answers(endpoint: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(`${endpoint}/`, { method: 'GET', timeout: 2_000, agent: false }, (res) => {
      res.resume();
      resolve(true);
    });
    req.once('error', () => resolve(false));
    req.once('timeout', () => req.destroy());
    req.end();
  });
}

class Radosgw implements S3Server {
  readonly region = REGION;
  readonly bucket = BUCKET;
  readonly accessKeyId = `KYB${randomBytes(8).toString('hex').toUpperCase()}`;
  readonly secretAccessKey = randomBytes(20).toString('hex');
  pid = 0;
  port = 0;
  private child: ChildProcess | undefined;
  private stopped = false;
  private readonly conf: string;
  private readonly db: string;
  private readonly log: string;

  constructor(readonly dir: string) {
    this.conf = join(dir, 'ceph.conf');
    this.db = join(dir, 'db');
    this.log = join(dir, 'radosgw.log');
    mkdirSync(this.db);
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The config names only files inside `dir`: log, admin socket and run dir default to /var/{log,run}/ceph. */
  private writeConfig(): void {
    writeFileSync(this.conf, [
      `[${NAME}]`,
      'rgw backend store = dbstore',
      'rgw config store = dbstore',
      `dbstore db dir = ${this.db}`,
      `rgw frontends = beast endpoint=127.0.0.1:${this.port}`,
      `log file = ${this.log}`,
      `admin socket = ${join(this.dir, 'radosgw.asok')}`,
      `run dir = ${this.dir}`,
      '',
    ].join('\n'));
  }

  private common(): string[] {
    return ['-c', this.conf, '-n', NAME, '--no-mon-config'];
  }

  /**
   * Before the first launch: radosgw-admin opens the database directly, which radosgw then serves. It
   * prints the user once it is stored, but at times then hangs at exit (reef 18.2.7: DB::stopGC joins a
   * GC thread that missed its stop signal, which waits out its interval), so it is killed once it printed.
   */
  async createUser(): Promise<void> {
    this.writeConfig();
    const child = spawn('radosgw-admin', [...this.common(), '--rgw-backend-store=dbstore', '--rgw-config-store=dbstore',
      `--dbstore-db-dir=${this.db}`, 'user', 'create', '--uid=kybernate-test', '--display-name=kybernate-test',
      `--access-key=${this.accessKeyId}`, `--secret=${this.secretAccessKey}`], { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let out = '';
    let err = '';
    const created = (): boolean => {
      try {
        const user = JSON.parse(out) as { keys?: { access_key?: string }[] };
        return user.keys?.some((k) => k.access_key === this.accessKeyId) ?? false;
      } catch {
        return false; // not all printed yet
      }
    };
    const timer = setTimeout(() => child.kill('SIGKILL'), READY_TIMEOUT_MS);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('utf8');
      if (created()) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d: Buffer) => { err = (err + d.toString('utf8')).slice(-4000); });
    const status = await new Promise<string>((resolve) => {
      child.once('error', (e) => resolve(e.message));
      child.once('close', (code, signal) => resolve(String(code ?? signal)));
    });
    clearTimeout(timer);
    live.delete(child);
    if (!created()) throw new Error(`radosgw-admin user create exited (${status}) without creating the user: ${err.trim()}`);
  }

  /** Starts radosgw on `this.port`; resolves when it answers, rejects (with its exit status) when it exits first. */
  async launch(): Promise<number | undefined> {
    this.writeConfig();
    // Not detached: a terminal's Ctrl-C reaches radosgw along with the test runner.
    const child = spawn('radosgw', [...this.common(), '-f'], { cwd: this.dir, stdio: ['ignore', 'ignore', 'ignore'] });
    this.child = child;
    live.add(child);
    child.once('exit', () => live.delete(child));
    child.once('error', () => live.delete(child));
    this.pid = child.pid ?? 0;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? 128;
      if (await answers(this.endpoint)) return undefined;
      if (Date.now() > deadline) throw new Error(`radosgw not ready after ${READY_TIMEOUT_MS} ms:\n${this.logTail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async createBucket(): Promise<void> {
    const client = new S3Client({
      endpoint: this.endpoint, region: this.region, forcePathStyle: true,
      credentials: { accessKeyId: this.accessKeyId, secretAccessKey: this.secretAccessKey },
    });
    try {
      await client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } finally {
      client.destroy();
    }
  }

  private async halt(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }

  async kill(): Promise<void> {
    await this.halt('SIGKILL');
  }

  async restart(): Promise<void> {
    if (this.stopped) throw new Error(`radosgw in ${this.dir} was stopped`);
    await this.halt('SIGTERM');
    // The old process's listening socket is gone once it exited; a client may briefly hold the port.
    for (let i = 0; ; i++) {
      const status = await this.launch();
      if (status === undefined) return;
      if (status !== EXIT_ADDR_IN_USE || i >= 20) {
        throw new Error(`radosgw exited (${status}) on restart:\n${this.logTail()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    servers.delete(this);
    try {
      // Its data is thrown away, and a SIGTERMed radosgw may hang in the same GC join as radosgw-admin.
      await this.halt('SIGKILL');
    } finally {
      await removeDaemonDir(this.dir);
    }
  }

  logTail(): string {
    try {
      return readFileSync(this.log, 'utf8').slice(-4000);
    } catch {
      return '(no log)';
    }
  }
}

/** A fresh radosgw with a user and an empty bucket, answering on a free loopback port. */
export async function startS3(): Promise<S3Server> {
  const reason = s3MissingReason();
  if (reason) throw new Error(reason);
  const base = daemonBaseDir();
  leftoversCleaned ??= cleanupS3Leftovers(base);
  await leftoversCleaned;
  const dir = mkdtempSync(join(base, DIR_PREFIX));
  writeFileSync(join(dir, OWNER_FILE), `${processIdentity(process.pid)}\n`);
  const s = new Radosgw(dir);
  servers.add(s);
  try {
    await s.createUser();
    // The free port is only free when we looked: another process may take it before radosgw binds it.
    for (let i = 0; ; i++) {
      s.port = await freePort();
      const status = await s.launch();
      if (status === undefined) break;
      if (status !== EXIT_ADDR_IN_USE || i >= 5) throw new Error(`radosgw exited (${status}) before it was ready:\n${s.logTail()}`);
    }
    await s.createBucket();
    return s;
  } catch (err) {
    await s.stop();
    throw err;
  }
}

