// Facts about this node's kernel that checkpoints depend on: its release, the cgroup layout, transparent
// hugepages, the vDSO and userfaultfd. Each is read from /proc or /sys here and nowhere else.
import fs from 'node:fs';
import os from 'node:os';

/** uname -r: what a manifest records and a restore compares. */
export function kernelRelease(): string {
  return os.release();
}

const CGROUP2_SUPER_MAGIC = 0x63677270;

/**
 * 'v2' (unified), 'hybrid' (v1 + v2 at /sys/fs/cgroup/unified) or 'v1', by the filesystem type of the
 * mounts. (src/shim/cgroups/hierarchy.ts decides from mountinfo for the shim's cgroup handling.)
 */
export function cgroupMode(): 'v1' | 'v2' | 'hybrid' {
  if (fs.statfsSync('/sys/fs/cgroup').type === CGROUP2_SUPER_MAGIC) return 'v2';
  try {
    if (fs.statfsSync('/sys/fs/cgroup/unified').type === CGROUP2_SUPER_MAGIC) return 'hybrid';
  } catch {
    // no unified mount
  }
  return 'v1';
}

/** The transparent hugepage mode in force ('always', 'madvise', 'never'), 'unknown' without THP. */
export function transparentHugepages(): string {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Whether this process has a vDSO mapped (CRIU proxifies it on restore). */
export function vdsoMapped(): boolean {
  return fs.readFileSync('/proc/self/maps', 'utf8').includes('[vdso]');
}

/** Whether the kernel has userfaultfd: its sysctl exists only with CONFIG_USERFAULTFD. */
export function userfaultfdBuilt(): boolean {
  return fs.existsSync('/proc/sys/vm/unprivileged_userfaultfd');
}
