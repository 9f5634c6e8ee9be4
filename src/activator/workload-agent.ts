// What the activator asks of the node agent, for one workload at a time: its state, and the four operations
// that put it to sleep and wake it. Every operation carries a fresh request id (the agent's idempotency
// key), so a retried call never runs twice.
import { randomUUID } from 'node:crypto';
import type { AgentClient } from '../agent-api/client';
import { KybernateError } from '../errors';
import type { WakeStep } from '../activator-api/status';
import { kybernate } from '../gen/proto';

const S = kybernate.agent.v1.WorkloadState;

export type WorkloadView = 'running' | 'paused' | 'suspended' | 'checkpointed' | 'stopped' | 'unknown';
export interface WorkloadRef { namespace: string; id: string }

export interface WorkloadAgent {
  state(w: WorkloadRef): Promise<WorkloadView>;
  suspend(w: WorkloadRef): Promise<void>;
  /** Checkpoint with exit: the process is gone afterwards, its memory freed. */
  checkpoint(w: WorkloadRef): Promise<void>;
  /** The agent's steps of the operation. */
  resume(w: WorkloadRef): Promise<WakeStep[]>;
  restore(w: WorkloadRef): Promise<WakeStep[]>;
}

/** Operations may take minutes (a GPU snapshot of tens of GiB); queries are quick. */
const OPERATION_TIMEOUT_MS = 30 * 60_000;
const QUERY_TIMEOUT_MS = 10_000;
/** After UNAVAILABLE, how long the first call of a wake waits for the channel (an agent restarting). */
const RECONNECT_WAIT_MS = 3_000;

export function agentWorkloads(client: AgentClient): WorkloadAgent {
  const op = { timeoutMs: OPERATION_TIMEOUT_MS };
  const steps = (r: { steps?: Array<{ name?: string | null; durationMs?: number | null }> | null }): WakeStep[] =>
    (r.steps ?? []).map((s) => ({ name: s.name ?? '', ms: Math.round(s.durationMs ?? 0) }));
  return {
    async state(w) {
      const get = (): ReturnType<AgentClient['get']> => client.get({ namespace: w.namespace, id: w.id }, { timeoutMs: QUERY_TIMEOUT_MS });
      const r = await get().catch(async (err: unknown) => {
        // The agent restarting: wait briefly for the channel to connect again, then ask once more.
        if (!(KybernateError.is(err) && err.code === 'KYB_ERR_UNAVAILABLE')) throw err;
        await client.ready(RECONNECT_WAIT_MS).catch(() => { throw err; });
        return get();
      });
      switch (r.state) {
        case S.RUNNING: return 'running';
        case S.PAUSED: return 'paused';
        case S.SUSPENDED: return 'suspended';
        case S.CHECKPOINTED: return 'checkpointed';
        case S.STOPPED: return 'stopped';
        default: return 'unknown';
      }
    },
    async suspend(w) {
      await client.suspend({ ...w, requestId: randomUUID() }, op);
    },
    async checkpoint(w) {
      await client.checkpoint({ ...w, requestId: randomUUID(), exit: true }, op);
    },
    async resume(w) {
      return steps(await client.resume({ ...w, requestId: randomUUID() }, op));
    },
    async restore(w) {
      return steps(await client.restore({ ...w, requestId: randomUUID() }, op));
    },
  };
}
