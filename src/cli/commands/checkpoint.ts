// `kybernate checkpoint|restore <container>` through the node agent (they have no direct path): the task
// into a snapshot in the agent's snapshot directory (with --exit it then ends: scale to zero, the container
// and its rw layer kept), and a new task of the same container from a snapshot. Output and exit codes as
// suspend and resume through the agent (agent-ops.ts).
import { parseArgs } from 'node:util';
import type { ResponseOf } from '../../agent-api/definition';
import { DEFAULT_NAMESPACE } from '../../shim-client/client';
import { agentSocket } from '../agent-target';
import { checkId, checkSnapshotRef, seconds } from '../args';
import { bytes, plural, shortSnapshot, stepTable } from '../format';
import { UsageError } from '../usage-error';
import { agentOperation, stepsOf, type AgentOp } from './agent-ops';
import { num, snapshotJson, stateName, workloadJson } from './ps';

/** The agent gives CRIU up to 30 minutes; the default deadline waits that long (plus a turn in the queue). */
const DEFAULT_TIMEOUT_S = 30 * 60;

const FLAGS = {
  namespace: { type: 'string', short: 'n' },
  agent: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const;

interface Parsed extends AgentOp {
  exit: boolean;
  tier?: string;
  snapshot?: string;
}

function parse(cmd: 'checkpoint' | 'restore', args: string[]): Parsed {
  const { values, positionals } = parseArgs({
    args,
    options: cmd === 'checkpoint' ? { ...FLAGS, exit: { type: 'boolean' }, tier: { type: 'string' } } : { ...FLAGS, snapshot: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError(`${cmd}: exactly one container id, got ${positionals.length}`);
  const v = values as { namespace?: string; agent?: string; timeout?: string; json?: boolean; exit?: boolean; snapshot?: string; tier?: string };
  if (v.tier !== undefined && !TIERS.includes(v.tier)) throw new UsageError(`${cmd}: --tier is ram, disk or s3, not ${v.tier}`);
  return {
    id: checkId('container id', positionals[0]),
    namespace: checkId('namespace', v.namespace ?? DEFAULT_NAMESPACE),
    socket: agentSocket(v.agent),
    timeoutMs: seconds('timeout', v.timeout) ?? DEFAULT_TIMEOUT_S * 1000,
    json: v.json ?? false,
    exit: v.exit ?? false,
    tier: v.tier,
    snapshot: v.snapshot === undefined ? undefined : checkSnapshotRef(v.snapshot),
  };
}

type Result = ResponseOf<'Checkpoint'>;

/** " in disk (1.2 MiB stored)" for a snapshot below ram; nothing for one in ram alone (the default). */
function tierText(s: { tiers?: string[] | null; storedBytes?: unknown; sizeBytes?: unknown }): string {
  const tiers = s.tiers ?? ['ram'];
  if (tiers.length === 1 && tiers[0] === 'ram') return '';
  return ` in ${tiers.join(', ')} (${bytes(num(s.storedBytes as number))} stored)`;
}
const TIERS = ['ram', 'disk', 's3'];

/** "3f2a9c0e1b7d (sha256:3f2a…)": the short id the tables show, then the full one. */
const snapshotName = (id: string): string => `${shortSnapshot(id)} (${id})`;

export function checkpointCommand(args: string[]): Promise<number> {
  const p = parse('checkpoint', args);
  return agentOperation(p, `checkpointing ${p.id}`, async (agent) => {
    const r: Result = await agent.checkpoint({ namespace: p.namespace, id: p.id, exit: p.exit, tier: p.tier ?? '' }, { timeoutMs: p.timeoutMs });
    const s = r.snapshot ?? {};
    const exited = s.exited ?? false;
    const state = stateName(r.workload?.state);
    const gpu = num(s.gpuMemoryBytes);
    const pids = r.cudaPids ?? [];
    const steps = stepsOf(r);
    const durationMs = r.durationMs ?? 0;
    return {
      json: {
        snapshot: snapshotJson(s), exited, state, cudaPids: pids, steps, durationMs,
        workload: r.workload ? workloadJson(r.workload) : null,
      },
      text: `checkpointed container ${p.id}: ${exited ? `the task exited, ${p.id} is ${state}` : 'the task keeps running'} ` +
        `(${durationMs.toFixed(1)} ms)\n` +
        `snapshot ${snapshotName(s.id ?? '')}, ${bytes(num(s.sizeBytes))}${tierText(s)}, GPU memory saved: ` +
        `${gpu > 0 || pids.length > 0 ? `${bytes(gpu)} of ${plural(pids.length, 'process')}` : 'none'}\n${stepTable(steps)}\n`,
    };
  });
}

export function restoreCommand(args: string[]): Promise<number> {
  const p = parse('restore', args);
  return agentOperation(p, `restoring ${p.id}`, async (agent) => {
    const r: Result = await agent.restore({ namespace: p.namespace, id: p.id, snapshot: p.snapshot ?? '' }, { timeoutMs: p.timeoutMs });
    const state = stateName(r.workload?.state);
    const pid = r.workload?.pid ?? 0;
    const steps = stepsOf(r);
    const durationMs = r.durationMs ?? 0;
    return {
      json: {
        snapshot: r.snapshot ? snapshotJson(r.snapshot) : null, state, pid, cudaPids: r.cudaPids ?? [], steps, durationMs,
        workload: r.workload ? workloadJson(r.workload) : null,
      },
      text: `restored container ${p.id} from snapshot ${shortSnapshot(r.snapshot?.id ?? '')}: ${state}, pid ${pid} ` +
        `(${durationMs.toFixed(1)} ms)\n${stepTable(steps)}\n`,
    };
  });
}
