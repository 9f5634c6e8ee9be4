// `ctr` against the demo's containerd: argv arrays only (no shell), the address and namespace always
// given, a deadline on every call, and the snapshotter containerd can use passed the way ctr reads it.
import { KybernateError } from '../../errors';
import { validateId } from '../../ids';
import { run } from '../../native/run';
import { SYSTEM_PATH } from './paths';

/** What ctr needs to reach a containerd. */
export interface CtrTarget {
  address: string;
  /** The ctr binary that matches this containerd. */
  ctr: string;
  /** 'overlayfs' unless containerd reported it unusable here; ctr gets it through CONTAINERD_SNAPSHOTTER. */
  snapshotter?: string;
}

export interface CtrResult { code: number; stdout: string; stderr: string }

const CTR_TIMEOUT_MS = 60_000;

/** Runs `ctr --address A --namespace NS args`; never rejects for a non-zero exit (see ctrOk). */
export async function ctr(cd: CtrTarget, namespace: string, args: string[], timeoutMs = CTR_TIMEOUT_MS): Promise<CtrResult> {
  validateId('namespace', namespace);
  const env: Record<string, string> = { PATH: process.env.PATH || SYSTEM_PATH };
  if (cd.snapshotter && cd.snapshotter !== 'overlayfs') env.CONTAINERD_SNAPSHOTTER = cd.snapshotter;
  const r = await run(cd.ctr, ['--address', cd.address, '--namespace', namespace, ...args], { env, timeoutMs });
  const stderr = r.stderr.toString('utf8').trim();
  return {
    code: r.timedOut ? 124 : r.status,
    stdout: r.stdout.toString('utf8'),
    stderr: r.timedOut ? `${stderr}\nkilled after ${timeoutMs} ms`.trim() : stderr,
  };
}

/** Like ctr(), resolved to stdout; a non-zero exit becomes KYB_ERR_RUNTIME with ctr's own message. */
export async function ctrOk(cd: CtrTarget, namespace: string, args: string[], timeoutMs?: number): Promise<string> {
  const r = await ctr(cd, namespace, args, timeoutMs);
  if (r.code !== 0) {
    throw new KybernateError(r.code === 124 ? 'KYB_ERR_DEADLINE' : 'KYB_ERR_RUNTIME',
      `ctr ${args.slice(0, 3).join(' ')} (${cd.address}, namespace ${namespace}) exited ${r.code}: ${r.stderr || r.stdout.trim()}`);
  }
  return r.stdout;
}

/** Non-empty trimmed lines (`ctr ... ls -q`). */
export const lines = (s: string): string[] => s.split('\n').map((l) => l.trim()).filter(Boolean);
