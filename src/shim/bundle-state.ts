// What the daemon records in a container's bundle so that the one-shot `delete` action (which runs after
// the daemon may have died) can clean up exactly that container.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface BundleState {
  /** runc state root, e.g. /run/containerd/runc/<namespace>. */
  runcRoot: string;
  /** runc binary (name or path). */
  runcBinary: string;
  systemdCgroup: boolean;
  /** Set once the daemon deleted the container and unmounted its rootfs: `delete` has nothing left to do. */
  deleted?: boolean;
}

const FILE = 'kybernate.json';
export const INIT_PID_FILE = 'init.pid';

export function writeBundleState(bundle: string, state: BundleState): void {
  fs.writeFileSync(path.join(bundle, FILE), JSON.stringify(state), { mode: 0o600 });
}

export function readBundleState(bundle: string): BundleState | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(bundle, FILE), 'utf8')) as BundleState;
  } catch {
    return undefined;
  }
}

export function markDeleted(bundle: string): void {
  const st = readBundleState(bundle);
  if (st) writeBundleState(bundle, { ...st, deleted: true });
}

export function readInitPid(bundle: string): number {
  try {
    return Number.parseInt(fs.readFileSync(path.join(bundle, INIT_PID_FILE), 'utf8'), 10) || 0;
  } catch {
    return 0;
  }
}

export function defaultRuncRoot(namespace: string): string {
  return path.join('/run/containerd/runc', namespace);
}
