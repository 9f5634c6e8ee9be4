// `kybernate suspend|resume|gpu-status <container>`: GPU suspend in place through the container's shim
// (its kybernate.shim.v1.Control service). Suspend checkpoints the GPU state of the container's CUDA
// processes into host memory and freezes the container; resume thaws it and gives the GPU state back.
import { parseArgs } from 'node:util';
import { StatusError } from '../../errors';
import { kybernate } from '../../gen/proto';
import { validateId } from '../../ids';
import { DEFAULT_NAMESPACE, DEFAULT_STATE_DIR, ShimClient } from '../../shim-client/client';
import { CONTROL_SERVICE as SERVICE } from '../../shim-client/control';
import { fromTimestamp } from '../../timestamp';
import { UsageError } from '../usage-error';

const C = kybernate.shim.v1;
/** Checkpointing a full GPU's memory takes minutes at worst; the default deadline leaves room for that. */
const DEFAULT_TIMEOUT_S = 20 * 60;

const FLAGS = {
  namespace: { type: 'string', short: 'n' },
  'state-dir': { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const;

interface Parsed {
  id: string;
  namespace: string;
  stateDir: string;
  timeoutMs: number;
  json: boolean;
  lockTimeoutMs?: number;
}

function parse(cmd: string, args: string[], extra: boolean): Parsed {
  const { values, positionals } = parseArgs({
    args,
    options: extra ? { ...FLAGS, 'lock-timeout': { type: 'string' } } : FLAGS,
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError(`${cmd}: exactly one container id, got ${positionals.length}`);
  const seconds = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const s = Number(v);
    if (!Number.isFinite(s) || s <= 0) throw new UsageError(`--${flag} must be a positive number of seconds, not ${v}`);
    return Math.round(s * 1000);
  };
  for (const [kind, value] of [['namespace', values.namespace ?? DEFAULT_NAMESPACE], ['container id', positionals[0]]] as const) {
    try {
      validateId(kind, value);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const v = values as { namespace?: string; 'state-dir'?: string; timeout?: string; json?: boolean; 'lock-timeout'?: string };
  return {
    id: positionals[0],
    namespace: v.namespace ?? DEFAULT_NAMESPACE,
    stateDir: v['state-dir'] ?? DEFAULT_STATE_DIR,
    timeoutMs: seconds('timeout', v.timeout) ?? DEFAULT_TIMEOUT_S * 1000,
    json: v.json ?? false,
    lockTimeoutMs: seconds('lock-timeout', v['lock-timeout']),
  };
}

interface StepOut { step: string; pid: number; ms: number }

function stepsOf(steps: kybernate.shim.v1.IStep[] | null | undefined): StepOut[] {
  return (steps ?? []).map((s) => ({ step: s.name ?? '', pid: s.pid ?? 0, ms: s.durationMs ?? 0 }));
}

function table(steps: StepOut[]): string {
  const rows = steps.map((s) => `  ${s.step.padEnd(16)} ${(s.pid === 0 ? '-' : String(s.pid)).padStart(8)} ${s.ms.toFixed(1).padStart(10)} ms`);
  return [`  ${'STEP'.padEnd(16)} ${'PID'.padStart(8)} ${'TIME'.padStart(13)}`, ...rows].join('\n');
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 'es'}`;

/** Connects, runs `fn`, prints its result; an error is exit 1 (as JSON with --json). */
async function withShim(p: Parsed, fn: (s: ShimClient) => Promise<{ json: object; text: string }>): Promise<number> {
  let shim: ShimClient | undefined;
  try {
    shim = await ShimClient.connect(p.stateDir, p.namespace, p.id);
    const out = await fn(shim);
    process.stdout.write(p.json ? `${JSON.stringify({ ok: true, id: p.id, namespace: p.namespace, ...out.json }, null, 2)}\n` : out.text);
    return 0;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (p.json) {
      const code = err instanceof StatusError ? err.status : (err as { code?: unknown }).code;
      process.stdout.write(`${JSON.stringify({ ok: false, id: p.id, namespace: p.namespace, error: msg, code }, null, 2)}\n`);
    } else {
      process.stderr.write(`kybernate: ${msg}\n`);
    }
    return 1;
  } finally {
    shim?.close();
  }
}

export function suspendCommand(args: string[]): Promise<number> {
  const p = parse('suspend', args, true);
  return withShim(p, async (shim) => {
    const r = await shim.request(SERVICE, 'Suspend', C.SuspendRequest, C.SuspendResponse,
      { id: p.id, lockTimeoutMs: p.lockTimeoutMs ?? 0 }, { timeoutMs: p.timeoutMs });
    const steps = stepsOf(r.steps);
    const skipped = (r.skipped ?? []).map((s) => ({ pid: s.pid ?? 0, reason: s.reason ?? '' }));
    return {
      json: { pids: r.pids ?? [], steps, skipped, durationMs: r.durationMs ?? 0 },
      text: `suspended container ${p.id}: GPU state of ${plural(r.pids?.length ?? 0, 'process')} (${(r.pids ?? []).join(', ')}) ` +
        `in host memory, container frozen (${(r.durationMs ?? 0).toFixed(1)} ms)\n${table(steps)}\n`,
    };
  });
}

export function resumeCommand(args: string[]): Promise<number> {
  const p = parse('resume', args, false);
  return withShim(p, async (shim) => {
    const r = await shim.request(SERVICE, 'Resume', C.ResumeRequest, C.ResumeResponse, { id: p.id }, { timeoutMs: p.timeoutMs });
    const steps = stepsOf(r.steps);
    return {
      json: { pids: r.pids ?? [], steps, durationMs: r.durationMs ?? 0 },
      text: `resumed container ${p.id}: GPU state of ${plural(r.pids?.length ?? 0, 'process')} (${(r.pids ?? []).join(', ')}) ` +
        `back on the GPU (${(r.durationMs ?? 0).toFixed(1)} ms)\n${table(steps)}\n`,
    };
  });
}

export function gpuStatusCommand(args: string[]): Promise<number> {
  const p = parse('gpu-status', args, false);
  return withShim(p, async (shim) => {
    const r = await shim.request(SERVICE, 'Status', C.StatusRequest, C.StatusResponse, { id: p.id }, { timeoutMs: p.timeoutMs });
    const at = r.suspended ? fromTimestamp(r.suspendedAt)?.toISOString() : undefined;
    const pids = r.cudaPids ?? [];
    return {
      json: { suspended: r.suspended ?? false, suspendedAt: at ?? null, cudaPids: pids, taskStatus: r.taskStatus ?? '' },
      text: r.suspended
        ? `container ${p.id}: suspended since ${at} (CUDA pids ${pids.join(', ')}; task ${r.taskStatus})\n`
        : `container ${p.id}: not suspended (task ${r.taskStatus})\n`,
    };
  });
}
