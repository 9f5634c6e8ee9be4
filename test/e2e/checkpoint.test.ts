// Container checkpoint/restore through containerd (CRIU underneath), for every containerd version and
// runtime: ctr's checkpoint/restore commands, and containerd's Tasks API with explicit CheckpointOptions.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, expect, it } from 'vitest';
import type { Containerd } from './support/harness';
import { describeMatrix } from './support/matrix';
import { LOOP, alive, runDetached, task, waitFor, waitStatus } from './support/ctr';
import {
  COUNTER, FLOCK, FLOCK_MOUNTS, LOCKED_COUNTER, checkpointDaemonOptions, checkpointImages, checkpointTask, counterOf,
  counterPast, createLease, criuMissing, criuTar, deleteLease, deleteTaskOf, failureOf, flockMissing, inetSocketDumpBroken,
  removeDaemonRuntimeDirs, removeImages, restoreTask,
} from './support/checkpoint';

/** Declares `name` skipped with `reason` in its title when there is one. */
function itUnless(reason: string | undefined, name: string, fn: () => Promise<void>): void {
  if (reason === undefined) it(name, fn);
  else it.skip(`${name} (skipped: ${reason})`, fn);
}

const GRPC_UNKNOWN = 2;
const GRPC_FAILED_PRECONDITION = 9;

afterAll(removeDaemonRuntimeDirs);

describeMatrix('checkpoint', (ctx) => {
  const images: string[] = [];
  const leases: string[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    const cd = ctx.cd;
    await removeImages(cd, images.splice(0));
    for (const l of leases.splice(0)) await deleteLease(cd, l);
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  const imageRef = (id: string): string => {
    const ref = `kybernate.test/checkpoint/${id}:1`;
    images.push(ref);
    return ref;
  };
  const lease = async (id: string): Promise<string> => {
    leases.push(id);
    return createLease(ctx.cd, id);
  };

  /** Kills and removes task and container, as a node that lost them would. */
  async function discard(cd: Containerd, id: string): Promise<void> {
    await deleteTaskOf(cd, id);
    await cd.ctrOk(['containers', 'rm', id]);
  }

  it('container checkpoint --task --rw, then restore --live --rw: the counter goes on in a new process', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('cr');
    const before = await runDetached(cd, rt.runtime, id, COUNTER);
    const seen = await counterPast(before.pid, 2);
    const ref = imageRef(id);
    await cd.ctrOk(['containers', 'checkpoint', '--task', '--rw', id, ref]);
    // ctr pauses the task for the dump and resumes it: the checkpoint leaves it running.
    expect(await task(cd, id)).toEqual({ pid: before.pid, status: 'RUNNING' });
    await discard(cd, id);
    expect(alive(before.pid)).toBe(false);

    await cd.ctrOk(['containers', 'restore', '--live', '--rw', id, ref]);
    const after = await waitStatus(cd, id, 'RUNNING');
    expect(after.pid).not.toBe(before.pid);
    const restored = await counterPast(after.pid, 0, 'restored counter');
    // Same token: the shell's memory came back, it was not started afresh.
    expect(restored.token).toBe(seen.token);
    expect(restored.n).toBeGreaterThanOrEqual(seen.n);
    const going = await counterPast(after.pid, restored.n, 'restored counter');

    // Again, from the restored container: the scale-to-zero loop checkpoints what it restored. containerd
    // 1.x's ctr cannot restore such a second image ("ctr: media type not found", runc's shim alike: the
    // restored container's image is the first checkpoint's index), so the second round is 2.x only.
    if (ctx.version.startsWith('1.')) return;
    const ref2 = `${ref.slice(0, ref.lastIndexOf(':'))}:2`;
    images.push(ref2);
    await cd.ctrOk(['containers', 'checkpoint', '--task', '--rw', id, ref2]);
    await discard(cd, id);
    await cd.ctrOk(['containers', 'restore', '--live', '--rw', id, ref2]);
    const again = await waitStatus(cd, id, 'RUNNING');
    const second = await counterPast(again.pid, 0, 'twice-restored counter');
    expect(second.token).toBe(seen.token);
    expect(second.n).toBeGreaterThanOrEqual(going.n);
  });

  it('task checkpoint leaves the task running and commits a checkpoint image', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('tc');
    const before = await runDetached(cd, rt.runtime, id, COUNTER);
    const seen = await counterPast(before.pid, 1);
    const out = await cd.ctrOk(['tasks', 'checkpoint', id]);
    const names = await checkpointImages(cd, id);
    images.push(...names);
    expect(names).toHaveLength(1);
    expect(out.trim()).toBe(names[0]);
    expect(await task(cd, id)).toEqual({ pid: before.pid, status: 'RUNNING' });
    await counterPast(before.pid, seen.n);
  });

  // ctr 1.x sends CheckpointOptions (and with them image_path) only for runtime names io.containerd.runc.*,
  // and the 1.x daemon reads image_path only for those names (services/tasks/local.go getCheckpointPath).
  const imagePathSkip = ctx.version.startsWith('1.') && ctx.rt.kind !== 'runc'
    ? `containerd ${ctx.version} ignores --image-path for runtimes not named io.containerd.runc.* (ctr sends no options, the daemon reads image_path only for runc names)`
    : undefined;
  itUnless(imagePathSkip, 'task checkpoint --image-path leaves the CRIU images in that directory', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('tc-path');
    const before = await runDetached(cd, rt.runtime, id, COUNTER);
    await counterPast(before.pid, 1);
    const dir = mkdtempSync(join(tmpdir(), 'kyb-cp-'));
    dirs.push(dir);
    await cd.ctrOk(['tasks', 'checkpoint', '--image-path', dir, id]);
    const files = readdirSync(dir);
    expect(files.filter((f) => f.endsWith('.img')).length).toBeGreaterThan(0);
    expect(files).toContain('inventory.img');
    if (rt.kind === 'kybernate') expect(files).toContain('kybernate-manifest.json');
    const names = await checkpointImages(cd, id);
    images.push(...names);
    // containerd's client skips the image only for io.containerd.runc.v2 with an image_path
    // (client/task.go isCheckpointPathExist); for other runtimes it commits an image without CRIU data.
    if (rt.kind === 'runc') expect(names).toEqual([]);
    expect(await task(cd, id)).toEqual({ pid: before.pid, status: 'RUNNING' });
  });

  // containerd's runc shim restores with only ImagePath/WorkDir/ParentPath (process/init.go
  // createCheckpointedState), so CRIU restores without --tcp-established / --file-locks.
  const runcRestoreDrops = (flag: string): string | undefined => ctx.rt.kind === 'runc'
    ? `containerd-shim-runc-v2 never passes ${flag} to runc restore (createCheckpointedState sets only ImagePath, WorkDir, ParentPath)`
    : undefined;
  itUnless(inetSocketDumpBroken() ?? runcRestoreDrops('--tcp-established'),
    'an established TCP connection survives checkpoint {exit, open_tcp} and restore', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('tcp');
    const port = await freePort();
    // Host network: the test process is the client. nc accepts one connection and runs cat on it.
    await runDetached(cd, rt.runtime, id, ['nc', '-l', '-p', String(port), '-e', 'cat'], ['--net-host']);
    await waitFor(`port ${port} to listen`, () => listening(port));
    const conn = await connect(port);
    try {
      expect(await conn.roundTrip('before\n')).toBe('before\n');
      const descriptors = await checkpointTask(cd, id, { exit: true, openTcp: true }, await lease(id));
      await waitStatus(cd, id, 'STOPPED');
      await deleteTaskOf(cd, id);
      await restoreTask(cd, id, criuTar(descriptors));
      expect((await task(cd, id))?.status).toBe('RUNNING');
      expect(await conn.roundTrip('after restore\n')).toBe('after restore\n');
    } finally {
      conn.close();
    }
  });

  // Seen with runc: the restored container runs, but the lock is free (CRIU restores file locks only with
  // --file-locks, criu/file-lock.c prepare_file_locks).
  itUnless(flockMissing() ?? runcRestoreDrops('--file-locks'),
    'a flock held in the container is still held after checkpoint and restore', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('flock');
    const before = await runDetached(cd, rt.runtime, id, LOCKED_COUNTER, FLOCK_MOUNTS);
    const seen = await counterPast(before.pid, 1);
    const tryLock = async (file: string, execId: string): Promise<number> =>
      (await cd.ctr(['tasks', 'exec', '--exec-id', execId, id, ...FLOCK, '-n', file, 'true'])).code;
    expect(await tryLock('/tmp/lock', 'held-before')).toBe(1);
    expect(await tryLock('/tmp/other', 'free-before')).toBe(0);
    // ctr container checkpoint sends file_locks: true for every runtime.
    const ref = imageRef(id);
    await cd.ctrOk(['containers', 'checkpoint', '--task', '--rw', id, ref]);
    await discard(cd, id);

    await cd.ctrOk(['containers', 'restore', '--live', '--rw', id, ref]);
    const after = await waitStatus(cd, id, 'RUNNING');
    const restored = await counterPast(after.pid, 0, 'restored counter');
    expect(restored.token).toBe(seen.token);
    expect(await tryLock('/tmp/lock', 'held-after')).toBe(1);
    expect(await tryLock('/tmp/other', 'free-after')).toBe(0);
  });

  it('a checkpoint restores after containerd restarted', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('restart');
    const before = await runDetached(cd, rt.runtime, id, COUNTER);
    const seen = await counterPast(before.pid, 2);
    const ref = imageRef(id);
    await cd.ctrOk(['containers', 'checkpoint', '--task', '--rw', id, ref]);
    await discard(cd, id);

    await cd.restart();

    await cd.ctrOk(['containers', 'restore', '--live', '--rw', id, ref]);
    const after = await waitStatus(cd, id, 'RUNNING');
    const restored = await counterPast(after.pid, 0, 'restored counter');
    expect(restored.token).toBe(seen.token);
    expect(restored.n).toBeGreaterThanOrEqual(seen.n);
    await counterPast(after.pid, restored.n, 'restored counter');
  });

  it('checkpoint of a stopped task is refused', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('stopped');
    await runDetached(cd, rt.runtime, id, LOOP);
    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGKILL', id]);
    await waitStatus(cd, id, 'STOPPED');

    const viaApi = await failureOf(checkpointTask(cd, id, {}));
    if (rt.kind === 'runc') {
      // The reference: runc's shim refuses with a plain error, which containerd passes on as Unknown (2):
      // "cannot checkpoint a stopped container" (1.x appends ": unknown").
      expect(viaApi.code).toBe(GRPC_UNKNOWN);
      expect(viaApi.details).toContain('cannot checkpoint a stopped container');
    } else {
      expect(viaApi, viaApi.message).toMatchObject({ code: GRPC_FAILED_PRECONDITION });
    }
    // ctr pauses before it checkpoints, so the refusal comes from Pause (runc: "cannot pause a stopped container").
    const viaCtr = await cd.ctr(['tasks', 'checkpoint', id]);
    expect(viaCtr.code).not.toBe(0);
    expect(await checkpointImages(cd, id)).toEqual([]);
    expect((await task(cd, id))?.status).toBe('STOPPED');
  });

  itUnless(flockMissing(), 'a failed dump leaves the task running with the same pid', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('dumpfail');
    const before = await runDetached(cd, rt.runtime, id, LOCKED_COUNTER, FLOCK_MOUNTS);
    const seen = await counterPast(before.pid, 1);
    // CRIU refuses to dump a task holding a file lock unless told to (--file-locks); exit: true must not
    // kill a task whose dump failed.
    const failure = await failureOf(checkpointTask(cd, id, { exit: true, fileLocks: false }, await lease(id)));
    expect(failure.details).not.toBe('');
    if (rt.kind === 'runc') {
      // runc's shim copies CRIU's log next to the bundle and names it in the error: "... criu failed: type
      // NOTIFY errno 0 path= <bundle>/criu-dump.log".
      const log = /path= (\S+?)(?::|$)/.exec(failure.details)?.[1];
      expect(log, failure.details).toBeDefined();
      expect(readFileSync(log!, 'utf8')).toContain('Some file locks are hold by dumping tasks');
    }
    expect(await task(cd, id)).toEqual({ pid: before.pid, status: 'RUNNING' });
    await counterPast(before.pid, seen.n);
    expect(counterOf(before.pid).token).toBe(seen.token);
    expect(await checkpointImages(cd, id)).toEqual([]);
  });
}, {
  start: checkpointDaemonOptions,
  skip: () => criuMissing(),
});

/** A TCP port nothing listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Whether a socket listens on `port` in this network namespace (/proc/net/tcp{,6}, state 0A). */
function listening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1]?.endsWith(`:${hex}`) && f[3] === '0A') return true;
    }
  }
  return false;
}

interface Conn { roundTrip(line: string): Promise<string>; close(): void }

/** A client connection to 127.0.0.1:`port` whose roundTrip sends a line and waits for one line back. */
async function connect(port: number): Promise<Conn> {
  const sock = new Socket();
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.connect(port, '127.0.0.1', () => { sock.off('error', reject); resolve(); });
  });
  let buf = '';
  let closed: Error | undefined;
  const waiters: Array<() => void> = [];
  const wake = (): void => { for (const w of waiters.splice(0)) w(); };
  sock.on('data', (d: Buffer) => { buf += d.toString(); wake(); });
  sock.on('error', (e) => { closed = e; wake(); });
  sock.on('close', () => { closed ??= new Error('connection closed'); wake(); });
  return {
    async roundTrip(line) {
      sock.write(line);
      return waitFor(`an answer to ${JSON.stringify(line)}`, () => {
        if (closed) throw closed;
        const i = buf.indexOf('\n');
        if (i < 0) return undefined;
        const out = buf.slice(0, i + 1);
        buf = buf.slice(i + 1);
        return out;
      }, 30_000);
    },
    close() { sock.destroy(); },
  };
}
