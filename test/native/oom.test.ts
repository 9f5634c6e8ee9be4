// cgroup v1 OOM notifications with a real memory cgroup and a real OOM kill.
import { spawn as spawnChild } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as native from '../../src/native';
import { isRoot } from './helpers';

const MEMORY_ROOT = '/sys/fs/cgroup/memory';
const v1 = fs.existsSync(path.join(MEMORY_ROOT, 'cgroup.event_control'));
const skipReason = !isRoot ? 'needs root to create memory cgroups' : !v1 ? `no cgroup v1 memory controller at ${MEMORY_ROOT}` : '';

const created: string[] = [];
function makeCgroup(limitBytes?: number): string {
  const dir = path.join(MEMORY_ROOT, `kybernate-test-${process.pid}-${created.length}`);
  fs.mkdirSync(dir);
  created.push(dir);
  if (limitBytes !== undefined) {
    fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(limitBytes));
    const memsw = path.join(dir, 'memory.memsw.limit_in_bytes');
    if (fs.existsSync(memsw)) fs.writeFileSync(memsw, String(limitBytes)); // no escape into swap
  }
  return dir;
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

afterEach(() => {
  for (const dir of created.splice(0)) if (fs.existsSync(dir)) fs.rmdirSync(dir);
});

describe.skipIf(skipReason !== '')(`cgroup v1 OOM watch${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  it('calls back when a process in the cgroup is OOM-killed', async () => {
    const dir = makeCgroup(16 * 1024 * 1024);
    let ooms = 0;
    const id = native.watchOomV1(dir, () => ooms++);
    expect(native.oomWatchActive(id)).toBe(true);
    // The shell moves itself into the cgroup, then becomes python, which touches 64 MiB.
    const child = spawnChild('/bin/sh', ['-c', `echo $$ > ${dir}/cgroup.procs && exec python3 -c 'b = b"x" * (64 << 20)'`], {
      stdio: 'ignore',
    });
    const [, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      child.once('exit', (code, sig) => resolve([code, sig])),
    );
    expect(signal).toBe('SIGKILL');
    await until('the OOM callback', () => ooms > 0);
    expect(native.unwatchOomV1(id)).toBe(true);
    expect(native.unwatchOomV1(id)).toBe(false);
  });

  it('ends the watch without a callback when the cgroup is removed', async () => {
    const dir = makeCgroup();
    let calls = 0;
    const id = native.watchOomV1(dir, () => calls++);
    fs.rmdirSync(dir);
    await until('the watch to end', () => !native.oomWatchActive(id));
    expect(calls).toBe(0);
    expect(native.unwatchOomV1(id)).toBe(false);
  });

  it('fails with ENOENT for a directory that is not a cgroup', () => {
    expect(() => native.watchOomV1('/nonexistent-cgroup', () => {})).toThrow(
      expect.objectContaining({ code: 'ENOENT', op: 'watchOomV1', path: '/nonexistent-cgroup/memory.oom_control' }),
    );
  });
});
