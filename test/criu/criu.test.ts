// libcriu through the addon (src/native/criu): version, features, dump and restore of a real process
// tree, and CRIU's failures with its own log lines. Needs root and criu; dump/restore also need a kernel
// CRIU can dump on (probed once; without it those tests are skipped and say why).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as criu from '../../src/native/criu';
import { alive } from '../../src/criu/process';
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
    // 64 MiB of touched memory: far more than the pipe below and its reader's buffer take in.
    const ready = path.join(dir, 'ready');
    const code = `b = bytes(range(256)) * (1 << 18)\nopen(${JSON.stringify(ready)}, 'w').close()\nimport time\ntime.sleep(60)`;
    const c = spawn(python!, ['-c', code], { detached: true, stdio: 'ignore' });
    defer(() => c.kill('SIGKILL'));
    await until(() => fs.existsSync(ready), 30_000);
    // CRIU writes the memory of the first task it dumps into pages-1.img of the images directory (a name of
    // CRIU's image format). As a FIFO this test holds open, that file is where the dump waits: the first
    // bytes arriving mean CRIU has seized the process, has its parasite in it and is copying memory out,
    // and it cannot get further than the pipe holds until the test reads. So the kill below lands in the
    // middle of the dump every time, however fast or slow the machine (a kill raced against the dump
    // could come after the dump was done, and the dump then succeeded).
    const pagesImage = path.join(dir, 'pages-1.img');
    execFileSync('mkfifo', [pagesImage]);
    // O_RDWR: opening does not wait for CRIU, and the pipe never reads as ended while the test holds it.
    const pages = new net.Socket({ fd: fs.openSync(pagesImage, fs.constants.O_RDWR | fs.constants.O_NONBLOCK), readable: true, writable: false });
    defer(() => pages.destroy());
    const pending = criu.dump({ pid: c.pid!, imagesDir: dir, timeoutMs: 30_000 });
    const settled = pending.then(() => new Error('the dump succeeded before it wrote any pages'), (e: unknown) => e);
    // 'readable' (not 'data'): the stream reads up to its high-water mark and stops, so CRIU stays blocked.
    const first = await Promise.race([new Promise<undefined>((resolve) => pages.once('readable', () => resolve(undefined))), settled]);
    if (first !== undefined) throw first;
    c.kill('SIGKILL');
    // Let CRIU go on: it writes what it holds and finds the process gone when it needs it next.
    pages.resume();
    const err = (await settled) as criu.CriuError;
    expect(err).toBeInstanceOf(criu.CriuError);
    expect(err.code).not.toBe('ETIMEDOUT');
    // CRIU learns of the death either from its SIGCHLD handler ("<pid> was killed by 9 unexpectedly", and
    // exits) or from the parasite's socket ("Failed to read ack", "Can't cure (pid: <pid>)", "Dumping FAILED").
    const log = err.logErrors.join('\n');
    expect(log).toContain(String(c.pid));
    expect(log).toMatch(new RegExp(`${c.pid} was killed by 9|Dumping FAILED`));
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
