// What test/bench/agent.cjs needs besides the harness: cleanups that run once however the run ends, the
// agent as a process of its own (bin/kybernate-agent, as installed), plain runc on an OCI bundle of the
// test image, and small formatting.
'use strict';

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { promisify } = require('node:util');
const { REPO } = require('./helpers.cjs');

const exec = promisify(execFile);
const AGENT_BIN = path.join(REPO, 'bin', 'kybernate-agent');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Cleanups, last added first; each runs once, at the end, after a failure or on SIGINT/SIGTERM. */
class Cleanup {
  constructor() {
    this.entries = [];
    this.failed = false;
  }

  /** Registers `fn`; the returned function runs it now (and unregisters it). */
  add(what, fn) {
    const e = { what, fn };
    this.entries.push(e);
    return () => this.runOne(e);
  }

  async runOne(e) {
    const i = this.entries.indexOf(e);
    if (i < 0) return;
    this.entries.splice(i, 1);
    try {
      await e.fn();
    } catch (err) {
      this.failed = true;
      console.error(`cleanup of ${e.what} failed: ${err instanceof Error ? err.message : err}`);
    }
  }

  async runAll() {
    while (this.entries.length > 0) await this.runOne(this.entries[this.entries.length - 1]);
  }
}

async function timed(fn) {
  const t0 = process.hrtime.bigint();
  const v = await fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value: v };
}

/**
 * Starts bin/kybernate-agent for `cd` with its socket, snapshot directory and an empty config file in
 * `dir` (so /etc is never read), metrics off; resolves once it logged `listening`.
 */
function startAgent({ cd, dir, env = {} }) {
  const snapshots = path.join(dir, 'snapshots');
  fs.mkdirSync(snapshots, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), '{}\n');
  const args = [
    '--config', path.join(dir, 'config.json'),
    '--containerd-address', cd.address, '--containerd-state', cd.state,
    '--socket', path.join(dir, 'run', 'agent.sock'), '--snapshot-dir', snapshots, '--metrics', 'off',
  ];
  const child = spawn(AGENT_BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let ready = false;
  const exited = new Promise((r) => child.once('exit', (code, signal) => r(code ?? signal)));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    if (await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)])) return;
    child.kill('SIGKILL');
    await exited;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kybernate-agent did not listen within 30 s:\n${out}`));
    }, 30_000);
    const onData = (d) => {
      out = (out + d.toString()).slice(-65536);
      if (ready) return;
      const line = out.split('\n').slice(0, -1).find((l) => l.includes('"msg":"listening"'));
      if (!line) return;
      ready = true;
      clearTimeout(timer);
      resolve({ pid: child.pid, socket: JSON.parse(line).socket, snapshots, logs: () => out, stop });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    void exited.then((code) => {
      if (ready) return;
      clearTimeout(timer);
      reject(new Error(`kybernate-agent exited ${code} before listening:\n${out}`));
    });
  });
}

/**
 * runc itself on an OCI bundle: the test image's layers unpacked into rootfs/, `runc spec` with the
 * counter as process (no terminal, writable rootfs), its own --root. Containers get pipes as stdio, as
 * containerd's shims give them. `env` reaches criu through runc (CRIU_FAULT, see README "This VM").
 */
class PlainRunc {
  constructor(dir, env) {
    this.dir = dir;
    this.root = path.join(dir, 'root');
    this.bundle = path.join(dir, 'bundle');
    this.env = { ...process.env, ...env };
    delete this.env.NOTIFY_SOCKET;
    /** runc commands under way: destroy() waits for them, then refuses new ones. */
    this.inflight = new Set();
    this.closed = false;
  }

  track(p) {
    if (this.closed) return Promise.reject(new Error('plain runc: destroyed (interrupted)'));
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }

  async prepare(imageTar, args) {
    const oci = path.join(this.dir, 'oci');
    const rootfs = path.join(this.bundle, 'rootfs');
    for (const d of [oci, rootfs, this.root]) fs.mkdirSync(d, { recursive: true });
    await exec('tar', ['-xf', imageTar, '-C', oci]);
    const blob = (digest) => path.join(oci, 'blobs', ...digest.split(':'));
    let m = JSON.parse(fs.readFileSync(path.join(oci, 'index.json'), 'utf8'));
    while (m.manifests) m = JSON.parse(fs.readFileSync(blob(m.manifests[0].digest), 'utf8'));
    for (const layer of m.layers) await exec('tar', ['-xf', blob(layer.digest), '-C', rootfs]);
    fs.rmSync(oci, { recursive: true, force: true });
    await exec('runc', ['spec', '--bundle', this.bundle]);
    const file = path.join(this.bundle, 'config.json');
    const spec = JSON.parse(fs.readFileSync(file, 'utf8'));
    spec.process.terminal = false;
    spec.process.args = args;
    spec.root = { path: 'rootfs', readonly: false };
    fs.writeFileSync(file, JSON.stringify(spec, null, 2));
  }

  ok(args) {
    return this.track(exec('runc', ['--root', this.root, ...args], { cwd: this.bundle, env: this.env, timeout: 120_000 }).then(
      (r) => r.stdout,
      (err) => { throw new Error(`runc ${args.join(' ')} failed: ${(err.stderr || err.message).trim()}`); }));
  }

  /**
   * A runc command that leaves a container running: done when runc exits. Its stdio are pipes (CRIU
   * dumps a container's pipes to the outside and runc restore hands the new ones in; node's own stdio
   * pipes are unix sockets, and /dev/null opened outside the container is on no mount CRIU can see),
   * made with the addon's pipe(); runc's errors are read back from its log.
   */
  detached(args) {
    if (this.closed) return Promise.reject(new Error('plain runc: destroyed (interrupted)'));
    const native = require(path.join(REPO, 'build', 'Release', 'kybernate.node'));
    const log = path.join(this.dir, 'runc.log');
    const from = fs.existsSync(log) ? fs.statSync(log).size : 0;
    const pipes = [native.pipe(), native.pipe(), native.pipe()];
    const theirs = [pipes[0][0], pipes[1][1], pipes[2][1]];
    const ours = [pipes[0][1], pipes[1][0], pipes[2][0]];
    const closeAll = (fds) => { for (const fd of fds.splice(0)) fs.closeSync(fd); };
    let child;
    try {
      child = spawn('runc', ['--root', this.root, '--log', log, ...args], { cwd: this.bundle, env: this.env, stdio: theirs });
    } catch (err) {
      closeAll(ours);
      throw err;
    } finally {
      closeAll(theirs); // the child has its copies once spawn() returned
    }
    return this.track(new Promise((resolve, reject) => {
      child.on('error', (err) => { closeAll(ours); reject(err); });
      child.on('exit', (code, signal) => {
        closeAll(ours);
        if (code === 0) return resolve();
        const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').slice(from).trim() : '';
        reject(new Error(`runc ${args.join(' ')} failed (${code ?? signal}): ${text}`));
      });
    }));
  }

  pidFile(id) { return path.join(this.dir, `${id}.pid`); }
  pid(id) { return Number(fs.readFileSync(this.pidFile(id), 'utf8').trim()); }

  run(id) { return this.detached(['run', '-d', '--pid-file', this.pidFile(id), '--bundle', this.bundle, id]); }
  checkpoint(id, images) { return this.ok(['checkpoint', '--image-path', images, id]); }
  restore(id, images) {
    return this.detached(['restore', '-d', '--image-path', images, '--pid-file', this.pidFile(id), '--bundle', this.bundle, id]);
  }

  async status(id) { return JSON.parse(await this.ok(['state', id])).status; }

  /** Kills and deletes `id` if runc knows it; never throws. */
  async remove(id) {
    const q = { cwd: this.bundle, env: this.env, timeout: 30_000 };
    await exec('runc', ['--root', this.root, 'kill', id, 'KILL'], q).catch(() => undefined);
    await exec('runc', ['--root', this.root, 'delete', '-f', id], q).catch(() => undefined);
    fs.rmSync(this.pidFile(id), { force: true });
  }

  /** Waits for runc commands under way, then removes every container of this root, then the directory. */
  async destroy() {
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    const list = async () => (await exec('runc', ['--root', this.root, 'list', '-q'], { env: this.env }).catch(() => ({ stdout: '' }))).stdout;
    if (fs.existsSync(this.root)) {
      const ids = (await list()).split('\n').map((s) => s.trim()).filter(Boolean);
      for (const id of ids) await this.remove(id);
      const left = (await list()).trim();
      if (left) throw new Error(`runc containers left in ${this.root}: ${left.split('\n').join(', ')}`);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The empty cgroup containerd leaves for a namespace (every v1 hierarchy, or v2's root); never throws. */
function removeNamespaceCgroups(namespace) {
  const root = '/sys/fs/cgroup';
  let dirs = [];
  try {
    dirs = [root, ...fs.readdirSync(root).map((c) => path.join(root, c))];
  } catch {
    return;
  }
  for (const d of dirs) {
    try {
      fs.rmdirSync(path.join(d, namespace));
    } catch {
      // not there, or still in use
    }
  }
}

const ms = (x) => (x < 10 ? `${x.toFixed(2)} ms` : x < 100 ? `${x.toFixed(1)} ms` : `${x.toFixed(0)} ms`);
const diff = (a, b) => `${a >= b ? '+' : '-'}${ms(Math.abs(a - b))}`;
const ratio = (a, b) => `${(a / b).toFixed(2)}x`;

function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  return rows.map((r) => `  ${r.map((cell, c) => (c === 0 ? String(cell).padEnd(widths[c]) : String(cell).padStart(widths[c]))).join('   ')}`).join('\n');
}

/**
 * Runs a bench's main(cleanup) and exits: 0, 1 when it (or its cleanup) failed, 130 on SIGINT/SIGTERM; the
 * cleanups run once however it ends.
 */
function runBench(main) {
  const cleanup = new Cleanup();
  let finishing = false;
  const finish = async (code) => {
    if (finishing) return;
    finishing = true;
    await cleanup.runAll();
    process.exit(cleanup.failed ? 1 : code);
  };
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      console.error(`\n${sig}: cleaning up`);
      void finish(130);
    });
  }
  main(cleanup).then(() => finish(0), (err) => {
    if (finishing) return; // interrupted: what failed after that is the cleanup's doing
    console.error(err instanceof Error ? err.stack : err);
    void finish(1);
  });
}

module.exports = { AGENT_BIN, Cleanup, PlainRunc, removeNamespaceCgroups, runBench, startAgent, timed, ms, diff, ratio, table };
