// `kybernate ps`: the node's Kybernate workloads as the agent sees them (List), as a table or as JSON.
import { parseArgs } from 'node:util';
import Long from 'long';
import type { ResponseOf } from '../../agent-api/definition';
import { kybernate } from '../../gen/proto';
import { fromTimestamp } from '../../timestamp';
import { agentSocket, reportFailure, withAgent } from '../agent-target';
import { namespaceOf } from '../args';
import { EXIT } from '../exit-codes';
import { age, bytes, columns, shortSnapshot } from '../format';
import { UsageError } from '../usage-error';

const State = kybernate.agent.v1.WorkloadState;
type Workload = ResponseOf<'Get'>;
type Snapshot = kybernate.agent.v1.ISnapshot;

export const num = (v: Long | number | null | undefined): number => (v === null || v === undefined ? 0 : Long.fromValue(v).toNumber());
export const stateName = (s: number | null | undefined): string => (s ? State[s] ?? 'UNKNOWN' : 'UNKNOWN');

/** A snapshot as plain JSON (numbers, ISO times). */
export function snapshotJson(s: Snapshot): Record<string, unknown> {
  return {
    id: s.id ?? '', namespace: s.namespace ?? '', containerId: s.containerId ?? '', path: s.path ?? '',
    createdAt: fromTimestamp(s.createdAt)?.toISOString() ?? null,
    sizeBytes: num(s.sizeBytes), gpuMemoryBytes: num(s.gpuMemoryBytes), exited: s.exited ?? false,
    tier: (s.tiers ?? [])[0] ?? 'ram', tiers: s.tiers ?? ['ram'], storedBytes: num(s.storedBytes), pinned: s.pinned || null,
  };
}

/** A workload as plain JSON (numbers, ISO times, null for absent). */
export function workloadJson(w: Workload): Record<string, unknown> {
  return {
    namespace: w.namespace ?? '', id: w.id ?? '', state: stateName(w.state), pid: w.pid ?? 0, image: w.image ?? '',
    taskStatus: w.taskStatus ?? '', gpuMemoryBytes: num(w.gpuMemoryBytes), savedGpuMemoryBytes: num(w.savedGpuMemoryBytes),
    cudaPids: w.cudaPids ?? [],
    snapshot: w.snapshot ? snapshotJson(w.snapshot) : null,
    since: fromTimestamp(w.since)?.toISOString() ?? null,
    operation: w.operation ?? '',
  };
}

function row(w: Workload, now: number): string[] {
  const state = stateName(w.state);
  const gpu = num(w.gpuMemoryBytes);
  const saved = num(w.savedGpuMemoryBytes);
  const since = fromTimestamp(w.since);
  return [
    w.namespace ?? '', w.id ?? '', w.operation ? `${state} (${w.operation}…)` : state,
    gpu > 0 ? bytes(gpu) : saved > 0 ? `${bytes(saved)} saved` : '-',
    w.snapshot?.id ? shortSnapshot(w.snapshot.id) : '-',
    since ? `${age(since, now)} ago` : '-',
  ];
}

export async function psCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      namespace: { type: 'string', short: 'n' }, 'all-namespaces': { type: 'boolean', short: 'A' },
      agent: { type: 'string' }, json: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 0) throw new UsageError(`ps: takes no arguments, got ${positionals.join(' ')}`);
  const namespace = namespaceOf('ps', values);
  const socket = agentSocket(values.agent);
  const json = values.json ?? false;
  try {
    const workloads = await withAgent(socket, async (agent) => (await agent.list({ namespace })).workloads ?? []);
    if (json) process.stdout.write(`${JSON.stringify({ ok: true, agent: socket, workloads: workloads.map(workloadJson) }, null, 2)}\n`);
    else process.stdout.write(columns(['NAMESPACE', 'ID', 'STATE', 'GPU MEM', 'SNAPSHOT', 'SINCE'], workloads.map((w) => row(w, Date.now()))));
    return EXIT.OK;
  } catch (err) {
    return reportFailure(err, json, { agent: socket });
  }
}
