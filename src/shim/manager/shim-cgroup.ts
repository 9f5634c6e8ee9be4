// ShimCgroup (containerd.runc.v1.Options.shim_cgroup, or the legacy containerd.linux.runc.CreateOptions
// field of 1.6/1.7 clients): `start` moves the daemon it launches into that cgroup, as containerd's runc
// shim manager does (cgroup v2: the unified hierarchy; v1: every hierarchy the cgroup exists in).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KybernateError } from '../../errors';

const CGROUP_ROOT = '/sys/fs/cgroup';
const CGROUP2_SUPER_MAGIC = 0x63677270;
/** The option types that can carry a shim cgroup; others are not decoded here. */
const SHIM_CGROUP_TYPES = new Set(['containerd.runc.v1.Options', 'containerd.linux.runc.CreateOptions']);

/**
 * The shim cgroup named by runtime options (an Any), or undefined. Undecodable options are ignored here,
 * as containerd's runc shim ignores them in `start`: the Create that follows rejects them with a clear error.
 */
export async function shimCgroupOf(any: { typeUrl: string; value: Uint8Array } | undefined, namespace: string): Promise<string | undefined> {
  if (!any || !SHIM_CGROUP_TYPES.has(any.typeUrl.slice(any.typeUrl.lastIndexOf('/') + 1))) return undefined;
  // Loaded only for these types: the full message module is not needed by every start.
  const { parseRuntimeOptions } = await import('../options');
  try {
    return parseRuntimeOptions({ type_url: any.typeUrl, value: any.value }, namespace).shimCgroup;
  } catch {
    return undefined;
  }
}

/** v1 cgroup mount points (fstype "cgroup") from /proc/self/mountinfo. */
function v1Mounts(): string[] {
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    if (line.slice(sep + 3).split(' ')[0] === 'cgroup') out.push(line.split(' ')[4]!.replace(/\\040/g, ' '));
  }
  return out;
}

function addProc(dir: string, pid: number, cgroup: string): void {
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
  } catch (err) {
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `failed to join shim cgroup ${cgroup} (${dir}): ${(err as Error).message}`, { cause: err });
  }
}

/** Moves `pid` into `cgroup`, an absolute cgroup path such as "/kubepods/shims". */
export function joinCgroup(pid: number, cgroup: string): void {
  if (!cgroup.startsWith('/') || cgroup.split('/').includes('..')) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid shim cgroup ${JSON.stringify(cgroup)}: must be an absolute cgroup path without ".."`);
  }
  if (fs.statfsSync(CGROUP_ROOT).type === CGROUP2_SUPER_MAGIC) {
    addProc(path.join(CGROUP_ROOT, cgroup), pid, cgroup);
    return;
  }
  // v1 (or hybrid, whose v2 part containerd's cgroup1 leaves alone): every hierarchy that has the cgroup.
  const dirs = v1Mounts().map((m) => path.join(m, cgroup)).filter((d) => fs.existsSync(d));
  if (dirs.length === 0) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `shim cgroup ${cgroup} exists in no cgroup v1 hierarchy`);
  for (const d of dirs) addProc(d, pid, cgroup);
}
