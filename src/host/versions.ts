// The node's tools: where they are, which versions they report, and how checkpoints compare versions.
// Every command runs through native/run (see facts.ts for why never child_process).
import fs from 'node:fs';
import path from 'node:path';
import { run } from '../native/run';
import { kernelRelease } from './kernel';

/** Runs a binary with arguments and resolves with its stdout; rejects when it cannot run or fails. */
export type BinaryRunner = (file: string, args: string[]) => Promise<string>;

const VERSION_TIMEOUT_MS = 5000;
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin'];

/** What a command printed (stdout then stderr, trimmed), or why it failed; `ok` is exit status 0. */
export async function commandOutput(file: string, args: string[], timeoutMs = 30_000): Promise<{ ok: boolean; text: string }> {
  try {
    const r = await run(file, args, { timeoutMs });
    const text = `${r.stdout.toString()}${r.stderr.toString()}`.trim();
    if (r.timedOut) return { ok: false, text: `${file} ${args.join(' ')} timed out after ${timeoutMs} ms${text ? `: ${text}` : ''}` };
    if (r.status !== 0) return { ok: false, text: text || `${file} exited with status ${r.status}` };
    return { ok: true, text };
  } catch (err) {
    return { ok: false, text: (err as Error).message };
  }
}

/** The default runner: native/run (the reaper in the shim, child_process in a one-shot CLI). */
export const defaultRunner: BinaryRunner = async (file, args) => {
  const r = await run(file, args, { timeoutMs: VERSION_TIMEOUT_MS });
  if (r.status !== 0) throw new Error(`${file} ${r.timedOut ? 'timed out' : `exited with status ${r.status}`}: ${r.stderr.toString().trim()}`);
  return r.stdout.toString();
};

/** The first executable `name` on PATH, then in the sbin/bin directories (root's tools live there). */
export function which(name: string): string | undefined {
  for (const d of [...(process.env.PATH ?? '').split(':'), ...SBIN]) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

export type Tool = 'criu' | 'runc' | 'containerd';

/**
 * `<tool> --version`'s version: criu prints "Version: 4.1.1" (and a GitID line on git builds); runc
 * "runc version 1.1.5" (distributions append a suffix, "1.1.5+ds1", which is kept); containerd
 * "containerd github.com/containerd/containerd/v2 v2.1.4 <commit>".
 */
const VERSION_PATTERN: Record<Tool, RegExp> = {
  criu: /^Version:\s*(\S+)/m,
  runc: /^runc version\s+(\S+)/m,
  containerd: /\bv?(\d+\.\d+\.\d+\S*)/,
};

/** The one `--version` probe: the version, and the output (or the failure) it came from. */
export async function toolVersion(tool: Tool, binary: string = tool): Promise<{ ok: boolean; version?: string; text: string }> {
  const r = await commandOutput(binary, ['--version'], VERSION_TIMEOUT_MS);
  const version = r.ok ? VERSION_PATTERN[tool].exec(r.text)?.[1] : undefined;
  return version === undefined ? r : { ...r, version };
}

/**
 * Kernel release, and the CRIU and runc versions of this node. A binary that is missing (or fails, or
 * prints something else) gives undefined: the caller decides whether that version is needed. `runner`
 * replaces the command runner (tests feed it canned output).
 */
export async function nodeVersions(
  runner?: BinaryRunner,
  runcBinary = 'runc',
): Promise<{ kernel: string; criu?: string; runc?: string }> {
  const probe = async (tool: Tool, binary: string): Promise<string | undefined> => {
    if (runner === undefined) return (await toolVersion(tool, binary)).version;
    try {
      return VERSION_PATTERN[tool].exec(await runner(binary, ['--version']))?.[1];
    } catch {
      return undefined;
    }
  };
  const [criu, runc] = await Promise.all([probe('criu', 'criu'), probe('runc', runcBinary)]);
  return { kernel: kernelRelease(), criu, runc };
}

/**
 * The CRIU the addon drives (KYBERNATE_CRIU, else the first criu on PATH or in the sbin directories) and
 * libcriu's answer for its version (40101 for 4.1.1). runc finds its own criu on PATH: nodeVersions'
 * `criu --version` is that one.
 */
export async function libcriuVersion(): Promise<{ binary?: string; version: number; formatted: string }> {
  const criu = await import('../native/criu');
  const version = await criu.version();
  return { binary: criu.criuBinary(), version, formatted: criu.formatVersion(version) };
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
