// The bundled `kybernate` CLI (dist/kybernate.cjs, built here by scripts/bundle.cjs): doctor's table
// and JSON against this machine's real state, and process checkpoint/restore with their error paths.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { alive } from '../../src/criu/process';
import { INCOMPLETE_FILE, MANIFEST_FILE, readManifest } from '../../src/snapshot/manifest';
import { addonBuilt, dumpBroken, freePid, hasCriu, isRoot, python, root, startCounter, until, cleanupEachTest } from '../criu/helpers';

const exec = promisify(execFile);
const cli = path.join(root, 'dist', 'kybernate.cjs');
const lacks = !isRoot ? 'root' : !hasCriu ? 'the criu binary' : !addonBuilt ? 'a built addon (make build)' : python === undefined ? 'python3' : undefined;
const broken = lacks === undefined ? await dumpBroken() : `needs ${lacks}`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function kybernate(...args: string[]): Promise<Run> {
  return kybernateIn(process.cwd(), ...args);
}

/** The CLI run from working directory `cwd` (where a relative --images is). */
async function kybernateIn(cwd: string, ...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [cli, ...args], { timeout: 120_000, cwd });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

interface Check {
  name: string;
  status: 'OK' | 'WARN' | 'FAIL';
  value: string;
  fix?: string;
  required: boolean;
  data?: Record<string, unknown>;
}

const { defer, dir } = cleanupEachTest();

beforeAll(async () => {
  await exec(process.execPath, [path.join(root, 'scripts', 'bundle.cjs')]);
}, 120_000);

/** Independent of the doctor's code: the filesystem type names of `stat -f`. */
async function cgroupModeByStat(): Promise<string> {
  const t = (p: string) => exec('stat', ['-f', '-c', '%T', p]).then((r) => r.stdout.trim(), () => '');
  if ((await t('/sys/fs/cgroup')) === 'cgroup2fs') return 'v2';
  return (await t('/sys/fs/cgroup/unified')) === 'cgroup2fs' ? 'hybrid' : 'v1';
}

describe.skipIf(lacks !== undefined)(`kybernate doctor${lacks ? ` (skipped: needs ${lacks})` : ''}`, () => {
  it('--json reports this machine: CRIU >= 4, cgroup mode, no CUDA driver with the fix, exit code', async () => {
    const r = await kybernate('doctor', '--json');
    const out = JSON.parse(r.stdout) as { ok: boolean; missing: string[]; checks: Check[] };
    const by = new Map(out.checks.map((c) => [c.name, c]));
    expect(by.get('criu')?.status).toBe('OK');
    expect(by.get('criu')?.data?.version).toBeGreaterThanOrEqual(40000);
    expect(by.get('criu check')?.status).toBe('OK');
    expect(by.get('cgroups')?.data?.mode).toBe(await cgroupModeByStat());
    expect(by.get('vdso')?.status).toBe('OK');
    const thp = /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1];
    expect(by.get('transparent hugepages')?.data?.thp).toBe(thp);
    expect(by.get('iptables-restore')?.status).toBe(fs.existsSync('/usr/sbin/iptables-restore') || fs.existsSync('/sbin/iptables-restore') ? 'OK' : 'FAIL');
    const { stdout: rv } = await exec('runc', ['--version']);
    expect(rv).toContain(String(by.get('runc')?.data?.version));
    // No GPU and no libcuda here.
    expect(by.get('CUDA driver')?.value).toBe('CUDA driver not found');
    expect(by.get('CUDA driver')?.fix).toMatch(/NVIDIA driver >= 570/);
    expect(by.get('GPUs')?.status).toBe('WARN');
    // The dump probe is the truth about this kernel.
    expect(by.get('criu dump')?.status).toBe(broken === undefined ? 'OK' : 'FAIL');
    expect(out.ok).toBe(out.missing.length === 0);
    expect(out.missing).toEqual(out.checks.filter((c) => c.required && c.status === 'FAIL').map((c) => c.name));
    expect(r.code).toBe(out.ok ? 0 : 1);
  });

  it('prints a table with a status and, for what is not OK, the fix', async () => {
    const r = await kybernate('doctor');
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^CHECK\s+STATUS\s+VALUE$/);
    expect(r.stdout).toMatch(/^criu\s+OK\s+\d+\.\d+\.\d+ /m);
    expect(r.stdout).toMatch(/^CUDA driver\s+WARN\s+CUDA driver not found$/m);
    const cudaRow = lines.findIndex((l) => l.startsWith('CUDA driver'));
    expect(lines[cudaRow + 1]).toMatch(/^\s+fix: GPU checkpoint needs the NVIDIA driver >= 570/);
    expect(r.stdout).toMatch(r.code === 0 ? /this node can checkpoint and restore processes/ : /missing \(required\): /);
  });
});

describe('kybernate command line', () => {
  it('rejects a missing --pid with the usage and exit code 2', async () => {
    const r = await kybernate('process', 'checkpoint', '--images', '/tmp/x');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--pid P is required');
    expect(r.stderr).toContain('usage: kybernate');
  });

  it('rejects unknown commands and options with exit code 2', async () => {
    expect((await kybernate('frobnicate')).code).toBe(2);
    const r = await kybernate('process', 'restore', '--images', '/tmp/x', '--bogus');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bogus/);
  });

  it('refuses to restore images without a snapshot manifest', async () => {
    const d = dir('cli-half');
    fs.writeFileSync(path.join(d, 'core-1.img'), 'x');
    const r = await kybernate('process', 'restore', '--images', d);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`kybernate: checkpoint ${d} has no ${MANIFEST_FILE}: the checkpoint is incomplete or was not made by kybernate\n`);
  });
});

describe.skipIf(lacks !== undefined)(`kybernate process${lacks ? ` (skipped: needs ${lacks})` : ''}`, () => {
  it('says there is no such process', async () => {
    const pid = await freePid();
    const r = await kybernate('process', 'checkpoint', '--pid', String(pid), '--images', dir('cli-nopid'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`no such process: ${pid}`);
  });

  it('names the failed step and says the process keeps running', async () => {
    const d = dir('cli-fail');
    const c = await startCounter(d);
    defer(() => c.stop());
    const r = await kybernate('process', 'checkpoint', '--pid', String(c.pid), '--images', path.join(d, 'img'), '--timeout', '0.001');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^kybernate: criu-dump failed for pid ${c.pid}: .*; the process keeps running$`, 'm'));
    // No snapshot is left: no manifest, no marker, nothing CRIU wrote.
    expect(fs.readdirSync(path.join(d, 'img'))).toEqual([]);
    const v = c.read();
    await until(() => c.read() > v + 2);
  });

  it('--json reports the failure as JSON', async () => {
    const d = dir('cli-json');
    const r = await kybernate('process', 'restore', '--images', d, '--json');
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { ok: boolean; step: string; error: string };
    expect(out).toMatchObject({ ok: false, step: 'check', processRunning: false, steps: [] });
    expect(out.error).toBe(`checkpoint ${d} has no ${MANIFEST_FILE}: the checkpoint is incomplete or was not made by kybernate`);
  });

  describe.skipIf(broken !== undefined)(`round trip${broken ? ` (skipped: ${broken})` : ''}`, () => {
    it('checkpoints and restores a counter tree, printing each step\'s time and bytes', async () => {
      const d = dir('cli-rt');
      const images = path.join(d, 'img');
      const c = await startCounter(d);
      defer(() => c.stop());
      await until(() => c.read() > 5);
      const cp = await kybernate('process', 'checkpoint', '--pid', String(c.pid), '--images', images);
      expect(cp.code).toBe(0);
      expect(cp.stdout).toMatch(/^ {2}criu-dump\s+[\d.]+ ms {2}[\d.]+ (B|KiB|MiB)$/m);
      expect(cp.stdout).toMatch(/^GPU state: none \(CUDA driver not found \(/m);
      const m = await readManifest(images);
      expect(m.kind === 'process' && m.process).toEqual({ pid: c.pid, leaveRunning: false });
      expect(fs.existsSync(path.join(images, INCOMPLETE_FILE))).toBe(false);
      await until(() => !alive(c.pid));
      const dumped = c.read();
      const rs = await kybernate('process', 'restore', '--images', images);
      expect(rs.code).toBe(0);
      expect(rs.stdout).toContain(`restored pid ${c.pid}`);
      expect(rs.stdout).toMatch(/^ {2}criu-restore\s+[\d.]+ ms$/m);
      await until(() => c.read() > dumped + 3);
    });

    it('--leave-running keeps the process running; --images may be relative to the working directory', async () => {
      const d = dir('cli-leave');
      const c = await startCounter(d);
      defer(() => c.stop());
      const r = await kybernateIn(d, 'process', 'checkpoint', '--pid', String(c.pid), '--images', 'img', '--leave-running', '--json');
      expect(r.code).toBe(0);
      const out = JSON.parse(r.stdout) as { ok: boolean; imagesDir: string; cuda: boolean };
      expect(out).toMatchObject({ ok: true, imagesDir: path.join(d, 'img'), cuda: false });
      const m = await readManifest(path.join(d, 'img'));
      expect(m.kind === 'process' && m.process).toEqual({ pid: c.pid, leaveRunning: true });
      const t = await kybernate('process', 'checkpoint', '--pid', String(c.pid), '--images', path.join(d, 'img2'), '--leave-running');
      expect(t.code).toBe(0);
      expect(t.stdout).toContain('the process keeps running');
      const v = c.read();
      await until(() => c.read() > v + 2);
    });
  });
});
