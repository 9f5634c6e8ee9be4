// `kybernate suspend|resume|gpu-status` through the node agent: the same output (text and --json) as the
// direct path in suspend.ts, plus the agent's socket in the JSON, and exit code 3 when no agent answers.
// agentOperation() also runs checkpoint and restore (checkpoint.ts).
import { num } from './ps';
import type { AgentClient } from '../../agent-api/client';
import type { ResponseOf } from '../../agent-api/definition';
import { kybernate } from '../../gen/proto';
import { fromTimestamp } from '../../timestamp';
import { reportFailure, withAgent } from '../agent-target';
import { EXIT } from '../exit-codes';
import { plural, progressLine, splitStep, stepTable, type StepOut } from '../format';

const State = kybernate.agent.v1.WorkloadState;

export interface AgentOp {
  socket: string;
  id: string;
  namespace: string;
  json: boolean;
  timeoutMs: number;
  lockTimeoutMs?: number;
}

type Out = { json: object; text: string };

/**
 * One operation on p.id through the agent: a progress line on a terminal while it runs (not with --json),
 * then its text or JSON on stdout; a failure as reportFailure prints it (exit 1, or 3 without an agent).
 */
export async function agentOperation(p: AgentOp, label: string, fn: (agent: AgentClient) => Promise<Out>): Promise<number> {
  const stop = p.json ? () => {} : progressLine(label);
  try {
    const out = await withAgent(p.socket, fn);
    stop();
    process.stdout.write(p.json ? `${JSON.stringify({ ok: true, id: p.id, namespace: p.namespace, agent: p.socket, ...out.json }, null, 2)}\n` : out.text);
    return EXIT.OK;
  } catch (err) {
    stop();
    return reportFailure(err, p.json, { id: p.id, namespace: p.namespace, agent: p.socket });
  }
}

/** The steps of an operation's result as the step table shows them. */
export function stepsOf(r: ResponseOf<'Suspend'>): StepOut[] {
  return (r.steps ?? []).map((s) => {
    const out = splitStep(s.name ?? '', s.durationMs ?? 0);
    const moved = num(s.bytes);
    return moved > 0 ? { ...out, bytes: moved } : out;
  });
}

function result(r: ResponseOf<'Suspend'>): { pids: number[]; steps: StepOut[]; durationMs: number } {
  return {
    pids: r.cudaPids ?? [],
    steps: stepsOf(r),
    durationMs: r.durationMs ?? 0,
  };
}

export function suspendViaAgent(p: AgentOp): Promise<number> {
  return agentOperation(p, `suspending ${p.id}`, async (agent) => {
    const r = result(await agent.suspend({ namespace: p.namespace, id: p.id, lockTimeoutMs: p.lockTimeoutMs ?? 0 },
      { timeoutMs: p.timeoutMs }));
    return {
      json: r,
      text: `suspended container ${p.id}: GPU state of ${plural(r.pids.length, 'process')} (${r.pids.join(', ')}) ` +
        `in host memory, container frozen (${r.durationMs.toFixed(1)} ms)\n${stepTable(r.steps)}\n`,
    };
  });
}

export function resumeViaAgent(p: AgentOp): Promise<number> {
  return agentOperation(p, `resuming ${p.id}`, async (agent) => {
    const r = result(await agent.resume({ namespace: p.namespace, id: p.id }, { timeoutMs: p.timeoutMs }));
    return {
      json: r,
      text: `resumed container ${p.id}: GPU state of ${plural(r.pids.length, 'process')} (${r.pids.join(', ')}) ` +
        `back on the GPU (${r.durationMs.toFixed(1)} ms)\n${stepTable(r.steps)}\n`,
    };
  });
}

export function gpuStatusViaAgent(p: AgentOp): Promise<number> {
  return agentOperation(p, `asking about ${p.id}`, async (agent) => {
    const w = await agent.get({ namespace: p.namespace, id: p.id }, { timeoutMs: p.timeoutMs });
    const suspended = w.state === State.SUSPENDED;
    const at = suspended ? fromTimestamp(w.since)?.toISOString() : undefined;
    const pids = w.cudaPids ?? [];
    const task = w.taskStatus || 'none';
    return {
      json: { suspended, suspendedAt: at ?? null, cudaPids: pids, taskStatus: w.taskStatus ?? '' },
      text: suspended
        ? `container ${p.id}: suspended since ${at} (CUDA pids ${pids.join(', ')}; task ${task})\n`
        : `container ${p.id}: not suspended (task ${task})\n`,
    };
  });
}
