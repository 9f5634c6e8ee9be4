// Where a process's cgroups live on this host: the cgroup mounts (from mountinfo) and the
// process's membership (from /proc/<pid>/cgroup), joined into absolute directories.
//
// Both files are read from our own mount and cgroup namespace, so both express paths relative
// to the same root; a mount whose root is a sub-cgroup (a bind mount inside a container) covers
// only paths below that root.
import * as fs from 'node:fs';
import * as path from 'node:path';

export type CgroupMode = 'v1' | 'v2' | 'hybrid';

export interface CgroupMount {
  /** Absolute mount point. */
  mountPoint: string;
  /** The cgroup the mount shows at its mount point, e.g. "/" for a whole hierarchy. */
  root: string;
  version: 1 | 2;
  /** v1: the controllers bound to this hierarchy, e.g. ["cpu", "cpuacct"]; v2: []. */
  controllers: string[];
}

export interface ProcessCgroups {
  /** v1 controller name (also "name=systemd") → absolute cgroup directory. */
  v1: Map<string, string>;
  /** Absolute unified-hierarchy directory, when a cgroup2 mount covers the process. */
  unified?: string;
}

const CGROUP2_SUPER_MAGIC = 0x63677270;
const V1_OPTIONS = new Set(['rw', 'ro', 'relatime', 'noatime', 'nosuid', 'nodev', 'noexec', 'clone_children', 'xattr']);

/** mountinfo escapes space, tab, newline and backslash as octal sequences. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountinfo(text: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    const fsType = post[0];
    if (fsType !== 'cgroup' && fsType !== 'cgroup2') continue;
    const root = unescapeMountField(pre[3] ?? '/');
    const mountPoint = unescapeMountField(pre[4] ?? '');
    if (fsType === 'cgroup2') {
      mounts.push({ mountPoint, root, version: 2, controllers: [] });
      continue;
    }
    // Super options list the hierarchy's controllers among generic flags.
    const controllers = (post[2] ?? '')
      .split(',')
      .filter((o) => o !== '' && !V1_OPTIONS.has(o) && !o.startsWith('release_agent='));
    mounts.push({ mountPoint, root, version: 1, controllers });
  }
  return mounts;
}

export function readMounts(): CgroupMount[] {
  return parseMountinfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** Lines "hierarchy-id:controller,list:/path"; the unified hierarchy has id 0 and no controllers. */
export function parseProcCgroup(text: string): { v1: Map<string, string>; unified?: string } {
  const v1 = new Map<string, string>();
  let unified: string | undefined;
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const id = line.slice(0, first);
    const controllers = line.slice(first + 1, second);
    const cgPath = line.slice(second + 1);
    if (id === '0' && controllers === '') {
      unified = cgPath;
      continue;
    }
    for (const c of controllers.split(',')) if (c !== '') v1.set(c, cgPath);
  }
  return { v1, unified };
}

/**
 * Maps a cgroup path (namespace-relative) onto a mount; undefined when the mount's root does
 * not contain it. A "/.." prefix in /proc/<pid>/cgroup (process outside our cgroup namespace)
 * is not reachable through our mounts either.
 */
export function resolveUnder(mount: CgroupMount, cgPath: string): string | undefined {
  if (cgPath.startsWith('/..')) return undefined;
  const root = mount.root === '/' ? '' : mount.root.replace(/\/+$/, '');
  if (root !== '' && cgPath !== root && !cgPath.startsWith(root + '/')) return undefined;
  return path.join(mount.mountPoint, cgPath.slice(root.length));
}

export function processCgroups(pid: number | 'self', mounts: CgroupMount[] = readMounts()): ProcessCgroups {
  const membership = parseProcCgroup(fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
  const v1 = new Map<string, string>();
  for (const [controller, cgPath] of membership.v1) {
    // Several mounts of one hierarchy are equivalent; the first one that covers the path wins.
    for (const m of mounts) {
      if (m.version !== 1 || !m.controllers.includes(controller)) continue;
      const dir = resolveUnder(m, cgPath);
      if (dir !== undefined) {
        v1.set(controller, dir);
        break;
      }
    }
  }
  let unified: string | undefined;
  if (membership.unified !== undefined) {
    for (const m of mounts) {
      if (m.version !== 2) continue;
      unified = resolveUnder(m, membership.unified);
      if (unified !== undefined) break;
    }
  }
  return { v1, unified };
}

/**
 * v2 when /sys/fs/cgroup itself is cgroup2 (or only cgroup2 is mounted), hybrid when both
 * kinds carry something, v1 otherwise. A named-only v1 hierarchy (name=systemd) does not make a
 * unified host hybrid.
 */
export function cgroupMode(mounts?: CgroupMount[]): CgroupMode {
  if (mounts === undefined) {
    try {
      if (fs.statfsSync('/sys/fs/cgroup').type === CGROUP2_SUPER_MAGIC) return 'v2';
    } catch {
      // No /sys/fs/cgroup: decide from mountinfo alone.
    }
    mounts = readMounts();
  }
  const hasV2 = mounts.some((m) => m.version === 2);
  const hasV1Controllers = mounts.some((m) => m.version === 1 && m.controllers.some((c) => !c.startsWith('name=')));
  if (hasV2 && !hasV1Controllers) return 'v2';
  if (hasV2) return 'hybrid';
  return 'v1';
}

/** Controllers enabled in the unified hierarchy at a directory (cgroup.controllers). */
export function unifiedControllers(dir: string): string[] {
  try {
    return fs.readFileSync(path.join(dir, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}
