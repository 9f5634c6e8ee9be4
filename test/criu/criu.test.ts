// libcriu through the addon (src/native/criu): version, features, dump and restore of a real process
// tree, and CRIU's failures with its own log lines. Needs root and criu; dump/restore also need a kernel
// CRIU can dump on (probed once; without it those tests are skipped and say why).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as criu from '../../src/native/criu';
import { alive } from '../../src/checkpoint/process';
import { addonBuilt, freePid, probeDump, hasCriu, isRoot, python, sleep, startCounter, tmpDir, until, cleanupEachTest } from './helpers';

const lacks = !isRoot ? 'root' : !hasCriu ? 'the criu binary' : !addonBuilt ? 'a built addon (make build)' : undefined;
const probe = lacks === undefined ? await probeDump() : { broken: `needs ${lacks}`, needsNoBreakpoints: false };
const broken = probe.broken;
if (broken !== undefined) console.warn(`test/criu: dump/restore round trips skipped: ${broken}`);
if (probe.needsNoBreakpoints) console.warn('test/criu: hardware breakpoints do not work here; CRIU runs with CRIU_FAULT=130');

const { defer } = cleanupEachTest();

describe.skipIf(lacks !== undefined)(`libcriu${lacks ? ` (skipped: needs ${lacks})` : ''}`, () => {
  it('reports the criu binary version (>= 4.0) and formats it', async () => {
    const v = await criu.version();
    expect(v).toBeGreaterThanOrEqual(40000);
    expect(criu.formatVersion(v)).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('runs concurrent calls, more than MAX_CONCURRENT, each with its own options', async () => {
    const vs = await Promise.all(Array.from({ length: criu.MAX_CONCURRENT * 2 + 1 }, () => criu.version()));
    expect(new Set(vs).size).toBe(1);
  });

  it('reports optional features as booleans, soft-dirty matching the kernel config', async () => {
    const f = await criu.features();
    expect(Object.keys(f).sort()).toEqual(['lazyPages', 'memTrack', 'pidfdStore']);
    let config = '';
    try {
      config = (await import('node:zlib')).gunzipSync(fs.readFileSync('/proc/config.gz')).toString();
    } catch {
      // no /proc/config.gz: nothing to compare with
    }
    if (config.includes('# CONFIG_MEM_SOFT_DIRTY is not set')) expect(f.memTrack).toBe(false);
    if (config.includes('CONFIG_MEM_SOFT_DIRTY=y')) expect(f.memTrack).toBe(true);
  });

  it('rejects a dump of a pid that does not exist with CRIU\'s error lines', async () => {
    const pid = await freePid();
    const dir = tmpDir('nopid');
    defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const err = (await criu.dump({ pid, imagesDir: dir }).catch((e: unknown) => e)) as criu.CriuError;
    expect(err).toBeInstanceOf(criu.CriuError);
    expect(err.op).toBe('criuDump');
    expect(err.pid).toBe(pid);
    expect(err.logFile).toBe(path.join(dir, 'dump.log'));
    expect(err.logErrors.join('\n')).toMatch(/No such process|Dumping FAILED/);
    // The stack is the caller's, not an internal frame.
    expect(err.stack).toContain('criu.test.ts');
  });

  it('rejects an images directory that is missing or not a directory with the errno', async () => {
    const dir = tmpDir('baddir');
    defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const missing = (await criu.dump({ pid: process.pid, imagesDir: path.join(dir, 'nope') }).catch((e: unknown) => e)) as criu.CriuError;
    expect(missing.code).toBe('ENOENT');
    expect(missing.message).toContain(path.join(dir, 'nope'));
    const file = path.join(dir, 'file');
    fs.writeFileSync(file, '');
    const notDir = (await criu.restore({ imagesDir: file }).catch((e: unknown) => e)) as criu.CriuError;
    expect(notDir.code).toBe('ENOTDIR');
    expect(notDir.op).toBe('criuRestore');
  });

  it('rejects a restore of a directory without images with CRIU\'s error lines', async () => {
    const dir = tmpDir('empty');
    defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const err = (await criu.restore({ imagesDir: dir }).catch((e: unknown) => e)) as criu.CriuError;
    expect(err).toBeInstanceOf(criu.CriuError);
    expect(err.logErrors.length).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(dir, 'restore.log'))).toBe(true);
  });

  it('fails cleanly when the process is killed while CRIU dumps it', async () => {
    const dir = tmpDir('gone');
    defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const { spawn } = await import('node:child_process');
    // 512 MiB of touched memory: the dump takes long enough to be caught in the middle.
    const ready = path.join(dir, 'ready');
    const code = `b = bytes(range(256)) * (2 << 20)\nopen(${JSON.stringify(ready)}, 'w').close()\nimport time\ntime.sleep(60)`;
    const c = spawn(python!, ['-c', code], { detached: true, stdio: 'ignore' });
    defer(() => c.kill('SIGKILL'));
    await until(() => fs.existsSync(ready), 30_000);
    const pending = criu.dump({ pid: c.pid!, imagesDir: dir, timeoutMs: 30_000 });
    // Kill it as soon as CRIU has seized it (its tracer shows up), i.e. in the middle of the dump.
    await until(() => /TracerPid:\s*[1-9]/.test(fs.readFileSync(`/proc/${c.pid}/status`, 'utf8')), 10_000);
    c.kill('SIGKILL');
    const err = (await pending.catch((e: unknown) => e)) as criu.CriuError;
    expect(err).toBeInstanceOf(criu.CriuError);
    expect(err.code).not.toBe('ETIMEDOUT');
    expect(err.logErrors.join('\n')).toMatch(/No such process|FAILED/);
  });

  it.skipIf(!probe.needsNoBreakpoints)(`kills a hung criu at timeoutMs and leaves the process running${probe.needsNoBreakpoints ? '' : ' (skipped: needs a machine where dumps with hardware breakpoints hang)'}`, async () => {
    const dir = tmpDir('hang');
    defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const c = await startCounter(dir);
    defer(() => c.stop());
    const err = (await criu.dump({ pid: c.pid, imagesDir: dir, timeoutMs: 2000, noBreakpoints: false }).catch((e: unknown) => e)) as criu.CriuError;
    expect(err.code).toBe('ETIMEDOUT');
    const before = c.read();
    await until(() => c.read() > before + 2);
    expect(fs.readFileSync(`/proc/${c.pid}/status`, 'utf8')).toMatch(/TracerPid:\s*0/);
  });

  describe.skipIf(broken !== undefined || python === undefined)(
    `dump and restore${broken ? ` (skipped: ${broken})` : python === undefined ? ' (skipped: needs python3)' : ''}`,
    () => {
      it('dumps a counter tree, which then continues from its checkpointed value after restore', async () => {
        const dir = tmpDir('roundtrip');
        defer(() => fs.rmSync(dir, { recursive: true, force: true }));
        const images = path.join(dir, 'images');
        fs.mkdirSync(images);
        const c = await startCounter(dir);
        defer(() => c.stop());
        await until(() => c.read() > 5);
        await criu.dump({ pid: c.pid, imagesDir: images });
        await until(() => !alive(c.pid));
        const dumped = c.read();
        await sleep(200);
        expect(c.read()).toBe(dumped);
        const pid = await criu.restore({ imagesDir: images });
        expect(pid).toBe(c.pid);
        await until(() => c.read() > dumped + 3);
        // Continued, not restarted: the first value after restore follows the dumped one.
        expect(c.read()).toBeGreaterThan(dumped);
      });

      it('leaves the process running with leaveRunning', async () => {
        const dir = tmpDir('leave');
        defer(() => fs.rmSync(dir, { recursive: true, force: true }));
        const images = path.join(dir, 'images');
        fs.mkdirSync(images);
        const c = await startCounter(dir);
        defer(() => c.stop());
        await criu.dump({ pid: c.pid, imagesDir: images, leaveRunning: true });
        const after = c.read();
        await until(() => c.read() > after + 3);
        expect(fs.readdirSync(images).some((f) => f.startsWith('pages-'))).toBe(true);
      });
    },
  );
});
