// Versions of the node's checkpoint tools, and how checkpoints compare them.
import os from 'node:os';
import { execFile } from 'node:child_process';

/** Runs a binary with arguments and resolves with its stdout. */
export type BinaryRunner = (file: string, args: string[]) => Promise<string>;

const VERSION_TIMEOUT_MS = 5000;

/**
 * The default runner. Not usable inside the shim daemon: its native reaper collects every child with
 * waitid, so child_process never sees the exit; the shim passes its own runner instead.
 */
export const execFileRunner: BinaryRunner = (file, args) =>
  new Promise((resolve, reject) => {
    execFile(file, args, { timeout: VERSION_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout) => {
      if (err) reject(err);
      else resolve(stdout);
    });
  });

/**
 * Kernel release, and the CRIU and runc versions of this node. A binary that is missing (or fails, or
 * prints something else) gives undefined: the caller decides whether that version is needed.
 */
export async function nodeVersions(
  run: BinaryRunner = execFileRunner,
  runcBinary = 'runc',
): Promise<{ kernel: string; criu?: string; runc?: string }> {
  const probe = async (file: string, pattern: RegExp) => {
    try {
      return pattern.exec(await run(file, ['--version']))?.[1];
    } catch {
      return undefined;
    }
  };
  // `criu --version`: "Version: 4.1.1" (and a GitID line on git builds);
  // `runc --version`: "runc version 1.1.5" (distributions append a suffix, "1.1.5+ds1", which is kept).
  const [criu, runc] = await Promise.all([
    probe('criu', /^Version:\s*(\S+)/m),
    probe(runcBinary, /^runc version\s+(\S+)/m),
  ]);
  return { kernel: os.release(), criu, runc };
}

/** major.minor.patch of the first dotted number in `v` (missing parts are 0); undefined if none. */
export function parseVersion(v: string): [number, number, number] | undefined {
  const m = /(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(v);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

/** Negative, zero or positive as a < b, a = b, a > b by major.minor.patch; undefined if either has no number. */
export function compareVersions(a: string, b: string): number | undefined {
  const pa = parseVersion(a);
  const pb = parseVersion(b);
  if (!pa || !pb) return undefined;
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
  return 0;
}

/**
 * The number before the first '.': the NVIDIA driver branch ("580" of "580.159.04"), or the whole of a
 * numeric driver API version ("12080"). Both sides of a comparison come from the same caller, so the two
 * forms never meet.
 */
export function majorOf(v: string): string {
  return v.trim().split('.')[0];
}
