// CRIU restore failures in one sentence with the fix: a real restore whose pid is taken (the original still
// runs), a real zombie holding a pid, and log excerpts in CRIU's own message formats for the other causes.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { diagnoseCriuRestore, diagnoseCriuRestoreFile } from '../../src/criu/log';
import { checkpointProcess, restoreProcess, StepError } from '../../src/criu/process';
import { bundle, kybernate } from '../cli/helpers';
import { addonBuilt, cleanupEachTest, dumpBroken, freePid, hasCriu, isRoot, python, startCounter, until } from './helpers';

const lacks = !isRoot ? 'root' : !hasCriu ? 'the criu binary' : !addonBuilt ? 'a built addon (make build)' : python === undefined ? 'python3' : undefined;
const broken = lacks === undefined ? await dumpBroken() : `needs ${lacks}`;
const { defer, dir } = cleanupEachTest();

/** A CRIU restore log around one error line, as CRIU 4.x writes it at -v4. */
function log(...errors: string[]): string {
  return [
    '(00.000000) Version: 4.2.1 (gitid 0)',
    '(00.104974) Error (criu/util.c:1534): rlimit: Can\'t setup RLIMIT_NOFILE for self: Operation not permitted',
    '(00.105067) kernel pid_max=32768',
    ...errors,
    '(00.105721) Error (criu/cr-restore.c:2331): Restoring FAILED.',
  ].join('\n');
}

describe('CRIU restore log excerpts', () => {
  it('pid in use (clone3 set_tid, and kernels without it): names the live holder and says to stop it', () => {
    for (const line of [
      `(00.105695) Error (criu/cr-restore.c:1237): Can't fork for ${process.pid}: File exists`,
      `(00.105695)   4242: Error (criu/cr-restore.c:1539): Pid 4243 do not match expected ${process.pid}`,
    ]) {
      const d = diagnoseCriuRestore(log(line));
      expect(d).toMatchObject({ code: 'pid-in-use', errorCode: 'KYB_ERR_FAILED_PRECONDITION' });
      expect(d?.sentence).toMatch(new RegExp(`^pid ${process.pid} is in use by ".*node.*" \\(.+\\): stop that process \\(kill ${process.pid}\\), then restore again`));
      expect(d?.line).toBe(line.replace(/^.*?Error \([^)]*\): /, ''));
    }
  });

  it('pid in use by a zombie: names it and the parent that has not reaped it', async () => {
    // A real zombie: python forks a child that exits at once and never waits for it.
    const p = spawn(python!, ['-c', 'import os,sys,time\npid=os.fork()\nif pid==0: os._exit(0)\nprint(pid,flush=True)\ntime.sleep(60)'],
      { stdio: ['ignore', 'pipe', 'ignore'] });
    defer(() => p.kill('SIGKILL'));
    const zombie = await new Promise<number>((resolve) => p.stdout!.once('data', (b: Buffer) => resolve(Number(b.toString().trim()))));
    await until(() => fs.readFileSync(`/proc/${zombie}/stat`, 'utf8').includes(') Z '));
    const d = diagnoseCriuRestore(log(`(00.1) Error (criu/cr-restore.c:1237): Can't fork for ${zombie}: File exists`));
    expect(d?.code).toBe('pid-in-use');
    expect(d?.sentence).toBe(`pid ${zombie} is held by a zombie of "python3" (it has exited, but its parent ${p.pid} "python3" ` +
      'has not reaped it): have that parent reap it (or stop the parent), then restore again');
  });

  it('names the holder on one line, however its arguments were written', async () => {
    const p = spawn(python!, ['-c', 'import time\nwhile True:\n    time.sleep(1)'], { stdio: 'ignore' });
    defer(() => p.kill('SIGKILL'));
    await until(() => fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').includes('time.sleep'));
    const d = diagnoseCriuRestore(log(`(00.1) Error (criu/cr-restore.c:1237): Can't fork for ${p.pid}: File exists`));
    expect(d?.sentence).toContain(`pid ${p.pid} is in use by "${python} -c import time while True: time.sleep(1)" (python3)`);
    expect(d?.sentence).not.toContain('\n');
  });

  it('pid in use then, free now: says to restore again', async () => {
    const pid = await freePid();
    const d = diagnoseCriuRestore(log(`(00.1) Error (criu/cr-restore.c:1237): Can't fork for ${pid}: File exists`));
    expect(d?.sentence).toBe(`pid ${pid} was in use when CRIU restored it and is free now: restore again`);
  });

  it('a thread id in use', () => {
    expect(diagnoseCriuRestore(log('(00.2)   4242: Error (criu/pie/restorer.c:2188): Unable to create a thread: -17'))?.code).toBe('pid-in-use');
  });

  it('a file the tree had open is missing or changed', () => {
    expect(diagnoseCriuRestore(log(
      "(00.03)   4242: Error (criu/files-reg.c:2353): Can't open file tmp/kyb-data/app.log on restore: No such file or directory",
    ))).toMatchObject({ code: 'file-missing', sentence: expect.stringMatching(/^the file \/tmp\/kyb-data\/app\.log that the tree had open is gone: put it back/) });
    expect(diagnoseCriuRestore(log('(00.03)   4242: Error (criu/files-reg.c:2175): File tmp/db/data.bin has bad size 100 (expect 4096)')))
      .toMatchObject({ code: 'file-changed', sentence: expect.stringContaining('/tmp/db/data.bin that the tree had open changed since the checkpoint (it is 100 bytes, 4096 at checkpoint time)') });
    expect(diagnoseCriuRestore(log(
      '(00.03)   4242: Error (criu/files-reg.c:2294): File usr/bin/app has bad mode 0100600 (expect 0100755)',
      'File r/w/x checks can be skipped with the --skip-file-rwx-check option',
    ))).toMatchObject({ code: 'file-changed', sentence: expect.stringContaining('(it has mode 0100600, 0100755 at checkpoint time)') });
    expect(diagnoseCriuRestore(log('(00.03) Error (criu/files-reg.c:2153): File usr/lib/libx.so has bad build-ID'))?.code).toBe('file-changed');
  });

  it('mount points: an unmapped external mount, a mount whose source is gone', () => {
    expect(diagnoseCriuRestore(log('(00.04) Error (criu/mount.c:3141): No mapping for 1234:/data mountpoint')))
      .toMatchObject({ code: 'mount', sentence: expect.stringMatching(/^the mount point \/data was an external bind mount .*: restore with the same external mounts/) });
    expect(diagnoseCriuRestore(log(
      '(00.04) Error (criu/mount.c:2236): Unable to mount /srv/data /tmp/.criu.mntns.Ab12/mnt-0000001234 (id=1234): No such file or directory',
    ))).toMatchObject({ code: 'mount', sentence: expect.stringMatching(/^mounting \/srv\/data for the restored tree failed \(No such file or directory\)/) });
    expect(diagnoseCriuRestore(log('(00.04) Error (criu/mount.c:2301): Can\'t mount at ./mnt-0000000123: Permission denied'))?.code).toBe('mount');
  });

  it('CRIU too old: images it cannot read, or only the versions tell', () => {
    for (const line of ['(00.01) Error (criu/image.c:89): Not supported images version 3', '(00.05)   4242: Error (criu/files.c:1732): Unknown file type 27']) {
      expect(diagnoseCriuRestore(log(line), { dumpCriuVersion: '4.2.1', criuVersion: '4.1' })).toMatchObject({
        code: 'criu-too-old', errorCode: 'KYB_ERR_CHECKPOINT_INCOMPATIBLE',
        sentence: expect.stringMatching(/^this CRIU \(4\.1\) cannot read the images \(.+\), written by CRIU 4\.2\.1: restore with the CRIU version that checkpointed, or a newer one$/),
      });
    }
    const unknown = log('(00.06) Error (criu/sk-unix.c:2000): Something CRIU 4.2 knows better');
    expect(diagnoseCriuRestore(unknown, { dumpCriuVersion: '4.2.1', criuVersion: '4.1.1' })).toMatchObject({
      code: 'criu-too-old', sentence: 'the images were written by CRIU 4.2.1 and this is CRIU 4.1.1: restore with CRIU >= 4.2.1' });
    expect(diagnoseCriuRestore(unknown, { dumpCriuVersion: '4.1.1', criuVersion: '4.2.1' })).toBeUndefined();
    expect(diagnoseCriuRestore(unknown)).toBeUndefined();
    expect(diagnoseCriuRestoreFile('/nonexistent/restore.log')).toBeUndefined();
  });
});

describe.skipIf(broken !== undefined)(`a real CRIU restore whose pid is in use${broken ? ` (skipped: ${broken})` : ''}`, () => {
  // The bundle waits for the build lock, which a parallel `make build` may hold for a while.
  beforeAll(() => bundle(), 300_000);

  it('restoreProcess and `kybernate process restore` say who holds the pid and what to do, with the log path', async () => {
    const d = dir('pidinuse');
    const images = path.join(d, 'img');
    const c = await startCounter(d);
    defer(() => c.stop());
    await until(() => c.read() > 3);
    // The original keeps running, so its pids are taken when the restore tries to give them back.
    await checkpointProcess({ pid: c.pid, imagesDir: images, leaveRunning: true, cuda: null });
    const logFile = path.join(images, 'restore.log');
    const err = (await restoreProcess({ imagesDir: images, cuda: null }).catch((e: unknown) => e)) as StepError;
    expect(err).toBeInstanceOf(StepError);
    expect(err.step).toBe('criu-restore');
    expect(err.diagnosis?.code).toBe('pid-in-use');
    const sentence = new RegExp(`^criu-restore failed: pid ${c.pid} is in use by ".*python3.*counter\\.py.*" \\(python3\\): ` +
      `stop that process \\(kill ${c.pid}\\), then restore again; a restored tree gets its old pids back \\(CRIU log: ${logFile.replace(/[.]/g, '\\.')}\\)$`);
    expect(err.message).toMatch(sentence);

    const r = await kybernate(['process', 'restore', '--images', images]);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')[0]).toMatch(new RegExp(sentence.source.replace('^', '^kybernate: ')));
    const j = await kybernate(['process', 'restore', '--images', images, '--json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, step: 'criu-restore', diagnosis: 'pid-in-use', logFile });
  }, 120_000);
});
