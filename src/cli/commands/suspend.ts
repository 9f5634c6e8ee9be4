// `kybernate suspend|resume|gpu-status <container>`: GPU suspend in place. Suspend checkpoints the GPU state
// of the container's CUDA processes into host memory and freezes the container; resume thaws it and gives
// the GPU state back. Through the node agent when there is one (agent-ops.ts; agent-target.ts says when),
// else straight through the container's shim (its kybernate.shim.v1.Control service), as here.
import { parseArgs } from 'node:util';
import { StatusError } from '../../errors';
import { kybernate } from '../../gen/proto';
import { DEFAULT_NAMESPACE, DEFAULT_STATE_DIR, ShimClient } from '../../shim-client/client';
import { CONTROL_SERVICE as SERVICE } from '../../shim-client/control';
import { fromTimestamp } from '../../timestamp';
import { pickTarget } from '../agent-target';
import { checkId, seconds } from '../args';
import { EXIT } from '../exit-codes';
import { plural, stepTable as table, type StepOut } from '../format';
import { UsageError } from '../usage-error';
import { gpuStatusViaAgent, resumeViaAgent, suspendViaAgent, type AgentOp } from './agent-ops';

const C = kybernate.shim.v1;
/** Checkpointing a full GPU's memory takes minutes at worst; the default deadline leaves room for that. */
const DEFAULT_TIMEOUT_S = 20 * 60;

const FLAGS = {
  namespace: { type: 'string', short: 'n' },
  'state-dir': { type: 'string' },
  agent: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const;

interface Parsed {
  id: string;
  namespace: string;
  stateDir: string;
  /** The agent's socket when the command goes through the agent. */
  agent?: string;
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
  checkId('namespace', values.namespace ?? DEFAULT_NAMESPACE);
  checkId('container id', positionals[0]);
  const v = values as { namespace?: string; 'state-dir'?: string; agent?: string; timeout?: string; json?: boolean; 'lock-timeout'?: string };
  if (v.agent !== undefined && v['state-dir'] !== undefined) throw new UsageError(`${cmd}: --agent and --state-dir exclude each other`);
  const target = pickTarget({ agent: v.agent, stateDir: v['state-dir'] });
  return {
    id: positionals[0],
    agent: target.kind === 'agent' ? target.socket : undefined,
    namespace: v.namespace ?? DEFAULT_NAMESPACE,
    stateDir: v['state-dir'] ?? DEFAULT_STATE_DIR,
    timeoutMs: seconds('timeout', v.timeout) ?? DEFAULT_TIMEOUT_S * 1000,
    json: v.json ?? false,
    lockTimeoutMs: seconds('lock-timeout', v['lock-timeout']),
  };
}

function stepsOf(steps: kybernate.shim.v1.IStep[] | null | undefined): StepOut[] {
  return (steps ?? []).map((s) => ({ step: s.name ?? '', pid: s.pid ?? 0, ms: s.durationMs ?? 0 }));
}

/** Connects, runs `fn`, prints its result; an error is exit 1 (as JSON with --json). */
async function withShim(p: Parsed, fn: (s: ShimClient) => Promise<{ json: object; text: string }>): Promise<number> {
  let shim: ShimClient | undefined;
  try {
    shim = await ShimClient.connect(p.stateDir, p.namespace, p.id);
    const out = await fn(shim);
    process.stdout.write(p.json ? `${JSON.stringify({ ok: true, id: p.id, namespace: p.namespace, ...out.json }, null, 2)}\n` : out.text);
    return EXIT.OK;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (p.json) {
      const code = err instanceof StatusError ? err.status : (err as { code?: unknown }).code;
      process.stdout.write(`${JSON.stringify({ ok: false, id: p.id, namespace: p.namespace, error: msg, code }, null, 2)}\n`);
    } else {
      process.stderr.write(`kybernate: ${msg}\n`);
    }
    return EXIT.FAILED;
  } finally {
    shim?.close();
  }
}

/** The parsed command line as an agent call, when it goes through the agent. */
function viaAgent(p: Parsed): AgentOp | undefined {
  return p.agent === undefined ? undefined : { ...p, socket: p.agent };
}

export function suspendCommand(args: string[]): Promise<number> {
  const p = parse('suspend', args, true);
  const a = viaAgent(p);
  if (a) return suspendViaAgent(a);
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
  const a = viaAgent(p);
  if (a) return resumeViaAgent(a);
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
  const a = viaAgent(p);
  if (a) return gpuStatusViaAgent(a);
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
