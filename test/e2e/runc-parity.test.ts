// Behaviours of containerd's runc shim that Kybernate must share (issue 8): an init that dies during Create,
// an exec whose request asks for a terminal its process spec does not, the init exit of a container in a
// shared pid namespace, and ResizePty of a process without a terminal. Each runs for both runtimes.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, constants } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { containerd } from '../../src/gen/proto';
import { TEST_IMAGE } from './support/harness';
import { describeMatrix } from './support/matrix';
import { LOOP, runDetached, task, waitFor, waitStatus } from './support/ctr';
import { ContainerdClient, deleteTask, eventContainerId, watchEvents } from './support/grpc';
import { snapshotMounts } from './support/checkpoint';

const tasksApi = containerd.services.tasks.v1;
const Empty = { decode: (): Record<string, never> => ({}) };
const PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';

const scratch: string[] = [];
afterAll(() => { for (const d of scratch.splice(0)) rmSync(d, { recursive: true, force: true }); });

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(d);
  return d;
}

/** The runc binary the shims would find on PATH. */
function realRunc(): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  const found = dirs.filter(Boolean).map((d) => join(d, 'runc')).find((p) => existsSync(p));
  if (!found) throw new Error('runc not found on PATH');
  return found;
}

/**
 * A runc that runs the real one and, after a successful `create`, SIGKILLs the init named in --pid-file
 * and waits until the shim (its subreaper) reaped it before it exits 0: the init's exit reaches the shim
 * while its Create is still in flight (as with an OOM kill or a runc wrapper that kills it). The wait is
 * bounded (10 s), so a shim that never reaps fails the test instead of hanging it. The pid file is read by
 * the path it was given, whatever the cwd is.
 */
function killingRunc(): string {
  const file = join(tempDir('kyb-runc-wrap-'), 'runc');
  writeFileSync(file, `#!/bin/sh
'${realRunc()}' "$@" || exit $?
create=; pidfile=; prev=
for a in "$@"; do
  if [ "$prev" = --pid-file ]; then pidfile=$a; fi
  case "$a" in
    create) create=1 ;;
    --pid-file=*) pidfile=\${a#--pid-file=} ;;
  esac
  prev=$a
done
if [ -n "$create" ] && [ -n "$pidfile" ]; then
  pid=$(cat "$pidfile")
  kill -9 "$pid"
  n=0
  while [ -e "/proc/$pid" ] && [ $n -lt 1000 ]; do sleep 0.01; n=$((n+1)); done
fi
exit 0
`);
  chmodSync(file, 0o755);
  return file;
}

/**
 * A runc that answers `start` a second late (a descheduled or slow runtime): the init, `true`, has exited
 * by the time the shim learns that Start succeeded.
 */
function slowStartRunc(): string {
  const file = join(tempDir('kyb-runc-slow-'), 'runc');
  writeFileSync(file, `#!/bin/sh
'${realRunc()}' "$@"; rc=$?
for a in "$@"; do [ "$a" = start ] && sleep 1; done
exit $rc
`);
  chmodSync(file, 0o755);
  return file;
}

/** A reader on a new FIFO that collects everything written to it (opened non-blocking: never waits for a writer). */
function fifoReader(dir: string, name: string): { path: string; text(): string; close(): void } {
  const path = join(dir, name);
  execFileSync('mkfifo', [path]);
  const sock = new net.Socket({ fd: openSync(path, constants.O_RDONLY | constants.O_NONBLOCK), readable: true, writable: false });
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  sock.on('error', () => { /* the writer went away */ });
  return { path, text: () => Buffer.concat(chunks).toString('utf8'), close: () => sock.destroy() };
}

/** True once `pid` is gone or a zombie (/proc/<pid>/stat field 3). */
function deadOrZombie(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state === 'Z' || state === 'X';
}

describeMatrix('runc parity', (ctx) => {
  async function withClient<T>(fn: (c: ContainerdClient) => Promise<T>): Promise<T> {
    const c = new ContainerdClient(ctx.cd.address, ctx.cd.namespace);
    try {
      return await fn(c);
    } finally {
      c.close();
    }
  }

  it('an init killed during Create is reported stopped with 137: Wait returns, /tasks/exit is published, Delete works', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('die-in-create');
    await cd.ctrOk(['containers', 'create', '--runtime', rt.runtime, TEST_IMAGE, id, 'sleep', '1000']);
    const rootfs = await snapshotMounts(cd, id);
    // Task options reach the shim as containerd.runc.v1.Options for every runtime; ctr sends them only for runc.
    const options = { type_url: 'containerd.runc.v1.Options', value: containerd.runc.v1.Options.encode({ binaryName: killingRunc() }).finish() };
    const watch = await watchEvents(cd.address, cd.namespace);
    try {
      const created = await withClient((c) => c.unary('/containerd.services.tasks.v1.Tasks/Create', tasksApi.CreateTaskRequest,
        tasksApi.CreateTaskResponse, { containerId: id, rootfs, options }));
      expect(created.pid).toBeGreaterThan(0);
      await waitStatus(cd, id, 'STOPPED');
      const waited = await withClient((c) => c.unary('/containerd.services.tasks.v1.Tasks/Wait', tasksApi.WaitRequest,
        tasksApi.WaitResponse, { containerId: id }));
      expect(waited.exitStatus).toBe(137);
      const ev = await watch.waitFor((e) => e.topic === '/tasks/exit' && eventContainerId(e) === id, 15_000);
      expect(containerd.events.TaskExit.decode(ev.value)).toMatchObject({ pid: created.pid, exitStatus: 137 });
      expect(await deleteTask(cd.address, cd.namespace, id)).toEqual({ pid: created.pid, exitStatus: 137 });
      expect(await task(cd, id)).toBeUndefined();
    } finally {
      watch.close();
    }
  });

  it('an init that exits while its Start is still in flight is published after TaskStart', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('exit-in-start');
    await cd.ctrOk(['containers', 'create', '--runtime', rt.runtime, TEST_IMAGE, id, 'true']);
    const rootfs = await snapshotMounts(cd, id);
    const options = { type_url: 'containerd.runc.v1.Options', value: containerd.runc.v1.Options.encode({ binaryName: slowStartRunc() }).finish() };
    const watch = await watchEvents(cd.address, cd.namespace);
    try {
      await withClient(async (c) => {
        await c.unary('/containerd.services.tasks.v1.Tasks/Create', tasksApi.CreateTaskRequest, tasksApi.CreateTaskResponse, { containerId: id, rootfs, options });
        await c.unary('/containerd.services.tasks.v1.Tasks/Start', tasksApi.StartRequest, tasksApi.StartResponse, { containerId: id });
      });
      await watch.waitFor((e) => e.topic === '/tasks/exit' && eventContainerId(e) === id, 15_000);
      const topics = watch.events.filter((e) => eventContainerId(e) === id).map((e) => e.topic);
      expect(topics.filter((t) => ['/tasks/create', '/tasks/start', '/tasks/exit'].includes(t))).toEqual(['/tasks/create', '/tasks/start', '/tasks/exit']);
    } finally {
      watch.close();
    }
  });

  it('an exec with terminal=true in the request and terminal=false in its process spec gets a tty', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('exec-term');
    await runDetached(cd, rt.runtime, id, LOOP);
    const spec = JSON.parse(await cd.ctrOk(['oci', 'spec'])) as { process: Record<string, unknown> };
    const processSpec = {
      ...spec.process, terminal: false, env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm'],
      args: ['/bin/sh', '-c', 'test -t 0 && test -t 1 && echo TTY-YES; exit 5'],
    };
    const out = fifoReader(tempDir('kyb-exec-tty-'), 'stdout');
    try {
      await withClient(async (c) => {
        await c.unary('/containerd.services.tasks.v1.Tasks/Exec', tasksApi.ExecProcessRequest, Empty, {
          containerId: id, execId: 'tty', terminal: true, stdout: out.path,
          spec: { type_url: PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify(processSpec)) },
        });
        // Wait is asked before Start, as containerd's client does: an exit right after Start is not missed.
        const waited = c.unary('/containerd.services.tasks.v1.Tasks/Wait', tasksApi.WaitRequest, tasksApi.WaitResponse,
          { containerId: id, execId: 'tty' });
        waited.catch(() => undefined); // awaited below; a failed Start must not leave it unhandled
        await c.unary('/containerd.services.tasks.v1.Tasks/Start', tasksApi.StartRequest, tasksApi.StartResponse,
          { containerId: id, execId: 'tty' });
        expect((await waited).exitStatus).toBe(5);
        await waitFor('the exec output', () => out.text().includes('TTY-YES'), 10_000);
        await c.unary('/containerd.services.tasks.v1.Tasks/DeleteProcess', tasksApi.DeleteProcessRequest, tasksApi.DeleteResponse,
          { containerId: id, execId: 'tty' });
      });
    } finally {
      out.close();
    }
  });

  /**
   * Runs a container in the test's own (the host's) pid namespace whose init starts `sleep 1000` in the
   * background, writes its pid to /h/child and exits 0 once `trigger` allows; resolves to that child's pid
   * once the task is STOPPED. /proc/1/ns/pid cannot be joined where pid 1 holds capabilities outside our
   * bounding set (the ptrace access check), as on some VMs; our own pid namespace is the same one there.
   */
  async function sharedPidChild(prefix: string, trigger: 'at-once' | 'on-go'): Promise<number> {
    const { cd, rt } = ctx;
    const id = ctx.id(prefix);
    const dir = tempDir('kyb-shared-pid-');
    const wait = trigger === 'on-go' ? 'while [ ! -e /h/go ]; do sleep 0.05; done; ' : '';
    await cd.ctrOk(['run', '-d', '--runtime', rt.runtime, '--with-ns', `pid:/proc/${process.pid}/ns/pid`,
      '--mount', `type=bind,src=${dir},dst=/h,options=rbind:rw`,
      TEST_IMAGE, id, 'sh', '-c', `sleep 1000 & echo $! > /h/child; ${wait}exit 0`]);
    const childFile = join(dir, 'child');
    await waitFor('the child pid', () => existsSync(childFile) && readFileSync(childFile, 'utf8').endsWith('\n'));
    // A host pid: the container shares the host's pid namespace.
    const child = Number(readFileSync(childFile, 'utf8').trim());
    expect(child).toBeGreaterThan(0);
    if (trigger === 'on-go') {
      expect((await task(cd, id))?.status).toBe('RUNNING');
      writeFileSync(join(dir, 'go'), '');
    }
    await waitStatus(cd, id, 'STOPPED');
    return child;
  }

  // The child is killed before the exit is reported; the deadline covers only its death and reaping.
  // Nothing else signals it: the task is neither killed nor deleted before the check.
  it('the init exit of a container in the host pid namespace kills its remaining children', async () => {
    const child = await sharedPidChild('shared-pid', 'on-go');
    await waitFor(`child ${child} to be dead`, () => deadOrZombie(child), 10_000);
  });

  // containerd's 1.7 and 2.x runc shims hand an init exit that arrives while Start is in flight straight to
  // handleProcessExit (preStart's handleStarted), which skips handleInitExit's kill-all: there the child
  // survives (runc's 1.6 shim kills it). Declared for kybernate everywhere and for runc on 1.6 only.
  if (ctx.rt.kind === 'kybernate' || ctx.version === '1.6') {
    it('an init in the host pid namespace that exits at once (during Start) kills its children too (runc only on 1.6: its 1.7/2.x shims skip kill-all on that path)', async () => {
      const child = await sharedPidChild('shared-pid-early', 'at-once');
      await waitFor(`child ${child} to be dead`, () => deadOrZombie(child), 10_000);
    });
  }

  it('ResizePty of a process without a terminal is a no-op', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('resize');
    await runDetached(cd, rt.runtime, id, LOOP);
    await cd.ctrOk(['tasks', 'exec', '-d', '--exec-id', 'plain', id, 'sleep', '1000']);
    await withClient(async (c) => {
      for (const execId of ['', 'plain']) {
        await c.unary('/containerd.services.tasks.v1.Tasks/ResizePty', tasksApi.ResizePtyRequest, Empty,
          { containerId: id, execId, width: 100, height: 40 });
      }
    });
    expect((await task(cd, id))?.status).toBe('RUNNING');
  });
});
