// `kybernate suspend|resume|gpu-status` through the bundled CLI: the command line, and finding and
// dialing a container's shim from containerd's state directory (both address file formats, a dead
// socket, a shim without the Control service). The calls into a real kybernate shim run in
// test/e2e/suspend.test.ts.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { locateShim } from '../../src/shim-client/client';
import Long from 'long';
import { kybernate as pb } from '../../src/gen/proto';
import { TtrpcServer } from '../../src/ttrpc';
import { KybernateError } from '../../src/errors';

const C = pb.shim.v1;

const exec = promisify(execFile);
const root = path.resolve(__dirname, '..', '..');
const cli = path.join(root, 'dist', 'kybernate.cjs');

interface Run { code: number; stdout: string; stderr: string }

async function kybernate(...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [cli, ...args], { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

let state: string;
const taskDir = (ns: string, id: string) => path.join(state, 'io.containerd.runtime.v2.task', ns, id);
function writeTask(ns: string, id: string, file: 'address' | 'bootstrap.json', content: string): void {
  fs.mkdirSync(taskDir(ns, id), { recursive: true });
  fs.writeFileSync(path.join(taskDir(ns, id), file), content);
}

beforeAll(async () => {
  state = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-cli-suspend-'));
  await exec(process.execPath, [path.join(root, 'scripts', 'bundle.cjs')]);
}, 120_000);
afterAll(() => fs.rmSync(state, { recursive: true, force: true }));

describe('kybernate suspend/resume/gpu-status: command line', () => {
  it('lists the commands in the usage text', async () => {
    const r = await kybernate('help');
    expect(r.code).toBe(0);
    for (const c of ['suspend <container>', 'resume <container>', 'gpu-status <container>']) expect(r.stdout).toContain(c);
  });

  it('usage errors exit 2 with the reason', async () => {
    const cases: Array<[string[], string]> = [
      [['suspend'], 'suspend: exactly one container id, got 0'],
      [['resume', 'a', 'b'], 'resume: exactly one container id, got 2'],
      [['suspend', '../etc'], 'invalid container id "../etc"'],
      [['suspend', '-n', 'a/b', 'x'], 'invalid namespace "a/b"'],
      [['gpu-status', '--namespace', '.hidden', 'x'], 'invalid namespace ".hidden"'],
      [['suspend', 'x', '--lock-timeout', '0'], '--lock-timeout must be a positive number of seconds, not 0'],
      [['resume', 'x', '--lock-timeout', '3'], "Unknown option '--lock-timeout'"],
      [['suspend', 'x', '--timeout', 'soon'], '--timeout must be a positive number of seconds, not soon'],
    ];
    for (const [args, msg] of cases) {
      const r = await kybernate(...args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toContain(msg);
      expect(r.stderr).toContain('usage: kybernate');
    }
    expect((await kybernate('suspend', 'x'.repeat(77))).code).toBe(2);
    expect((await kybernate('suspend', 'x'.repeat(76), '--state-dir', state)).code).toBe(1);
  });
});

describe('finding and dialing the shim', () => {
  it('reads `address` (with or without unix://) and 2.x bootstrap.json', () => {
    writeTask('ns1', 'a', 'address', 'unix:///run/x/s/abc\n');
    writeTask('ns1', 'b', 'address', '/run/x/s/def');
    writeTask('ns1', 'c', 'bootstrap.json', JSON.stringify({ version: 2, address: 'unix:///run/x/s/ghi', protocol: 'ttrpc' }));
    expect(locateShim(state, 'ns1', 'a')).toEqual({ dir: taskDir('ns1', 'a'), socket: '/run/x/s/abc' });
    expect(locateShim(state, 'ns1', 'b').socket).toBe('/run/x/s/def');
    expect(locateShim(state, 'ns1', 'c').socket).toBe('/run/x/s/ghi');
    writeTask('ns1', 'd', 'bootstrap.json', JSON.stringify({ version: 2, address: 'unix:///x', protocol: 'grpc' }));
    expect(() => locateShim(state, 'ns1', 'd')).toThrow('the shim of container d speaks grpc, not ttrpc');
    writeTask('ns1', 'e', 'address', 'tcp://1.2.3.4:5');
    expect(() => locateShim(state, 'ns1', 'e')).toThrow('unsupported shim address "tcp://1.2.3.4:5"');
  });

  it('no task: exit 1 naming the container, namespace and where it looked (also as JSON)', async () => {
    const r = await kybernate('suspend', 'ghost', '-n', 'ns1', '--state-dir', state);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`kybernate: container ghost has no running task in namespace ns1 (nothing at ${taskDir('ns1', 'ghost')}; `
      + 'is --state-dir containerd\'s state directory?)\n');
    const j = await kybernate('resume', 'ghost', '-n', 'ns1', '--state-dir', state, '--json');
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, id: 'ghost', namespace: 'ns1', code: 'KYB_ERR_NOT_FOUND' });
  });

  it('a dead socket: exit 1, cannot reach the shim', async () => {
    const sock = path.join(state, 'dead.sock');
    writeTask('default', 'dead', 'address', `unix://${sock}`);
    const r = await kybernate('gpu-status', 'dead', '--state-dir', state);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^kybernate: cannot reach the shim of container dead at ${sock}: connect ENOENT`));
  });

  it('a shim without the Control service is named as not kybernate\'s', async () => {
    const sock = path.join(state, 'other.sock');
    const server = new TtrpcServer();
    server.register('containerd.task.v2.Task', { State: async () => new Uint8Array() });
    await server.listen(sock);
    try {
      writeTask('ns2', 'other', 'address', `unix://${sock}`);
      const r = await kybernate('suspend', 'other', '-n', 'ns2', '--state-dir', state);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^kybernate: container other is not run by the kybernate runtime \(its shim has no kybernate\.shim\.v1\.Control\/Suspend: /);
    } finally {
      await server.close();
    }
  });

  it('UNIMPLEMENTED names the shim as not kybernate\'s by its code alone, whatever its text', async () => {
    const sock = path.join(state, 'terse.sock');
    const server = new TtrpcServer();
    // A server whose lookup words its answer differently from ours (no "service" or "method" in it).
    server.register('kybernate.shim.v1.Control', {
      Suspend: async () => { throw new KybernateError('KYB_ERR_UNIMPLEMENTED', 'unknown'); },
    });
    await server.listen(sock);
    try {
      writeTask('ns4', 'terse', 'address', `unix://${sock}`);
      const r = await kybernate('suspend', 'terse', '-n', 'ns4', '--state-dir', state);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe('kybernate: container terse is not run by the kybernate runtime (its shim has no kybernate.shim.v1.Control/Suspend: unknown)\n');
    } finally {
      await server.close();
    }
  });

  it('gpu-status sends the namespace and turns the reply into text and JSON', async () => {
    const sock = path.join(state, 'status.sock');
    const server = new TtrpcServer();
    const seen: Array<{ ns: unknown; id: string }> = [];
    const since = Date.UTC(2026, 10, 25, 12, 0, 0, 250);
    server.register('kybernate.shim.v1.Control', {
      Status: async (payload, ctx) => {
        const req = C.StatusRequest.decode(payload);
        seen.push({ ns: ctx.metadata.get('containerd-namespace-ttrpc'), id: req.id });
        return C.StatusResponse.encode({
          id: req.id, suspended: true, suspendedAt: { seconds: Long.fromNumber(Math.floor(since / 1000)), nanos: 250e6 },
          cudaPids: [41, 42], taskStatus: 'paused',
        }).finish();
      },
    });
    await server.listen(sock);
    try {
      writeTask('ns3', 'gpu1', 'address', `unix://${sock}`);
      const t = await kybernate('gpu-status', 'gpu1', '-n', 'ns3', '--state-dir', state);
      expect(t).toEqual({ code: 0, stderr: '', stdout: 'container gpu1: suspended since 2026-11-25T12:00:00.250Z (CUDA pids 41, 42; task paused)\n' });
      const j = await kybernate('gpu-status', 'gpu1', '-n', 'ns3', '--state-dir', state, '--json');
      expect(JSON.parse(j.stdout)).toEqual({
        ok: true, id: 'gpu1', namespace: 'ns3', suspended: true, suspendedAt: '2026-11-25T12:00:00.250Z', cudaPids: [41, 42], taskStatus: 'paused',
      });
      expect(seen).toEqual([{ ns: ['ns3'], id: 'gpu1' }, { ns: ['ns3'], id: 'gpu1' }]);
    } finally {
      await server.close();
    }
  });
});
