// `containerd-shim-kybernate-v2 -info` run as containerd 2.x runs it (PluginInfo, the idmap-mount check):
// runtime options on stdin, a RuntimeInfo protobuf on stdout whose features are `runc features`, as
// containerd's runc shim answers.
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { containerd, google } from '../../src/gen/proto';
import { FEATURES_TYPE_URL } from '../../src/shim/manager/info';

const BIN = path.resolve(__dirname, '../../bin/containerd-shim-kybernate-v2');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-info-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function hasRunc(): boolean {
  try {
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const skip = !fs.existsSync(BIN) ? 'bin/containerd-shim-kybernate-v2 not built (run make build)' : !hasRunc() ? 'runc not on PATH' : '';

function info(stdin: Uint8Array): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['-info'], { cwd: tmp, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = []; const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('-info timed out')); }, 20_000);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }); });
    child.stdin.end(Buffer.from(stdin));
  });
}

function anyOf(typeUrl: string, value: Uint8Array): Uint8Array {
  return google.protobuf.Any.encode({ type_url: typeUrl, value }).finish();
}

function featuresJson(r: containerd.types.RuntimeInfo): unknown {
  expect(r.features?.type_url).toBe(FEATURES_TYPE_URL);
  return JSON.parse(Buffer.from(r.features?.value ?? new Uint8Array()).toString('utf8'));
}

describe.skipIf(skip !== '')(`-info${skip ? ` (${skip})` : ''}`, () => {
  it('without options: name, version and `runc features` as runtime-spec Features', async () => {
    const r = await info(new Uint8Array());
    expect(r.code, r.stderr).toBe(0);
    const msg = containerd.types.RuntimeInfo.decode(r.stdout);
    expect(msg.name).toBe('io.containerd.kybernate.v2');
    expect(msg.version?.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(featuresJson(msg)).toEqual(JSON.parse(execFileSync('runc', ['features'], { encoding: 'utf8' })));
    expect(msg.options).toBeNull();
  });

  it('with runc options: the features of BinaryName, and the options echoed back', async () => {
    const fake = { ociVersionMin: '1.0.0', ociVersionMax: '1.9.9-kybernate-test', hooks: ['prestart'] };
    const wrapper = path.join(tmp, 'fake-runc');
    fs.writeFileSync(wrapper, `#!/bin/sh\n[ "$1" = features ] || exit 9\necho '${JSON.stringify(fake)}'\n`, { mode: 0o755 });
    const value = containerd.runc.v1.Options.encode({ binaryName: wrapper }).finish();
    const r = await info(anyOf('containerd.runc.v1.Options', value));
    expect(r.code, r.stderr).toBe(0);
    const msg = containerd.types.RuntimeInfo.decode(r.stdout);
    expect(featuresJson(msg)).toEqual(fake);
    expect(msg.options?.type_url).toBe('containerd.runc.v1.Options');
    expect(containerd.runc.v1.Options.decode(msg.options?.value ?? new Uint8Array()).binaryName).toBe(wrapper);
  });

  it('a BinaryName without a `features` command: RuntimeInfo without features, as containerd\'s runc shim', async () => {
    const wrapper = path.join(tmp, 'old-runc');
    fs.writeFileSync(wrapper, '#!/bin/sh\necho "unknown command" >&2\nexit 1\n', { mode: 0o755 });
    const r = await info(anyOf('containerd.runc.v1.Options', containerd.runc.v1.Options.encode({ binaryName: wrapper }).finish()));
    expect(r.code, r.stderr).toBe(0);
    expect(containerd.types.RuntimeInfo.decode(r.stdout).features).toBeNull();
  });

  it('a BinaryName that does not exist fails -info with its name', async () => {
    const missing = path.join(tmp, 'no-such-runc');
    const r = await info(anyOf('containerd.runc.v1.Options', containerd.runc.v1.Options.encode({ binaryName: missing }).finish()));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(missing);
  });
});
