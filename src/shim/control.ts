// The Control service: Kybernate's own RPCs on the shim socket (GPU suspend in place), beside the Task
// service and over the same containers. Each handler looks up the container, calls src/shim/suspend.ts
// and publishes the matching event through the shim's one ordered event queue.
import Long from 'long';
import type { Logger } from 'pino';
import { errNotFound, errInvalid } from '../errors';
import { kybernate, type google } from '../gen/proto';
import type { CudaApi } from '../gpu/engine';
import type { Container } from './container';
import type { Publisher } from './publisher';
import { TOPIC_RESUMED, TOPIC_SUSPENDED } from '../shim-client/control';
import { resumeContainer, suspendContainer, type ContainerStep } from './suspend';

const C = kybernate.shim.v1;
const E = kybernate.events.v1;
type Req<K extends 'SuspendRequest' | 'ResumeRequest' | 'StatusRequest'> = ReturnType<(typeof C)[K]['decode']>;


export interface ControlDeps {
  /** The Task service's containers (the same map, so both services see one truth). */
  containers: ReadonlyMap<string, Container>;
  publisher: Pick<Publisher, 'publish'>;
  log: Pick<Logger, 'info' | 'warn'>;
  /** Tests: the CUDA module (default: src/native/cuda, loaded on first use). */
  cuda?: CudaApi | null;
}

function steps(s: readonly ContainerStep[]): kybernate.shim.v1.IStep[] {
  return s.map((x) => ({ name: x.step, pid: x.pid, durationMs: x.ms }));
}

function timestamp(d: Date): google.protobuf.ITimestamp {
  const ms = d.getTime();
  return { seconds: Long.fromNumber(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
}

export class ControlService {
  constructor(private readonly deps: ControlDeps) {}

  private container(id: string): Container {
    if (!id) throw errInvalid('container id is required');
    const c = this.deps.containers.get(id);
    if (!c) throw errNotFound(`container ${id} (not served by this shim)`);
    return c;
  }

  async suspend(r: Req<'SuspendRequest'>): Promise<kybernate.shim.v1.ISuspendResponse> {
    const c = this.container(r.id);
    const out = await suspendContainer(c, { lockTimeoutMs: r.lockTimeoutMs || undefined, api: this.deps.cuda });
    this.deps.log.info({ id: c.id, pids: out.pids, ms: out.durationMs }, 'container suspended');
    this.deps.publisher.publish(TOPIC_SUSPENDED, 'kybernate.events.v1.ContainerSuspended', E.ContainerSuspended.encode({
      containerId: c.id, pids: out.pids, durationMs: out.durationMs,
    }).finish());
    return {
      pids: out.pids, steps: steps(out.steps), durationMs: out.durationMs,
      skipped: out.skipped.map((s) => ({ pid: s.pid, reason: s.why })),
      deviceMemoryBytes: Long.fromNumber(Math.max(0, Math.round(out.deviceMemoryBytes)), true),
    };
  }

  async resume(r: Req<'ResumeRequest'>): Promise<kybernate.shim.v1.IResumeResponse> {
    const c = this.container(r.id);
    const out = await resumeContainer(c, { api: this.deps.cuda });
    this.deps.log.info({ id: c.id, pids: out.pids, ms: out.durationMs }, 'container resumed');
    this.deps.publisher.publish(TOPIC_RESUMED, 'kybernate.events.v1.ContainerResumed', E.ContainerResumed.encode({
      containerId: c.id, pids: out.pids, durationMs: out.durationMs,
    }).finish());
    return { pids: out.pids, steps: steps(out.steps), durationMs: out.durationMs };
  }

  async status(r: Req<'StatusRequest'>): Promise<kybernate.shim.v1.IStatusResponse> {
    const c = this.container(r.id);
    const status = c.init.status;
    // A container that exited while suspended took its GPU state with it.
    const s = status === 'running' || status === 'paused' ? c.gpuSuspension : undefined;
    return {
      id: c.id, suspended: s !== undefined, suspendedAt: s ? timestamp(s.since) : null,
      cudaPids: s?.pids ?? [], taskStatus: status,
    };
  }
}
