// Readers for the text formats of cgroup interface files. Values are unsigned 64-bit and are
// kept as Long: limits such as 2^63-4096 ("unlimited" in v1) do not fit a double.
//
// A missing file (controller absent, root cgroup, older kernel) reads as undefined; the cgroup
// disappearing while we read (ENOENT/ENODEV on a file that was just listed) does too, so a
// metrics call racing a container exit degrades to partial data instead of throwing.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import Long from 'long';

export const MAX_U64 = Long.MAX_UNSIGNED_VALUE;

const GONE = new Set(['ENOENT', 'ENODEV', 'ENOTDIR', 'ESRCH', 'EINVAL', 'EOPNOTSUPP']);

export function isGone(err: unknown): boolean {
  return typeof err === 'object' && err !== null && GONE.has((err as NodeJS.ErrnoException).code ?? '');
}

export async function readText(dir: string, file: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(path.join(dir, file), 'utf8');
  } catch (err) {
    if (isGone(err)) return undefined;
    throw err;
  }
}

/** Parses a decimal u64; "max" maps to `maxValue` (v2 limit files). Garbage yields undefined. */
export function parseU64(s: string, maxValue: Long = MAX_U64): Long | undefined {
  const t = s.trim();
  if (t === 'max') return maxValue;
  if (!/^\d+$/.test(t)) {
    // Some v1 counters are signed (e.g. -1 for "unset"); clamp negatives to 0.
    return /^-\d+$/.test(t) ? Long.UZERO : undefined;
  }
  return Long.fromString(t, true);
}

export async function readU64(dir: string, file: string, maxValue?: Long): Promise<Long | undefined> {
  const text = await readText(dir, file);
  return text === undefined ? undefined : parseU64(text, maxValue);
}

/** "key value" per line (memory.stat, cpu.stat, memory.events, oom_control). */
export function parseFlatKeyed(text: string): Map<string, Long> {
  const out = new Map<string, Long>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (!key || value === undefined) continue;
    const v = parseU64(value);
    if (v !== undefined) out.set(key, v);
  }
  return out;
}

export async function readFlatKeyed(dir: string, file: string): Promise<Map<string, Long> | undefined> {
  const text = await readText(dir, file);
  return text === undefined ? undefined : parseFlatKeyed(text);
}

/** "head k=v k=v" per line (io.stat, rdma.current): head → (key → raw value). */
export function parseNestedKeyed(text: string): Array<{ head: string; values: Map<string, string> }> {
  const out: Array<{ head: string; values: Map<string, string> }> = [];
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    const head = parts[0];
    if (!head) continue;
    const values = new Map<string, string>();
    for (const kv of parts.slice(1)) {
      const eq = kv.indexOf('=');
      if (eq > 0) values.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
    out.push({ head, values });
  }
  return out;
}

export interface PsiLine {
  avg10: number;
  avg60: number;
  avg300: number;
  total: Long;
}

/** *.pressure: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and an optional "full" line. */
export function parsePressure(text: string): { some?: PsiLine; full?: PsiLine } {
  const out: { some?: PsiLine; full?: PsiLine } = {};
  for (const { head, values } of parseNestedKeyed(text)) {
    if (head !== 'some' && head !== 'full') continue;
    out[head] = {
      avg10: Number(values.get('avg10') ?? 0),
      avg60: Number(values.get('avg60') ?? 0),
      avg300: Number(values.get('avg300') ?? 0),
      total: parseU64(values.get('total') ?? '0') ?? Long.UZERO,
    };
  }
  return out;
}

/** Page sizes offered by hugetlb.<size>.* files in a cgroup directory, e.g. ["2MB", "1GB"]. */
export async function hugePageSizes(dir: string, suffix: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if (isGone(err)) return [];
    throw err;
  }
  const sizes = new Set<string>();
  for (const n of names) {
    const m = /^hugetlb\.([^.]+)\.(.+)$/.exec(n);
    if (m && m[2] === suffix) sizes.add(m[1] as string);
  }
  return [...sizes].sort();
}

/** Block device name for major:minor ("/dev/sda"), or "" when sysfs does not know it. */
export async function blockDeviceName(major: number, minor: number): Promise<string> {
  const uevent = await readText(`/sys/dev/block/${major}:${minor}`, 'uevent').catch(() => undefined);
  const m = uevent === undefined ? null : /^DEVNAME=(.+)$/m.exec(uevent);
  return m ? `/dev/${m[1]}` : '';
}
