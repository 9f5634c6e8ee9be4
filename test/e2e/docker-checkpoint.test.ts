// Docker Engine: `docker checkpoint create` and `docker start --checkpoint` (CRIU underneath), a dockerd
// restart with live-restore, and a SIGKILLed shim, for `--runtime kybernate` next to Docker's runc.
//
// Docker sends CheckpointOptions{Exit} only to runtimes it knows as runc's; to io.containerd.kybernate.v2
// both `checkpoint create` and `checkpoint create --leave-running` arrive without options (moby
// libcontainerd/remote/client.go getCheckpointOptions). The shim reads such a request in Docker's
// namespace as exit, Docker's documented default; the annotation io.kybernate.checkpoint.default=leave-running
// makes it leave a container running (src/shim/checkpoint-options.ts).
import { afterAll, expect, it } from 'vitest';
import { CHECKPOINT_DEFAULT_ANNOTATION } from '../../src/shim/checkpoint-options';
import {
  COUNTER, checkpointDaemonOptions, counterOf, counterPast, criuMissing, removeDaemonRuntimeDirs, type Count,
} from './support/checkpoint';
import { LOOP, alive, cmdline, ppid, sleep, waitFor } from './support/ctr';
import { describeDocker, waitState, type DockerContext } from './support/docker';

/** Waits until the counter of `pid` shows `token` and satisfies `pred`: the restored process has written. */
function counterWhere(pid: number, what: string, pred: (c: Count) => boolean): Promise<Count> {
  return waitFor(what, () => {
    const c = counterOf(pid);
    return pred(c) ? c : undefined;
  }, 30_000);
}

/**
 * `docker start --checkpoint`, again while it fails with "content sha256:…: already exists": Docker uploads
 * the checkpoint directory as content and takes AlreadyExists for a failure, and the byte-identical blob of
 * the checkpoint it just made stays until containerd's garbage collector removes it (moby#42900; runc alike).
 */
async function startFromCheckpoint(ctx: DockerContext, name: string, checkpoint: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await ctx.d.docker(['start', '--checkpoint', checkpoint, name]);
    if (r.code === 0) return;
    if (!/already exists/.test(r.stderr) || Date.now() > deadline) {
      throw new Error(`docker start --checkpoint ${checkpoint} ${name} exited ${r.code}: ${r.stderr.trim()}`);
    }
    await sleep(250);
  }
}

/** `docker start --checkpoint cp1`: the same counter (its token) goes on from where it was seen. */
async function expectResumedFrom(ctx: DockerContext, name: string, seen: { token: string; n: number }): Promise<void> {
  await startFromCheckpoint(ctx, name, 'cp1');
  const after = await running(ctx, name);
  const restored = await counterWhere(after.Pid, 'the restored counter', (c) => c.token === seen.token && c.n >= seen.n);
  await counterPast(after.Pid, restored.n, 'restored counter');
}

const running = (ctx: DockerContext, name: string) => waitState(ctx.d, name, 'running', (s) => s.Running && !s.Restarting && s.Pid > 0);
const exited = (ctx: DockerContext, name: string) => waitState(ctx.d, name, 'exited', (s) => !s.Running && !s.Restarting);

const skip = criuMissing();

afterAll(removeDaemonRuntimeDirs);

describeDocker('docker checkpoint, live-restore, shim kill', (ctx) => {
  const itCriu = skip === undefined ? it : (name: string, fn: () => Promise<void>) => it.skip(`${name} (skipped: ${skip})`, fn);

  itCriu('checkpoint create exits the container; start --checkpoint continues the counter in a new process', async () => {
    const name = ctx.name('cp');
    const pid = await ctx.runDetached(name, COUNTER);
    const seen = await counterPast(pid, 2);
    expect(await ctx.d.dockerOk(['checkpoint', 'create', name, 'cp1'])).toBe('cp1');
    await exited(ctx, name);
    await waitFor('the checkpointed init to be gone', () => !alive(pid));
    expect(await ctx.d.dockerOk(['checkpoint', 'ls', name])).toContain('cp1');
    const last = counterOf(pid).n || seen.n;

    await startFromCheckpoint(ctx, name, 'cp1');
    const after = await running(ctx, name);
    expect(after.Pid).not.toBe(pid);
    // A process started afresh would draw another token and count from 1.
    const restored = await counterWhere(after.Pid, `the restored counter to pass ${last}`, (c) => c.n > last);
    expect(restored.token).toBe(seen.token);
    await counterPast(after.Pid, restored.n, 'restored counter');
  });

  itCriu(`checkpoint create --leave-running (with ${CHECKPOINT_DEFAULT_ANNOTATION}=leave-running) keeps it running; start --checkpoint later goes back to that point`, async () => {
    const name = ctx.name('cp-live');
    const pid = await ctx.runDetached(name, COUNTER, ['--annotation', `${CHECKPOINT_DEFAULT_ANNOTATION}=leave-running`]);
    const seen = await counterPast(pid, 2);
    await ctx.d.dockerOk(['checkpoint', 'create', '--leave-running', name, 'cp1']);
    const atCheckpoint = counterOf(pid).n;
    expect(await running(ctx, name)).toMatchObject({ Pid: pid });
    const later = await counterPast(pid, atCheckpoint + 10, 'counter after the checkpoint');
    await ctx.d.dockerOk(['kill', name]);
    await exited(ctx, name);

    await startFromCheckpoint(ctx, name, 'cp1');
    const after = await running(ctx, name);
    // The file still says `later` until the restored process, back at the checkpoint, writes its next value.
    const back = await counterWhere(after.Pid, `the counter to be back at the checkpoint (${atCheckpoint})`, (c) => c.n <= atCheckpoint + 2);
    expect(back.token).toBe(seen.token);
    expect(later.n).toBeGreaterThan(back.n);
    await counterPast(after.Pid, back.n, 'restored counter');
  });

  itCriu('checkpoint create --leave-running without the annotation: runc leaves it running; kybernate cannot tell it from a plain create (Docker sends no options for either) and exits', async () => {
    const name = ctx.name('cp-ambiguous');
    const pid = await ctx.runDetached(name, COUNTER);
    const seen = await counterPast(pid, 2);
    await ctx.d.dockerOk(['checkpoint', 'create', '--leave-running', name, 'cp1']);
    if (ctx.rt.kind === 'runc') {
      expect(await running(ctx, name)).toMatchObject({ Pid: pid });
      await counterPast(pid, counterOf(pid).n);
      await ctx.d.dockerOk(['kill', name]);
    }
    await exited(ctx, name);
    // Either way the checkpoint is complete and restores.
    await expectResumedFrom(ctx, name, seen);
  });

  // moby libcontainerd/remote/client.go: LoadContainer, which a restarted dockerd reloads its containers
  // with, keeps no runc options, so getCheckpointOptions sends none to runc either.
  itCriu('after a dockerd restart checkpoint create still exits with kybernate; runc is left running (the restarted dockerd no longer sends it options)', async () => {
    const name = ctx.name('cp-restarted');
    const pid = await ctx.runDetached(name, COUNTER);
    const seen = await counterPast(pid, 2);
    await ctx.d.restart();
    await ctx.d.dockerOk(['checkpoint', 'create', name, 'cp1']);
    if (ctx.rt.kind === 'runc') {
      expect(await running(ctx, name)).toMatchObject({ Pid: pid });
      await ctx.d.dockerOk(['kill', name]);
    }
    await exited(ctx, name);
    await expectResumedFrom(ctx, name, seen);
  });

  it('a dockerd restart with live-restore keeps the container running; exec and stop work afterwards', async () => {
    const name = ctx.name('live');
    const pid = await ctx.runDetached(name, LOOP);
    await ctx.d.restart();
    expect(await running(ctx, name)).toMatchObject({ Pid: pid });
    expect(alive(pid)).toBe(true);
    expect(await ctx.d.dockerOk(['exec', name, 'echo', 'after restart'])).toBe('after restart');
    await ctx.d.dockerOk(['stop', '-t', '20', name]);
    expect(await exited(ctx, name)).toMatchObject({ ExitCode: 7 });
    expect(alive(pid)).toBe(false);
  });

  it('a SIGKILLed shim: Docker sees the container exit, and it starts again', async () => {
    const name = ctx.name('shimkill');
    const pid = await ctx.runDetached(name, LOOP);
    const shim = ppid(pid);
    expect(cmdline(shim).join(' ')).toMatch(ctx.rt.kind === 'runc' ? /containerd-shim-runc-v2/ : /kybernate/);
    process.kill(shim, 'SIGKILL');
    await exited(ctx, name);
    await waitFor('the container init to be gone', () => !alive(pid));
    await ctx.d.dockerOk(['start', name]);
    const again = await running(ctx, name);
    expect(again.Pid).not.toBe(pid);
    expect(await ctx.d.dockerOk(['exec', name, 'echo', 'back'])).toBe('back');
  });
}, { containerd: checkpointDaemonOptions });
