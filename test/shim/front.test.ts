// The native front (build/Release/kybernate-shim-front, installed as containerd-shim-kybernate-v2), run
// the way containerd runs the shim. Its Node fallback is pointed at an echo script that prints its argv,
// execArgv, cwd and stdin, which proves that exec keeps argv, environment and stdin intact without a
// daemon. Which path the front took is read from its KYBERNATE_TRACE line.
import { spareKey } from '../../src/shim/spare/launch';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { containerd, google } from '../../src/gen/proto';
import { groupOf, socketAddress } from '../../src/shim/address';
import { parseFlags } from '../../src/shim/flags';
import { type SpareRequest, FrameError, decodeRequest, encodeAnswer } from '../../src/shim/spare/protocol';

const FRONT = path.resolve(__dirname, '../../build/Release/kybernate-shim-front');
const DIST = path.resolve(__dirname, '../../dist/containerd-shim-kybernate-v2.cjs');
const NAME = 'containerd-shim-kybernate-v2';
const BUILD = '3f2a9c0e1d4b5a67';
const NS = 'kyb-front';
const isRoot = process.getuid?.() === 0;
const skip = !fs.existsSync(FRONT) ? 'build/Release/kybernate-shim-front not built (run npx node-gyp build)'
  : !isRoot ? 'needs root (listens under /run/containerd/s)' : '';

const ECHO = `'use strict';
const fs = require('node:fs');
let stdin = Buffer.alloc(0);
try { stdin = fs.readFileSync(0); } catch {}
process.stdout.write(JSON.stringify({ argv: process.argv.slice(2), execArgv: process.execArgv, cwd: process.cwd(),
  stdin: stdin.toString('base64'), probe: process.env.KYB_FRONT_PROBE ?? null }));
`;

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-front-'));
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** A front in its own directory: binary, conf, echo script, spare dir, trace file, a unique -address. */
interface Front { dir: string; bin: string; spareDir: string; trace: string; address: string; bundle: string }
function front(conf?: (dir: string) => string | undefined): Front {
  const dir = fs.mkdtempSync(path.join(root, 't-'));
  const bin = path.join(dir, NAME);
  fs.copyFileSync(FRONT, bin);
  fs.writeFileSync(path.join(dir, 'echo.cjs'), ECHO);
  const text = conf ? conf(dir) : `# test conf\nbuild=${BUILD}   # id\nnode=${process.execPath}\nscript=${path.join(dir, 'echo.cjs')}\n`;
  if (text !== undefined) fs.writeFileSync(`${bin}.conf`, text);
  const f = { dir, bin, spareDir: path.join(dir, 'spare'), trace: path.join(dir, 'trace.jsonl'),
    address: path.join(dir, 'containerd.sock'), bundle: path.join(dir, 'bundle') };
  fs.mkdirSync(f.spareDir);
  fs.mkdirSync(f.bundle);
  fs.writeFileSync(path.join(f.bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: { args: ['true'] } }));
  return f;
}

interface Out { code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: string }
interface RunOpts { cwd?: string; stdin?: Uint8Array; env?: Record<string, string> }
/** The front's environment: ours without KYBERNATE_*, then the fixture's, then `extra`. */
function frontEnv(f: Front, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KYBERNATE_')));
  return Object.assign(env, { KYBERNATE_SHIM_SPARE_DIR: f.spareDir, KYBERNATE_TRACE: f.trace }, extra);
}

function run(f: Front, args: string[], o: RunOpts = {}): Promise<Out> {
  const env = frontEnv(f, o.env);
  return new Promise((resolve, reject) => {
    const child = spawn(f.bin, args, { cwd: o.cwd ?? f.bundle, env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = []; const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`front ${args.join(' ')} timed out`)); }, 20_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.on('error', () => undefined); // a fast path may exit before reading a large stdin
    child.stdin.end(o.stdin ? Buffer.from(o.stdin) : undefined);
  });
}

interface Echo { argv: string[]; execArgv: string[]; cwd: string; stdin: string; probe: string | null }
function echo(r: Out): Echo {
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout.toString()) as Echo;
}

/** The front's trace lines so far (the JS shim adds its own, "c":"node"); one per invocation. */
function traces(f: Front): { c: string; ev: string; id: string; ms: number; t: number }[] {
  if (!fs.existsSync(f.trace)) return [];
  return fs.readFileSync(f.trace, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l)).filter((t) => t.c === 'front');
}
const lastEv = (f: Front) => traces(f).at(-1)?.ev;

/** A stand-in group daemon: accepts and drops connections on `sock` until the test ends. */
async function listen(sock: string): Promise<void> {
  fs.mkdirSync(path.dirname(sock), { recursive: true, mode: 0o700 });
  const server = net.createServer((c) => c.destroy());
  await new Promise<void>((res, rej) => { server.once('error', rej); server.listen(sock, () => res()); });
  cleanups.push(() => new Promise<void>((res) => server.close(() => { fs.rmSync(sock, { force: true }); res(); })));
}
async function daemonFor(f: Front, id: string, annotations?: Record<string, string>): Promise<string> {
  const address = socketAddress(f.address, NS, groupOf(id, annotations));
  await listen(address.slice('unix://'.length));
  return address;
}

/**
 * A spare on <spareDir>/<build>-<key>.sock (the key of the front's environment with `envExtra`, computed by
 * the TypeScript side) that answers each decoded request with `answer` (null: hang up).
 */
type Answer = (r: SpareRequest) => Buffer | null | 'silent';
async function spare(f: Front, answer: Answer, envExtra: Record<string, string> = {}): Promise<SpareRequest[]> {
  const requests: SpareRequest[] = [];
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => {
    socks.add(s);
    let buf = Buffer.alloc(0);
    s.on('data', (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      let req: SpareRequest;
      try {
        req = decodeRequest(buf);
      } catch (err) {
        if (!(err instanceof FrameError && err.incomplete)) s.destroy();
        return;
      }
      requests.push(req);
      const a = answer(req);
      if (a === null) s.end();
      else if (a !== 'silent') s.end(a);
    });
  });
  const sock = path.join(f.spareDir, `${BUILD}-${spareKey(frontEnv(f, envExtra))}.sock`);
  await new Promise<void>((res) => server.listen(sock, () => res()));
  cleanups.push(() => new Promise<void>((res) => { socks.forEach((s) => s.destroy()); server.close(() => res()); }));
  return requests;
}

const startArgs = (f: Front, id: string) => ['-namespace', NS, '-address', f.address, '-publish-binary', '/usr/bin/containerd', '-id', id, 'start'];
const NO_SPARE = { KYBERNATE_SHIM_SPARE: '0' };

describe.skipIf(!!skip)(`native shim front${skip ? ` (skipped: ${skip})` : ''}`, () => {
  describe('conf', () => {
    it('a missing conf: a clear message and exit 1', async () => {
      const f = front(() => undefined);
      const r = await run(f, ['-v']);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`${NAME}: cannot read ${f.bin}.conf (written by the build next to the binary)\n`);
    });

    it('a bad node path: exec fails with its name, exit 1', async () => {
      const f = front((d) => `build=${BUILD}\nnode=/nonexistent/node\nscript=${d}/echo.cjs\n`);
      const r = await run(f, startArgs(f, 'c1'), { env: NO_SPARE });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`${NAME}: exec /nonexistent/node: No such file or directory\n`);
    });

    it('relative or missing node/script paths are refused before anything runs', async () => {
      for (const [text, msg] of [['node=node\nscript=/x.cjs\n', 'no absolute node= path'], [`node=${process.execPath}\n`, 'no absolute script= path'],
        ['garbage line\n', 'expected key=value'], [`build=../x\nnode=/n\nscript=/s\n`, 'build= must be']]) {
        const f = front(() => text);
        const r = await run(f, ['-v']);
        expect(r.code).toBe(1);
        expect(r.stderr).toContain(msg);
        expect(r.stderr.startsWith(`${NAME}: `)).toBe(true);
      }
    });

    it('reads the conf beside the real binary when started through a symlink, with node options in order', async () => {
      const f = front((d) => `build=${BUILD}\nnode=${process.execPath}\narg=--max-semi-space-size=1\narg=--no-warnings\nscript=${d}/echo.cjs\n`);
      const link = path.join(fs.mkdtempSync(path.join(root, 'link-')), NAME);
      fs.symlinkSync(f.bin, link);
      const r = await run({ ...f, bin: link }, ['-v']);
      expect(echo(r)).toMatchObject({ argv: ['-v'], execArgv: ['--max-semi-space-size=1', '--no-warnings'] });
    });

    it.skipIf(!fs.existsSync(DIST))('-v through the real JS shim prints its version', async () => {
      const f = front(() => `build=${BUILD}\nnode=${process.execPath}\nscript=${DIST}\n`);
      const r = await run(f, ['-v']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.toString()).toMatch(/Version: \d+\.\d+\.\d+/);
      expect(lastEv(f)).toBe('version:node');
    });
  });

  it('parses argv like src/shim/flags.ts (checked through the path it takes)', async () => {
    const f = front();
    const elsewhere = fs.mkdtempSync(path.join(root, 'cwd-'));
    fs.writeFileSync(path.join(f.bundle, 'kybernate.json'), '{"deleted":true}');
    const A = f.address; const B = f.bundle;
    const variants = [
      ['-namespace', 'default', '-address', A, '-publish-binary', '/usr/bin/containerd', '-id', 'redis', '-debug', 'start'],
      ['--namespace=k8s.io', '-id=c1', '-debug=false', '-unknown-flag', 'value', '-address', A, 'start'],
      ['--namespace=k8s.io', '-id=c1', '-debug=false', '-unknown-flag', 'value', '-bundle', B, 'delete'],
      ['-v'], ['-version'], ['--v=1'], ['-info'], ['-info=true', 'start'], ['-v=false', '-id', 'x', '-bundle', B, 'delete'], [],
      ['-namespace', 'ns', '-id', 'x', 'frobnicate', '-id', 'y'], ['-id', 'x', '-namespace', 'ns', '-address', A, '--', 'start'],
      ['-', 'start'], ['-unknown', '-id', 'x', '-namespace', 'n', '-address', A, 'start'],
      ['-id', '-weird', '-namespace', 'n', '-address', A, 'start'], ['-foo', 'start', '-bundle', B, 'delete'],
      ['-id', 'a', '-id', 'b', '-namespace', 'n', `-address=${A}`, 'start'], ['-namespace', 'n', '-address', A, '-id'],
      ['-id', 'x', '-namespace', 'n', 'start'], ['-bundle', 'delete'], ['-namespace', '', '-id', 'x', '-address', A, 'start'],
    ];
    for (const argv of variants) {
      const fl = parseFlags(argv);
      const action = fl.version ? 'version' : fl.info ? 'info' : fl.action || 'daemon';
      // The fast path is set up where the TS flags point: a daemon at their address, a deleted bundle at theirs.
      let expected: string | undefined;
      if (action === 'start' && fl.id && fl.namespace && fl.address) {
        const address = socketAddress(fl.address, fl.namespace, fl.id);
        await listen(address.slice(7));
        expected = address;
      }
      const fast = expected !== undefined || (action === 'delete' && fl.bundle === B);
      const r = await run(f, argv, { cwd: action === 'start' ? B : elsewhere, env: NO_SPARE });
      expect(lastEv(f), argv.join(' ')).toBe(`${action}:${fast ? 'fast' : 'node'}`);
      if (fast && action === 'start') expect(r.stdout.toString()).toBe(expected);
      if (!fast) expect(echo(r).argv).toEqual(argv);
    }
    expect(traces(f)).toHaveLength(variants.length);
  });

  it('writes one trace line per run with a JSON-escaped id, only for an absolute KYBERNATE_TRACE', async () => {
    const f = front();
    const id = 'we"ird\\id\n\u0001é';
    const before = Date.now();
    await run(f, ['-namespace', NS, '-id', id, 'frobnicate']);
    const line = fs.readFileSync(f.trace, 'utf8');
    expect(line).toMatch(/^\{"c":"front","ev":"frobnicate:node","id":"(?:[^"\\]|\\.)*","ms":\d+\.\d{3},"t":\d+\}\n$/);
    const t = JSON.parse(line);
    expect(t.id).toBe(id);
    expect(t.t).toBeGreaterThanOrEqual(before - 5);
    expect(t.t).toBeLessThanOrEqual(Date.now() + 5);
    await run(f, ['-v'], { env: { KYBERNATE_TRACE: 'relative.jsonl' } });
    expect(fs.existsSync(path.join(f.bundle, 'relative.jsonl'))).toBe(false);
    expect(traces(f)).toHaveLength(1);
  });

  describe('start', () => {
    it('fast path: a live group daemon answers at once with its address; ./address is written 0600', async () => {
      const f = front();
      const address = await daemonFor(f, 'c1');
      const r = await run(f, startArgs(f, 'c1'));
      expect(r).toMatchObject({ code: 0, stderr: '' });
      expect(r.stdout.toString()).toBe(address);
      expect(fs.readFileSync(path.join(f.bundle, 'address'), 'utf8')).toBe(address);
      expect(fs.statSync(path.join(f.bundle, 'address')).mode & 0o777).toBe(0o600);
      expect(lastEv(f)).toBe('start:fast');
      expect(traces(f)[0].ms).toBeLessThan(200);
    });

    it('groups by annotation exactly as groupOf does', async () => {
      const f = front();
      const annotations = { 'io.kubernetes.cri.sandbox-id': 'pod-1', 'io.containerd.runc.v2.group': 'rg', other: 'x' };
      fs.writeFileSync(path.join(f.bundle, 'config.json'), JSON.stringify({ annotations, process: { env: ['A=\u00e9"'] } }, null, 2));
      const address = await daemonFor(f, 'c2', annotations);
      const r = await run(f, startArgs(f, 'c2'));
      expect(r.stdout.toString()).toBe(address);
    });

    it('no daemon and no spare: Node gets the same argv and the same binary stdin (NULs, > 64 KiB)', async () => {
      const f = front();
      const stdin = Buffer.alloc(200_000);
      for (let i = 0; i < stdin.length; i++) stdin[i] = (i * 7919) % 251; // every 251st byte is a NUL
      const args = startArgs(f, 'nodaemon');
      const e = echo(await run(f, args, { stdin, env: { ...NO_SPARE, KYB_FRONT_PROBE: 'kept' } }));
      expect(e).toMatchObject({ argv: args, execArgv: [], cwd: fs.realpathSync(f.bundle), probe: 'kept' });
      expect(Buffer.from(e.stdin, 'base64').equals(stdin)).toBe(true);
      expect(fs.existsSync(path.join(f.bundle, 'address'))).toBe(false);
      expect(lastEv(f)).toBe('start:node');
    });

    it('KYBERNATE_SHIM_FAST=0 goes to Node although a daemon listens, stdin untouched', async () => {
      const f = front();
      await daemonFor(f, 'c3');
      const e = echo(await run(f, startArgs(f, 'c3'), { stdin: Buffer.from('opts'), env: { ...NO_SPARE, KYBERNATE_SHIM_FAST: '0' } }));
      expect(Buffer.from(e.stdin, 'base64').toString()).toBe('opts');
      expect(lastEv(f)).toBe('start:node');
    });

    it('containerd 2.3 BootstrapParams for this container go to Node; other stdin keeps the fast path', async () => {
      const f = front();
      const address = await daemonFor(f, 'b1');
      const BP = containerd.runtime.bootstrap.v1.BootstrapParams;
      const mine = BP.encode({ instanceId: 'b1', namespace: NS, logLevel: -4, containerdVersion: 'v2.3.0', socketDir: '/x',
        extensions: [{ value: { type_url: 'containerd.runc.v1.Options', value: new Uint8Array([10, 1, 65]) } }] }).finish();
      const e = echo(await run(f, startArgs(f, 'b1'), { stdin: mine, env: NO_SPARE }));
      expect(Buffer.from(e.stdin, 'base64').equals(Buffer.from(mine))).toBe(true);
      expect(lastEv(f)).toBe('start:node');
      const others = [
        BP.encode({ instanceId: 'someone-else', namespace: NS }).finish(),
        BP.encode({ instanceId: 'b1', namespace: 'other-ns' }).finish(),
        google.protobuf.Any.encode({ type_url: 'containerd.runc.v1.Options', value: new Uint8Array([0x52, 2, 0x2f, 0x78]) }).finish(),
        new Uint8Array([0xff, 0xff, 0xff]), // not protobuf at all: legacy options for the JS shim too
        new Uint8Array([0x7f, 0x02, 0x62, 0x31]), // an unknown field with wire type 7: protobufjs throws
      ];
      for (const stdin of others) {
        const r = await run(f, startArgs(f, 'b1'), { stdin, env: NO_SPARE });
        expect(r.stdout.toString()).toBe(address);
        expect(lastEv(f)).toBe('start:fast');
      }
      // Where protobufjs could read the bytes otherwise (a group, field 1 as a varint or with wire type 7,
      // a 6-byte tag, a non-ASCII id that differs): not decided natively.
      const unsure = [[0x0b, 0x0c], [0x08, 0x01], [0x0f, 0x02, 0x62, 0x31], [0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00],
        BP.encode({ instanceId: 'é', namespace: NS }).finish()];
      for (const stdin of unsure) {
        await run(f, startArgs(f, 'b1'), { stdin: Uint8Array.from(stdin), env: NO_SPARE });
        expect(lastEv(f), Buffer.from(stdin).toString('hex')).toBe('start:node');
      }
    });
  });

  describe('spare', () => {
    it('a kind-0 answer is final: stdout (with NULs), stderr and the exit code are reproduced', async () => {
      const f = front();
      const stdout = Buffer.from([0, 1, 2, 0, 0x75, 0x6e, 0x69, 0x78, 0]);
      const reqs = await spare(f, () => encodeAnswer({ kind: 0, exitCode: 3, stdout, stderr: Buffer.from('warn: é\n') }));
      const stdin = Buffer.from([0, 9, 0, 8]);
      const args = startArgs(f, 's1');
      const r = await run(f, args, { stdin, env: { KYB_FRONT_PROBE: 'p=1' } });
      expect(r.code).toBe(3);
      expect(r.stdout.equals(stdout)).toBe(true);
      expect(r.stderr).toBe('warn: é\n');
      expect(lastEv(f)).toBe('start:spare');
      expect(reqs).toHaveLength(1);
      expect(reqs[0]).toMatchObject({ build: BUILD, cwd: fs.realpathSync(f.bundle), argv: args });
      expect(reqs[0].env).toContain('KYB_FRONT_PROBE=p=1');
      expect(reqs[0].env).toContain(`KYBERNATE_SHIM_SPARE_DIR=${f.spareDir}`);
      expect(reqs[0].stdin.equals(stdin)).toBe(true);
    });

    it('asks only the spare booted with the same loader/Node environment (the key both sides compute)', async () => {
      const f = front();
      const ld = { LD_LIBRARY_PATH: '/opt/x/lib:', NODE_OPTIONS: '--no-warnings', MALLOC_ARENA_MAX: '2' };
      const plain = await spare(f, () => encodeAnswer({ kind: 0, exitCode: 0, stdout: Buffer.from('plain'), stderr: Buffer.alloc(0) }));
      const withLd = await spare(f, () => encodeAnswer({ kind: 0, exitCode: 0, stdout: Buffer.from('ld'), stderr: Buffer.alloc(0) }), ld);
      expect((await run(f, startArgs(f, 'k1'), { env: ld })).stdout.toString()).toBe('ld');
      expect((await run(f, startArgs(f, 'k2'))).stdout.toString()).toBe('plain');
      expect([plain.length, withLd.length]).toEqual([1, 1]);
      // Another value of one variable is another key: no spare answers, Node runs (the echo script).
      const other = await run(f, startArgs(f, 'k3'), { env: { ...ld, MALLOC_ARENA_MAX: '4' } });
      expect(lastEv(f)).toBe('start:node');
      expect(other.stdout.toString()).not.toMatch(/^(ld|plain)$/);
    });

    it('falls back to Node for kind 1, a hang-up, garbage, and a spare that never answers (after the timeout)', async () => {
      const f = front();
      const modes: [string, Answer][] = [
        ['kind 1', () => encodeAnswer({ kind: 1, reason: 'not warm yet' })],
        ['hang-up', () => null],
        ['garbage', () => Buffer.from('KYBX garbage that is not an answer')],
        ['short', () => encodeAnswer({ kind: 0, exitCode: 0, stdout: Buffer.from('x'), stderr: Buffer.alloc(0) }).subarray(0, 14)],
        ['unknown kind', () => Buffer.concat([Buffer.from('KYBR'), Buffer.from([0, 0, 0, 7])])],
        ['silent', () => 'silent'],
      ];
      for (const [name, mode] of modes) {
        const reqs = await spare(f, mode);
        const stdin = Buffer.from('options\0bytes');
        const t0 = Date.now();
        const e = echo(await run(f, startArgs(f, 's2'), { stdin, env: { KYBERNATE_SHIM_SPARE_TIMEOUT_MS: '300' } }));
        expect(Buffer.from(e.stdin, 'base64').equals(stdin), name).toBe(true);
        expect(e.argv).toEqual(startArgs(f, 's2'));
        expect(lastEv(f)).toBe('start:node');
        expect(reqs).toHaveLength(1);
        if (name === 'silent') expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
        await cleanups.pop()!();
      }
    });

    it('no spare socket, or KYBERNATE_SHIM_SPARE=0: straight to Node', async () => {
      const f = front();
      const e = echo(await run(f, startArgs(f, 's3')));
      expect(e.argv).toEqual(startArgs(f, 's3'));
      const reqs = await spare(f, () => encodeAnswer({ kind: 0, exitCode: 0, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) }));
      echo(await run(f, startArgs(f, 's3'), { env: NO_SPARE }));
      expect(reqs).toHaveLength(0);
    });
  });

  describe('delete', () => {
    const delArgs = (bundle?: string) => ['-namespace', NS, '-address', '/run/containerd/containerd.sock', '-id', 'd1',
      ...(bundle ? ['-bundle', bundle] : []), 'delete'];

    it('fast path: a bundle the daemon marked deleted gets a DeleteResponse (-bundle or cwd)', async () => {
      const f = front();
      fs.writeFileSync(path.join(f.bundle, 'kybernate.json'), JSON.stringify({ runcRoot: '/run/containerd/runc/x', runcBinary: 'runc', systemdCgroup: false, deleted: true }));
      fs.writeFileSync(path.join(f.bundle, 'init.pid'), '4242');
      for (const [args, cwd] of [[delArgs(f.bundle), f.dir], [delArgs(), f.bundle]] as const) {
        const r = await run(f, [...args], { cwd });
        expect(r).toMatchObject({ code: 0, stderr: '' });
        const res = containerd.task.v2.DeleteResponse.decode(r.stdout);
        expect(res.pid).toBe(4242);
        expect(res.exitStatus).toBe(137);
        const at = Number(res.exitedAt?.seconds) * 1000 + (res.exitedAt?.nanos ?? 0) / 1e6;
        expect(Math.abs(at - Date.now())).toBeLessThan(5000);
        expect(lastEv(f)).toBe('delete:fast');
      }
      for (const [text, pid] of [[undefined, 0], ['garbage', 0], [' 77\n', 77], ['12abc', 12], ['-5', 0]] as const) {
        if (text === undefined) fs.rmSync(path.join(f.bundle, 'init.pid')); else fs.writeFileSync(path.join(f.bundle, 'init.pid'), text);
        const res = containerd.task.v2.DeleteResponse.decode((await run(f, delArgs(f.bundle))).stdout);
        expect(res.pid, text).toBe(pid);
        expect(res.exitStatus).toBe(137);
      }
    });

    it('anything but a top-level "deleted": true goes to the spare, then Node, with stdin untouched', async () => {
      const f = front();
      const state = path.join(f.bundle, 'kybernate.json');
      const cases: (string | undefined)[] = [undefined, '{"deleted":false}', '{"deleted":"true"}', '{"deleted":1}', '{"deleted":true',
        '{"state":{"deleted":true}}', '[{"deleted":true}]', '{"deleted":true,"deleted":false}', '\ufeff{"deleted":true}', '{"deleted":tru}'];
      for (const c of cases) {
        if (c === undefined) fs.rmSync(state, { force: true }); else fs.writeFileSync(state, c);
        const e = echo(await run(f, delArgs(f.bundle), { stdin: Buffer.from('kept'), env: NO_SPARE }));
        expect(e.argv, c).toEqual(delArgs(f.bundle));
        expect(Buffer.from(e.stdin, 'base64').toString()).toBe('kept');
        expect(lastEv(f)).toBe('delete:node');
      }
      const reqs = await spare(f, () => encodeAnswer({ kind: 0, exitCode: 0, stdout: Buffer.from('spare-delete'), stderr: Buffer.alloc(0) }));
      const r = await run(f, delArgs(f.bundle), { stdin: Buffer.from('not read') });
      expect(r.code).toBe(0);
      expect(r.stdout.toString()).toBe('spare-delete');
      expect(reqs[0]).toMatchObject({ argv: delArgs(f.bundle) });
      expect(reqs[0].stdin.length).toBe(0);
      expect(lastEv(f)).toBe('delete:spare');
    });
  });
});
