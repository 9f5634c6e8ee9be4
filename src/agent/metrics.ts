// The agent's Prometheus metrics (prom-client); src/metrics-http.ts serves them at /metrics.
// Own registry, not prom-client's global one: two agents in one process (tests) do not share counters.
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const PREFIX = 'kybernate_agent_';

/** What operations record; the one object every operation function gets through AgentContext.metrics. */
export class AgentMetrics {
  readonly registry = new Registry();
  private readonly operations = new Counter({
    name: `${PREFIX}operations_total`,
    help: 'Operations finished, by kind (suspend, resume, checkpoint, restore) and result (ok, or the KYB_ERR_ code)',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  });
  private readonly durations = new Histogram({
    name: `${PREFIX}operation_duration_seconds`,
    help: 'How long operations ran (not counting their wait for the workload\'s turn), by kind and result',
    labelNames: ['kind', 'result'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  private readonly gpuFreed = new Counter({
    name: `${PREFIX}gpu_memory_freed_bytes_total`,
    help: 'Device memory operations moved off the GPUs (suspend, checkpoint with exit), by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private readonly written = new Counter({
    name: `${PREFIX}snapshot_bytes_written_total`,
    help: 'Bytes written into snapshots',
    registers: [this.registry],
  });
  private readonly read = new Counter({
    name: `${PREFIX}snapshot_bytes_read_total`,
    help: 'Bytes of snapshots read by restores',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
  }

  operationDone(kind: string, result: string, seconds: number): void {
    this.operations.inc({ kind, result });
    this.durations.observe({ kind, result }, seconds);
  }

  gpuMemoryFreed(kind: string, bytes: number): void {
    if (bytes > 0) this.gpuFreed.inc({ kind }, bytes);
  }

  bytesWritten(bytes: number): void {
    if (bytes > 0) this.written.inc(bytes);
  }

  bytesRead(bytes: number): void {
    if (bytes > 0) this.read.inc(bytes);
  }
}
