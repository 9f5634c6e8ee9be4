// Docker Engine as a client of the shim: the everyday docker commands with `--runtime kybernate`, each next to
// Docker's own runc runtime with the same expectations (dockerd from Debian's docker.io against the test
// containerd; test/harness/docker.ts). Checkpoints, live-restore and a killed shim: docker-checkpoint.test.ts.
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { execCollect, type CtrResult } from '../harness/containerd';
import { dockerCliPath, type Docker } from '../harness/docker';
import { LOOP, waitFor } from './support/ctr';
import { DOCKER_TEST_IMAGE, describeDocker, state, waitState } from './support/docker';

/** Host-side memory limit of the cgroup of `pid` (v1 memory.limit_in_bytes, v2 memory.max). */
function memoryLimitOf(pid: number): string {
  for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    const [, controllers, path] = line.split(':');
    if (controllers?.split(',').includes('memory')) return readFileSync(`/sys/fs/cgroup/memory${path}/memory.limit_in_bytes`, 'utf8').trim();
    if (controllers === '' && path !== undefined) {
      try {
        return readFileSync(`/sys/fs/cgroup${path}/memory.max`, 'utf8').trim();
      } catch { /* hybrid hierarchy: the v1 line has it */ }
    }
  }
  throw new Error(`no memory cgroup for ${pid}`);
}

describeDocker('docker', (ctx) => {
  const run = (args: string[], cmd: string[], input?: string) =>
    ctx.d.docker(['run', '--runtime', ctx.rt.name, '--network', 'none', ...args, DOCKER_TEST_IMAGE, ...cmd], input === undefined ? {} : { input });

  it('run --rm: output and exit status come through; the runtime is the one asked for', async () => {
    const name = ctx.name('run');
    const r = await run(['--name', name], ['sh', '-c', 'echo hello; echo oops >&2; exit 3']);
    expect(r.stdout).toBe('hello\n');
    expect(r.stderr).toContain('oops');
    expect(r.code).toBe(3);
    expect(await ctx.d.inspect(name, 'HostConfig.Runtime')).toBe(ctx.rt.name);
    const rm = await run(['--rm'], ['echo', 'gone']);
    expect(rm).toMatchObject({ code: 0, stdout: 'gone\n' });
  });

  it('run -t and run -it (through script): the process gets a terminal; stdin reaches it', async () => {
    const t = await run(['--rm', '-t'], ['tty']);
    expect(t.code).toBe(0);
    expect(t.stdout).toMatch(/^\/dev\/pts\/\d+\r\n$/);
    const i = await run(['--rm', '-i'], ['sh', '-c', 'read x; echo "got $x"'], 'line\n');
    expect(i).toMatchObject({ code: 0, stdout: 'got line\n' });
    // A real terminal on the client side: util-linux script runs the CLI on a pty.
    const cmd = `docker run --rm -it --runtime ${ctx.rt.name} --network none ${DOCKER_TEST_IMAGE} sh -c 'tty; read x; echo "typed $x"; exit 4'`;
    const s = await scriptRun(ctx, cmd, 'hello\n');
    expect(s.stdout).toMatch(/\/dev\/pts\/\d+/);
    expect(s.stdout).toContain('typed hello');
    expect(s.code).toBe(4);
  });

  it('exec: output, exit status, stdin (-i) and a terminal (-t); exec -it through script', async () => {
    const name = ctx.name('exec');
    await ctx.runDetached(name, LOOP);
    expect(await ctx.d.dockerOk(['exec', name, 'echo', 'in there'])).toBe('in there');
    expect((await ctx.d.docker(['exec', name, 'sh', '-c', 'exit 5'])).code).toBe(5);
    expect(await ctx.d.dockerOk(['exec', '-i', name, 'cat'], { input: 'piped\n' })).toBe('piped');
    expect(await ctx.d.dockerOk(['exec', '-t', name, 'tty'])).toMatch(/^\/dev\/pts\/\d+$/);
    const s = await scriptRun(ctx, `docker exec -it ${name} sh -c 'read x; echo "exec typed $x"'`, 'hi\n');
    expect(s.stdout).toContain('exec typed hi');
    expect(s.code).toBe(0);
  });

  it('logs -f follows the output until the container exits', async () => {
    const name = ctx.name('logs');
    await ctx.runDetached(name, ['sh', '-c', 'for i in 1 2 3; do echo line$i; sleep 0.3; done']);
    const r = await ctx.d.docker(['logs', '-f', name], { timeoutMs: 30_000 });
    expect(r).toMatchObject({ code: 0, stdout: 'line1\nline2\nline3\n' });
    expect((await state(ctx.d, name)).Running).toBe(false);
  });

  it('stop sends SIGTERM (the init\'s trap exits 7); kill -s KILL gives 137; restart runs a new process', async () => {
    const a = ctx.name('stop');
    await ctx.runDetached(a, LOOP);
    await ctx.d.dockerOk(['stop', '-t', '20', a]);
    expect(await state(ctx.d, a)).toMatchObject({ Running: false, ExitCode: 7 });

    const b = ctx.name('kill');
    const pid = await ctx.runDetached(b, LOOP);
    await ctx.d.dockerOk(['kill', '-s', 'KILL', b]);
    expect(await waitState(ctx.d, b, 'exited', (s) => !s.Running)).toMatchObject({ ExitCode: 137 });

    await ctx.d.dockerOk(['restart', '-t', '20', b]);
    const after = await waitState(ctx.d, b, 'running again', (s) => s.Running && s.Pid > 0);
    expect(after.Pid).not.toBe(pid);
    expect(await ctx.d.dockerOk(['exec', b, 'echo', 'restarted'])).toBe('restarted');
  });

  it('a restart policy (on-failure:2) restarts a failing container twice', async () => {
    const name = ctx.name('policy');
    await ctx.d.dockerOk(['run', '-d', '--name', name, '--runtime', ctx.rt.name, '--network', 'none', '--restart', 'on-failure:2',
      DOCKER_TEST_IMAGE, 'sh', '-c', 'sleep 0.2; exit 3']);
    await waitFor(`${name} to be restarted twice and stay down`, async () => {
      const [count, s] = [await ctx.d.inspect<number>(name, 'RestartCount'), await state(ctx.d, name)];
      return count === 2 && !s.Running && !s.Restarting && s.ExitCode === 3;
    }, 60_000, 200);
  });

  it('stats --no-stream and top see the container\'s cgroup and processes', async () => {
    const name = ctx.name('stats');
    await ctx.runDetached(name, ['sh', '-c', 'while true; do sleep 0.05; done']);
    const stats = await ctx.d.dockerOk(['stats', '--no-stream', '--format', '{{.Name}} {{.MemUsage}} {{.PIDs}}', name]);
    expect(stats).toMatch(new RegExp(`^${name} [0-9.]+[KMG]?i?B / \\S+ [1-9]\\d*$`));
    const top = await ctx.d.dockerOk(['top', name]);
    expect(top).toContain('while true');
  });

  it('pause freezes the container, unpause thaws it; exec works again', async () => {
    const name = ctx.name('pause');
    await ctx.runDetached(name, LOOP);
    await ctx.d.dockerOk(['pause', name]);
    expect(await state(ctx.d, name)).toMatchObject({ Running: true, Paused: true, Status: 'paused' });
    expect((await ctx.d.docker(['exec', name, 'true'])).stderr).toMatch(/paused/);
    await ctx.d.dockerOk(['unpause', name]);
    expect(await state(ctx.d, name)).toMatchObject({ Running: true, Paused: false, Status: 'running' });
    expect(await ctx.d.dockerOk(['exec', name, 'echo', 'thawed'])).toBe('thawed');
  });

  it('update changes the memory limit of the running container\'s cgroup', async () => {
    const name = ctx.name('update');
    const pid = await ctx.runDetached(name, LOOP, ['--memory', '128m', '--memory-swap', '256m']);
    expect(memoryLimitOf(pid)).toBe(String(128 << 20));
    await ctx.d.dockerOk(['update', '--memory', '64m', '--memory-swap', '128m', name]);
    expect(await ctx.d.inspect(name, 'HostConfig.Memory')).toBe(64 << 20);
    expect(memoryLimitOf(pid)).toBe(String(64 << 20));
  });

  it('wait returns the exit status', async () => {
    const name = ctx.name('wait');
    await ctx.runDetached(name, ['sh', '-c', 'sleep 0.5; exit 4']);
    expect(await ctx.d.dockerOk(['wait', name])).toBe('4');
  });

  it('an OOM kill: exit 137 and State.OOMKilled', async () => {
    const name = ctx.name('oom');
    // busybox tail keeps the current line, and /dev/zero has no newline: it grows until the limit.
    const r = await run(['--name', name, '--memory', '32m', '--memory-swap', '32m'], ['tail', '/dev/zero']);
    expect(r.code).toBe(137);
    expect(await state(ctx.d, name)).toMatchObject({ OOMKilled: true, ExitCode: 137 });
  });

  it('--init runs docker-init as pid 1, the command under it', async () => {
    const r = await run(['--rm', '--init'], ['ps', '-o', 'pid,comm']);
    expect(r.code).toBe(0);
    const pid1 = r.stdout.split('\n').find((l) => /^\s*1\s/.test(l));
    expect(pid1).toMatch(/docker-init|tini/);
    expect(r.stdout).toMatch(/\bps\b/);
  });
});

/** Runs `command` (a shell line starting with `docker`) on a pty through util-linux script, against ctx's dockerd. */
function scriptRun(ctx: { d: Docker }, command: string, input: string): Promise<CtrResult> {
  const line = command.replace(/^docker /, `${dockerCliPath() ?? 'docker'} `);
  return execCollect('script', ['-qefc', line, '/dev/null'], { ...process.env, ...ctx.d.env }, { input, timeoutMs: 60_000 });
}
