// Suspend and Resume of a workload: GPU suspend in place, done by the workload's shim (its Control
// service, found through containerd's state directory). The agent checks that there is a task to talk to,
// records the device memory the suspend moved off the GPU (as the shim measured it, SuspendResponse's
// device_memory_bytes), and turns the shim's steps into OpSteps.
import Long from 'long';
import { kybernate } from '../gen/proto';
import { ShimClient } from '../shim-client/client';
import { CONTROL_SERVICE } from '../shim-client/control';
import type { AgentContext, OpRequest, OpResult, OpStep } from './context';

const C = kybernate.shim.v1;
/** Checkpointing a full GPU's memory takes minutes at worst (the CLI allows the same). */
const SHIM_TIMEOUT_MS = 20 * 60 * 1000;

export interface SuspendRequest extends OpRequest {
  /** cuCheckpointProcessLock timeout per process; undefined = the shim's default. */
  lockTimeoutMs?: number;
}

export async function suspendWorkload(ctx: AgentContext, req: SuspendRequest): Promise<OpResult> {
  await withTask(ctx, req, 'suspend');
  const r = await callShim(ctx, req, (shim) => shim.request(CONTROL_SERVICE, 'Suspend', C.SuspendRequest, C.SuspendResponse,
    { id: req.id, lockTimeoutMs: req.lockTimeoutMs ?? 0 }, { timeoutMs: SHIM_TIMEOUT_MS, signal: req.signal }));
  // Every suspended CUDA process gave its device memory back: what the shim measured while they were locked
  // (the moment they held it all) is what was freed. No nvidia-smi of our own before the call.
  const freed = Long.fromValue(r.deviceMemoryBytes ?? 0).toNumber();
  ctx.workloads.rememberSaved(req.namespace, req.id, freed);
  ctx.metrics.gpuMemoryFreed('suspend', freed);
  return { steps: steps(ctx, req, 'suspend', r.steps), durationMs: r.durationMs ?? 0, cudaPids: r.pids ?? [] };
}

export async function resumeWorkload(ctx: AgentContext, req: OpRequest): Promise<OpResult> {
  await withTask(ctx, req, 'resume');
  const r = await callShim(ctx, req, (shim) => shim.request(CONTROL_SERVICE, 'Resume', C.ResumeRequest, C.ResumeResponse,
    { id: req.id }, { timeoutMs: SHIM_TIMEOUT_MS, signal: req.signal }));
  ctx.workloads.rememberSaved(req.namespace, req.id, 0);
  return { steps: steps(ctx, req, 'resume', r.steps), durationMs: r.durationMs ?? 0, cudaPids: r.pids ?? [] };
}

/** NOT_FOUND unless it is a Kybernate container; FAILED_PRECONDITION without a live task (workloads.ts). */
async function withTask(ctx: AgentContext, req: OpRequest, what: string): Promise<void> {
  await ctx.workloads.requireTask(req.namespace, req.id, what, { signal: req.signal });
}

async function callShim<T>(ctx: AgentContext, req: OpRequest, fn: (shim: ShimClient) => Promise<T>): Promise<T> {
  const shim = await ShimClient.shared(ctx.containerdState, req.namespace, req.id);
  try {
    return await fn(shim);
  } finally {
    shim.close();
  }
}

/** The shim's steps as OpSteps (a per-process step is named step:pid), each published as progress. */
function steps(ctx: AgentContext, req: OpRequest, operation: string, shimSteps: kybernate.shim.v1.IStep[] | null | undefined): OpStep[] {
  const out = (shimSteps ?? []).map((s) => ({ name: s.pid ? `${s.name ?? ''}:${s.pid}` : s.name ?? '', durationMs: s.durationMs ?? 0 }));
  for (const s of out) ctx.events.progress(req.namespace, req.id, operation, s);
  return out;
}
