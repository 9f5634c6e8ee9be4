// The shim binary's one-shot actions, run the way containerd runs them (argv, cwd = bundle, stdin),
// including containerd 2.3's BootstrapParams, which no containerd installed here sends.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { containerd } from '../../src/gen/proto';
import { TtrpcClient } from '../../src/ttrpc';

const BIN = path.resolve(__dirname, '../../bin/containerd-shim-kybernate-v2');
const built = fs.existsSync(BIN);
const isRoot = process.getuid?.() === 0;
const skip = !built ? 'bin/containerd-shim-kybernate-v2 not built (run make build)' : !isRoot ? 'needs root (socket directory and subreaper)' : '';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-boot-'));
const daemons = new Set<number>();

function bundle(id: string, annotations: Record<string, string> = {}): string {
  const dir = path.join(tmp, id);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: { args: ['true'] }, annotations }));
  return dir;
}

interface Out { code: number | null; stdout: Buffer; stderr: Buffer }
// The Node path of `start`, which launches a daemon of its own: no warm spare (test/e2e/spare.test.ts
// covers the spare's path), so the daemon found is always the one this start launched.
const NODE_PATH_ENV: NodeJS.ProcessEnv = { ...process.env, KYBERNATE_SHIM_SPARE: '0' };

function runShim(args: string[], cwd: string, stdin?: Uint8Array, env: NodeJS.ProcessEnv = NODE_PATH_ENV): Promise<Out> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = []; const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`shim ${args.join(' ')} timed out`)); }, 15_000);
    // 'close' fires only when every holder of the pipes closed them: a daemon that kept
    // containerd's pipes would make this hang.
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }); });
    child.stdin.end(stdin ? Buffer.from(stdin) : undefined);
  });
}

function daemonPids(socket: string): number[] {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(socket);
    } catch {
      return false;
    }
  });
}

async function shutdown(address: string): Promise<void> {
  const client = await TtrpcClient.connect(address.replace('unix://', ''));
  await client.call('containerd.task.v2.Task', 'Shutdown', containerd.task.v2.ShutdownRequest.encode({ id: 'x' }).finish()).catch(() => undefined);
  client.destroy();
}

afterAll(() => {
  for (const pid of daemons) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  fs.rmSync(tmp, { recursive: true, force: true });
});

const flags = (id: string, ns = 'kyb-boot') => ['-namespace', ns, '-address', path.join(tmp, 'containerd.sock'), '-publish-binary', '/usr/bin/containerd', '-id', id];

describe.skipIf(!!skip)(`shim binary actions${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('start prints only the plain address, writes the address file, and the daemon is listening when start exits', async () => {
    const dir = bundle('plain1');
    const r = await runShim([...flags('plain1'), 'start'], dir);
    expect(r.stderr.toString()).toBe('');
    expect(r.code).toBe(0);
    const address = r.stdout.toString();
    expect(address).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    expect(fs.readFileSync(path.join(dir, 'address'), 'utf8')).toBe(address);
    const sock = address.slice('unix://'.length);
    expect((fs.statSync(sock).mode & 0o777).toString(8)).toBe('600');
    const pids = daemonPids(sock);
    expect(pids).toHaveLength(1);
    pids.forEach((p) => daemons.add(p));
    // The daemon holds none of start's stdio: fds 0-1 are /dev/null, its stderr a file in the bundle.
    for (const fd of [0, 1]) expect(fs.readlinkSync(`/proc/${pids[0]}/fd/${fd}`)).toBe('/dev/null');
    expect(fs.readlinkSync(`/proc/${pids[0]}/fd/2`)).toBe(path.join(dir, 'shim-stderr.log'));
    const client = await TtrpcClient.connect(sock);
    const res = containerd.task.v2.ConnectResponse.decode(await client.call('containerd.task.v2.Task', 'Connect',
      containerd.task.v2.ConnectRequest.encode({ id: 'plain1' }).finish()));
    expect(res.shimPid).toBe(pids[0]);
    client.destroy();
    await shutdown(address);
  });

  it('answers containerd 2.3 BootstrapParams with a BootstrapResult and honours socket_dir', async () => {
    const dir = bundle('boot23');
    const socketDir = path.join(tmp, 's');
    const params = containerd.runtime.bootstrap.v1.BootstrapParams.encode({
      instanceId: 'boot23', namespace: 'kyb-boot', logLevel: -4, containerdVersion: 'v2.3.0',
      containerdTtrpcAddress: path.join(tmp, 'containerd.sock.ttrpc'), socketDir,
    }).finish();
    const r = await runShim([...flags('boot23'), 'start'], dir, params);
    expect(r.stderr.toString()).toBe('');
    const result = containerd.runtime.bootstrap.v1.BootstrapResult.decode(r.stdout);
    expect(result.version).toBe(2);
    expect(result.protocol).toBe('ttrpc');
    expect(result.address.startsWith(`unix://${socketDir}/`)).toBe(true);
    daemonPids(result.address.slice(7)).forEach((p) => daemons.add(p));
    await shutdown(result.address);
  });

  it('treats BootstrapParams for another id as legacy options: plain address', async () => {
    const dir = bundle('legacy1');
    const params = containerd.runtime.bootstrap.v1.BootstrapParams.encode({ instanceId: 'someone-else', namespace: 'kyb-boot' }).finish();
    const r = await runShim([...flags('legacy1'), 'start'], dir, params);
    expect(r.stdout.toString()).toMatch(/^unix:\/\//);
    daemonPids(r.stdout.toString().slice(7)).forEach((p) => daemons.add(p));
    await shutdown(r.stdout.toString());
  });

  it('concurrent starts of one group all get the same address and share one daemon', async () => {
    const ids = Array.from({ length: 6 }, (_, i) => `grp${i}`);
    const outs = await Promise.all(ids.map((id) => runShim([...flags(id), 'start'], bundle(id, { 'io.kybernate.group': 'g1' }))));
    const addresses = new Set(outs.map((o) => o.stdout.toString()));
    expect(outs.every((o) => o.code === 0 && o.stderr.length === 0)).toBe(true);
    expect(addresses.size).toBe(1);
    const [address] = addresses;
    const pids = daemonPids(address.slice(7));
    pids.forEach((p) => daemons.add(p));
    expect(pids).toHaveLength(1);
    await shutdown(address);
  });

  it('delete is idempotent, fast and prints only a DeleteResponse', async () => {
    const dir = bundle('del1');
    for (let i = 0; i < 2; i++) {
      const r = await runShim([...flags('del1'), '-bundle', dir, 'delete'], dir);
      expect(r.code).toBe(0);
      const res = containerd.task.v2.DeleteResponse.decode(r.stdout);
      expect(res.exitStatus).toBe(137);
      expect(Number(res.exitedAt?.seconds)).toBeGreaterThan(Date.now() / 1000 - 60);
    }
  });

  it('-v prints a version and -info a RuntimeInfo', async () => {
    const v = await runShim(['-v'], tmp);
    expect(v.stdout.toString()).toMatch(/Version: \d+\.\d+\.\d+/);
    const info = await runShim(['-info'], tmp);
    expect(containerd.types.RuntimeInfo.decode(info.stdout).name).toBe('io.containerd.kybernate.v2');
  });

  it('an unknown action fails with a message and a non-zero status', async () => {
    const r = await runShim([...flags('x'), 'frobnicate'], tmp);
    expect(r.code).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/unknown action/);
  });
});

