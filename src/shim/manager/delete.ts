// `delete`: containerd runs it after every teardown and after a shim died. It must be idempotent, finish
// within containerd's 5 s cleanup budget, touch only container -id (a grouped daemon may still serve its
// siblings), and print nothing but a DeleteResponse.
import Long from 'long';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type BundleState, defaultRuncRoot, readBundleState, readInitPid } from '../bundle-state';
import type { ShimFlags } from '../flags';
import { runcEnv } from '../runc';

const RUNC_DELETE_TIMEOUT_MS = 3_000;
const SIGKILL_STATUS = 128 + 9;

function forceDeleteContainer(bundle: string, flags: ShimFlags, st: BundleState | undefined, env: NodeJS.ProcessEnv): Promise<void> {
  const root = st?.runcRoot ?? defaultRuncRoot(flags.namespace);
  const args = ['--root', root, 'delete', '--force', flags.id];
  // In the bundle, like every runc the daemon runs (a BinaryName wrapper may read ./config.json).
  const cwd = fs.existsSync(bundle) ? bundle : undefined;
  return new Promise((resolve) => {
    execFile(st?.runcBinary ?? 'runc', args, { cwd, timeout: RUNC_DELETE_TIMEOUT_MS, env }, () => resolve());
  });
}

async function unmountRootfs(bundle: string): Promise<void> {
  const rootfs = path.join(bundle, 'rootfs');
  if (!fs.existsSync(rootfs)) return;
  const { unmountAll } = await import('../mount');
  unmountAll(rootfs);
}

/**
 * What `delete` prints (a DeleteResponse), after cleaning up container -id of the bundle (-bundle, else
 * `cwd`). `env` is the environment runc gets (a spare answers for a front whose environment it is).
 */
export async function deleteOutput(flags: ShimFlags, cwd: string, env: NodeJS.ProcessEnv = runcEnv()): Promise<Buffer> {
  const bundle = flags.bundle || cwd;
  const pid = readInitPid(bundle);
  const st = readBundleState(bundle);
  // After a normal teardown the daemon already deleted the container; after a crash it did not.
  if (!st?.deleted) {
    await forceDeleteContainer(bundle, flags, st, env);
    try {
      await unmountRootfs(bundle);
    } catch {
      // best effort: containerd removes the bundle next and reports what it could not remove
    }
  }
  const { containerd, google } = await import('../../gen/actions');
  const now = Date.now();
  return Buffer.from(containerd.task.v2.DeleteResponse.encode({
    pid,
    exitStatus: SIGKILL_STATUS,
    exitedAt: google.protobuf.Timestamp.create({ seconds: Long.fromNumber(Math.floor(now / 1000)), nanos: (now % 1000) * 1e6 }),
  }).finish());
}

export async function deleteAction(flags: ShimFlags): Promise<void> {
  process.stdout.write(await deleteOutput(flags, process.cwd()));
}
