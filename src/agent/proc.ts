// What the agent reads about a workload's processes from /proc (the host's, with hostPID in a DaemonSet):
// when a process started, and which cgroup it is in.
import fs from 'node:fs';

/** USER_HZ: the unit of /proc/<pid>/stat's times; 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_S = 100;

let bootTimeMs: number | undefined;

function bootTime(): number | undefined {
  if (bootTimeMs === undefined) {
    const btime = /^btime\s+(\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))?.[1];
    if (btime !== undefined) bootTimeMs = Number(btime) * 1000;
  }
  return bootTimeMs;
}

/** When `pid` started (from its start time in clock ticks after boot); undefined when it is gone. */
export function processStartTime(pid: number): Date | undefined {
  if (pid <= 0) return undefined;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: the fields after it start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]); // field 22, starttime
    const boot = bootTime();
    if (!Number.isFinite(ticks) || boot === undefined) return undefined;
    return new Date(boot + (ticks * 1000) / CLOCK_TICKS_PER_S);
  } catch {
    return undefined;
  }
}

/**
 * The cgroup membership of `pid` as the kernel shows it (/proc/<pid>/cgroup, whole): two processes of one
 * container have the same text, without the agent needing the cgroup filesystem's mount or layout.
 */
export function cgroupOf(pid: number): string | undefined {
  if (pid <= 0) return undefined;
  try {
    return fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
}
