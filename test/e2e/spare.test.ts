// The warm spare shim daemon behind the native front (src/shim/spare, native/front): who claims it, who
// may not, and what happens when it is dead, of another build, stale, or switched off. Each containerd here
// gets its own spare directory (KYBERNATE_SHIM_SPARE_DIR), so no other test file's starts take its spare.
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { REPO_ROOT, TEST_IMAGE } from './support/harness';
import { describeMatrix } from './support/matrix';
import { createContainer, createTask, rejection, runcOptions } from './support/task-options';
import { LOOP, alive, bundleDir, cmdline, listenerPid, ppid, runDetached, tasks, waitFor, waitStatus } from './support/ctr';

const BUILD_FILE = join(REPO_ROOT, 'dist', 'containerd-shim-kybernate-v2.build');
const BUNDLE = join(REPO_ROOT, 'dist', 'containerd-shim-kybernate-v2.cjs');
const build = existsSync(BUILD_FILE) ? readFileSync(BUILD_FILE, 'utf8').trim() : '';
const tmp = mkdtempSync(join(tmpdir(), 'kyb-spare-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

const spareDir = (v: string): string => join(tmp, `spares-${v}`);
const traceFile = (v: string): string => join(tmp, `trace-${v}.jsonl`);
/** This build's spare sockets in a directory (<build>-<environment key>.sock; one per containerd environment). */
const spareSocks = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir) : [])
  .filter((n) => n.startsWith(`${build}-`) && n.endsWith('.sock')).map((n) => join(dir, n));

/** The listening spare of `dir`: its socket path and pid. */
async function listening(dir: string): Promise<{ sock: string; pid: number } | undefined> {
  for (const sock of spareSocks(dir)) {
    const pid = await listenerPid(sock);
    if (pid !== undefined) return { sock, pid };
  }
  return undefined;
}

interface TraceLine { c: string; ev: string; id: string }
function traceOf(v: string, id: string): string[] {
  if (!existsSync(traceFile(v))) return [];
  return readFileSync(traceFile(v), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as TraceLine)
    .filter((l) => l.c === 'front' && l.id === id).map((l) => l.ev);
}

/** The pid of the spare listening in this version's directory (waits for one to boot). */
const waitSpare = (v: string, not?: number): Promise<number> =>
  waitFor('a spare to listen', async () => { const l = await listening(spareDir(v)); return l !== undefined && l.pid !== not ? l.pid : undefined; }, 20_000);

/** Runs a copy of the shim bundle as a spare of its own directory (KYBERNATE_ADDON: the copy is outside dist/). */
function runSpareCopy(script: string, dir: string, env: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, [script, 'spare'], {
    stdio: 'ignore', env: { ...process.env, KYBERNATE_SHIM_SPARE_DIR: dir, KYBERNATE_ADDON: join(REPO_ROOT, 'dist', 'kybernate.node'), ...env },
  });
  children.push(child);
  return child;
}

describeMatrix('warm spare', (ctx) => {
  it('a start claims the spare (its daemon is then the group\'s), and the claimed daemon boots the next spare', async () => {
    const { cd, rt, version } = ctx;
    const first = ctx.id('first');
    await runDetached(cd, rt.runtime, first, LOOP);
    const spare = await waitSpare(version);
    const second = ctx.id('second');
    const t = await runDetached(cd, rt.runtime, second, LOOP);
    expect(ppid(t.pid)).toBe(spare);
    expect(traceOf(version, second)).toEqual(['start:spare']);
    // ps shows it as a daemon of this containerd, as a launched one would.
    expect(cmdline(spare).join(' ')).toContain(`-address ${cd.address}`);
    // It holds none of containerd's pipes: stdin and stdout /dev/null, stderr the spare log.
    for (const fd of [0, 1]) expect(readlinkSync(`/proc/${spare}/fd/${fd}`)).toBe('/dev/null');
    expect(readlinkSync(`/proc/${spare}/fd/2`)).toBe(join(spareDir(version), `${build}.log`));
    expect(await cd.ctrOk(['tasks', 'exec', '--exec-id', 'probe', second, 'echo', 'served'])).toBe('served\n');
    const next = await waitSpare(version, spare);
    expect(next).not.toBe(spare);
  });

  it('concurrent starts: two new groups never share the spare, and one new group gets one daemon', async () => {
    const { cd, rt, version } = ctx;
    await runDetached(cd, rt.runtime, ctx.id('warm'), LOOP);
    const spare = await waitSpare(version);
    const groups = ['ga', 'gb', 'gc'].map((g) => `${g}-${process.pid}-${version}`);
    const ids = groups.map((g) => ctx.id(g));
    await Promise.all(ids.map((id, i) => cd.ctrOk(['run', '-d', '--runtime', rt.runtime, '--annotation',
      `${rt.groupAnnotation}=${groups[i]}`, TEST_IMAGE, id, ...LOOP])));
    const t = await waitFor('all RUNNING', async () => { const m = await tasks(cd); return ids.every((id) => m.get(id)?.status === 'RUNNING') ? m : undefined; });
    const daemons = ids.map((id) => ppid(t.get(id)!.pid));
    expect(new Set(daemons).size).toBe(ids.length);
    expect(daemons.filter((d) => d === spare).length).toBe(1);

    const one = `one-${process.pid}-${version}`;
    const next = await waitSpare(version, spare);
    const members = Array.from({ length: 5 }, (_, i) => ctx.id(`one${i}`));
    await Promise.all(members.map((id) => cd.ctrOk(['run', '-d', '--runtime', rt.runtime, '--annotation',
      `${rt.groupAnnotation}=${one}`, TEST_IMAGE, id, ...LOOP])));
    const t2 = await waitFor('group RUNNING', async () => { const m = await tasks(cd); return members.every((id) => m.get(id)?.status === 'RUNNING') ? m : undefined; });
    // The spare's claim and the Node starts that fell back race for the group socket; one daemon wins.
    expect(new Set(members.map((id) => ppid(t2.get(id)!.pid))).size).toBe(1);
    expect(alive(next)).toBe(true);
  });

  it('a claim that cannot join its shim cgroup fails the start with the reason, and the half daemon exits', async () => {
    const { cd, rt, version } = ctx;
    await runDetached(cd, rt.runtime, ctx.id('pre'), LOOP);
    const spare = await waitSpare(version);
    const id = ctx.id('badcg');
    await createContainer(cd, rt.runtime, id, LOOP);
    const missing = `/kyb-missing-${process.pid}-${version}`;
    const why = await rejection(createTask(cd, id, runcOptions({ shimCgroup: missing })));
    // cgroup v2: "failed to join shim cgroup …"; v1: "shim cgroup … exists in no cgroup v1 hierarchy".
    expect(why).toContain(`shim cgroup ${missing}`);
    expect(traceOf(version, id)).toEqual(['start:spare']);
    await waitFor('the failed claim to exit', () => !alive(spare));
    // Nothing of it answers on the group's socket; the container starts normally without the option.
    const t = await createTask(cd, id);
    expect(ppid(t)).not.toBe(spare);
  });

  it('a SIGKILLed spare is never claimed: the start takes the Node path and a new spare replaces it', async () => {
    const { cd, rt, version } = ctx;
    await runDetached(cd, rt.runtime, ctx.id('pre'), LOOP);
    const spare = await waitSpare(version);
    process.kill(spare, 'SIGKILL');
    await waitFor('the spare to die', () => !alive(spare));
    const id = ctx.id('after-kill');
    const t = await runDetached(cd, rt.runtime, id, LOOP);
    expect(ppid(t.pid)).not.toBe(spare);
    expect(traceOf(version, id)).toEqual(['start:node']);
    expect(await waitSpare(version)).not.toBe(spare);
  });

  it('a spare of another build at this build\'s path is not claimed; it steps aside and is replaced', async () => {
    const { cd, rt, version } = ctx;
    const other = build === 'f'.repeat(16) ? 'e'.repeat(16) : 'f'.repeat(16);
    const script = join(tmp, `other-${version}.cjs`);
    writeFileSync(script, readFileSync(BUNDLE, 'utf8').split(build).join(other));
    const otherDir = join(tmp, `other-${version}`);
    const foreign = runSpareCopy(script, otherDir);
    const foreignSock = await waitFor('the foreign spare to listen', async () => {
      for (const n of existsSync(otherDir) ? readdirSync(otherDir) : []) {
        if (n.startsWith(`${other}-`) && n.endsWith('.sock') && await listenerPid(join(otherDir, n)) === foreign.pid) return join(otherDir, n);
      }
      return undefined;
    }, 20_000);
    await runDetached(cd, rt.runtime, ctx.id('pre'), LOOP);
    const ours = (await waitFor('our spare', () => listening(spareDir(version)), 20_000));
    process.kill(ours.pid, 'SIGKILL');
    await waitFor('our spare to die', () => !alive(ours.pid));
    renameSync(foreignSock, ours.sock);

    const id = ctx.id('vs-foreign');
    const t = await runDetached(cd, rt.runtime, id, LOOP);
    expect(ppid(t.pid)).not.toBe(foreign.pid);
    expect(traceOf(version, id)).toEqual(['start:node']);
    await waitFor('the foreign spare to exit', () => foreign.exitCode !== null);
    const replaced = await waitSpare(version);
    expect(replaced).not.toBe(foreign.pid);
  });

  it('a spare whose bundle was replaced on disk (a new build) exits instead of waiting to be claimed', async () => {
    const { version } = ctx;
    const dir = join(tmp, `stale-${version}`);
    const script = join(dir, 'containerd-shim-kybernate-v2.cjs');
    mkdirSync(dir, { recursive: true });
    copyFileSync(BUNDLE, script);
    const child = runSpareCopy(script, dir, { KYBERNATE_SHIM_SPARE_CHECK_MS: '100' });
    const { sock } = await waitFor('the copy to listen', () => listening(dir), 20_000);
    copyFileSync(BUNDLE, `${script}.new`);
    renameSync(`${script}.new`, script); // what scripts/bundle.cjs does on a rebuild
    await waitFor('the stale spare to exit', () => child.exitCode !== null, 10_000);
    expect(existsSync(sock)).toBe(false);
  });

  it('a spare whose containerd is gone (its ttrpc socket answers no more) exits', async () => {
    const { version } = ctx;
    const dir = join(tmp, `gone-${version}`);
    const ttrpc = join(tmp, `gone-${version}.ttrpc`);
    const server = createServer((c) => c.destroy());
    await new Promise<void>((r) => server.listen(ttrpc, () => r()));
    const child = runSpareCopy(BUNDLE, dir, { KYBERNATE_SHIM_SPARE_CHECK_MS: '100', TTRPC_ADDRESS: ttrpc });
    const { sock } = await waitFor('the spare to listen', () => listening(dir), 20_000);
    await new Promise((r) => setTimeout(r, 500));
    expect(child.exitCode).toBeNull(); // its containerd answers: it stays
    await new Promise<void>((r) => server.close(() => r()));
    await waitFor('the spare to exit', () => child.exitCode !== null, 10_000);
    expect(existsSync(sock)).toBe(false);
  });

  it('after a daemon is SIGKILLed, containerd\'s `delete` is answered by the spare and the container is cleaned up', async () => {
    const { cd, rt, version } = ctx;
    await runDetached(cd, rt.runtime, ctx.id('pre'), LOOP);
    await waitSpare(version);
    const id = ctx.id('orphan');
    // Its own group: the daemon serves only this container, so killing it touches nothing else.
    const t = await runDetached(cd, rt.runtime, id, LOOP, ['--annotation', `${rt.groupAnnotation}=orphan-${process.pid}-${version}`]);
    const daemon = ppid(t.pid);
    // If this start claimed the spare, the next one must be up before the delete comes.
    await waitSpare(version, daemon);
    const bundle = bundleDir(cd, id);
    process.kill(daemon, 'SIGKILL');
    await waitFor('init to be gone', () => !alive(t.pid));
    await waitFor(`bundle ${bundle} to be removed`, () => !existsSync(bundle));
    expect(traceOf(version, id)).toContain('delete:spare');
  });
}, {
  runtimes: ['kybernate'],
  skip: () => (build ? undefined : 'the native front is not built (dist/containerd-shim-kybernate-v2.build missing: make build)'),
  start: (v) => ({ env: { KYBERNATE_SHIM_SPARE_DIR: spareDir(v), KYBERNATE_TRACE: traceFile(v) } }),
});

describeMatrix('spares switched off', (ctx) => {
  it('KYBERNATE_SHIM_SPARE=0: no spare boots and every start takes the Node path', async () => {
    const { cd, rt, version } = ctx;
    const ids = [ctx.id('off-a'), ctx.id('off-b')];
    for (const id of ids) await runDetached(cd, rt.runtime, id, LOOP);
    for (const id of ids) expect(traceOf(`off-${version}`, id)).toEqual(['start:node']);
    expect(existsSync(spareDir(`off-${version}`))).toBe(false);
    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGKILL', ids[0]!]);
    await waitStatus(cd, ids[0]!, 'STOPPED');
  });
}, {
  runtimes: ['kybernate'],
  skip: () => (build ? undefined : 'the native front is not built (dist/containerd-shim-kybernate-v2.build missing: make build)'),
  start: (v) => ({ env: { KYBERNATE_SHIM_SPARE: '0', KYBERNATE_SHIM_SPARE_DIR: spareDir(`off-${v}`), KYBERNATE_TRACE: traceFile(`off-${v}`) } }),
});
