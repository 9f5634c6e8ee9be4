// What an agent operation gets to work with (AgentContext), what it is asked (OpRequest) and what it
// returns (OpResult): the contract between the service and the operation functions (suspend.ts; for
// checkpoint.ts and snapshots.ts, service.ts's snapshotBackend adapts them).
import type { Logger } from 'pino';
import type { ContainerdClient } from '../containerd/client';
import type { AgentMetrics } from './metrics';
import type { SnapshotInfo } from './snapshots';
import type { SnapshotIndex, WorkloadView, Workloads } from './workloads';

/** One timed step of an operation: cuda-lock:<pid>, freeze, criu-dump, runc-restore, ... */
export interface OpStep {
  name: string;
  durationMs: number;
  /** Bytes the step wrote or read (0 when it moves none). */
  bytes?: number;
}

/** Where an operation reports what it is doing; the Events stream carries it to clients. */
export interface OpEvents {
  /** A step just finished. */
  progress(namespace: string, id: string, operation: string, step: OpStep): void;
  /**
   * Looks at the workload again now and publishes a StateChanged if its state changed; resolves to the view
   * it looked at (undefined when the workload is gone or could not be looked at).
   */
  refresh(namespace: string, id: string): Promise<WorkloadView | undefined>;
}

export interface AgentContext {
  containerd: ContainerdClient;
  /** containerd's state directory (--containerd-state), where the shims' addresses are. */
  containerdState: string;
  /** The agent's snapshot directory (--snapshot-dir). */
  snapshotDir: string;
  log: Logger;
  snapshots: SnapshotIndex;
  /** The workload view: Get a workload's state before or after an operation. */
  workloads: Workloads;
  events: OpEvents;
  metrics: AgentMetrics;
}

export interface OpResult {
  /** The workload after the operation; the service looks it up again when this is left out. */
  workload?: WorkloadView;
  steps: OpStep[];
  durationMs: number;
  /** Checkpoint: the snapshot written; Restore: the snapshot restored. */
  snapshot?: SnapshotInfo;
  /** The CUDA processes the operation moved. */
  cudaPids: number[];
}

/**
 * The request of every operation function. `signal` aborts only when the agent shuts down, never because the
 * caller went away: an operation that has started runs to its end (operations.ts), so that a workload is
 * never left half-way.
 */
export interface OpRequest {
  namespace: string;
  id: string;
  signal?: AbortSignal;
}

export interface CheckpointWorkloadRequest extends OpRequest {
  /** End the task once the snapshot is complete and durable (scale to zero). */
  exit: boolean;
}

export interface RestoreWorkloadRequest extends OpRequest {
  /** The snapshot's id; undefined: the container's newest. */
  snapshot?: string;
}
