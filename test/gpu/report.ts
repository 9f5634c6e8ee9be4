// The container suite's results: every sample and check, and the ours-vs-stock table.
import type { HostProbe } from './gpu-spec';

export interface Sample {
  workload: string;
  path: 'ours' | 'stock';
  /**
   * *-rpc: Control.Suspend/Resume as one ttrpc call from the suite's running process (the node agent's way);
   * suspend/resume: the `kybernate` CLI's wall time; *-shim: the shim's own duration (durationMs of either);
   * restore-shim: the shim's runc-restore + gpu-total from its 'restored' log line; *-agent: one call to
   * kybernate-agent (agent-path.ts); checkpoint-tier / restore-from-ram / move-to-disk / restore-from-disk: the
   * snapshot-tier round (tiers-path.ts), in their own table.
   */
  op: 'checkpoint' | 'checkpoint-group' | 'restore' | 'restore-group' | 'restore-shim' | 'suspend' | 'resume' | 'suspend-rpc' | 'resume-rpc' | 'suspend-shim' | 'resume-shim'
    | 'suspend-agent' | 'resume-agent' | 'checkpoint-agent' | 'restore-agent'
    | 'checkpoint-tier' | 'restore-from-ram' | 'move-to-disk' | 'restore-from-disk';
  round: number;
  /** Wall time of the whole operation as the caller sees it. */
  ms: number;
  bytes?: number;
  /** Bytes the operation wrote where that differs from `bytes` (move-to-disk: the new chunks). */
  written?: number;
  parts?: Record<string, number>;
  detail?: string;
}

export interface Report {
  device: string;
  probe: HostProbe;
  samples: Sample[];
  checks: Array<{ ok: boolean; what: string; detail: string }>;
  notes: string[];
}

const OPS: Array<{ op: Sample['op']; stockOp?: Sample['op']; ours: string; stock: string; target?: number }> = [
  { op: 'restore', ours: 'Tasks.Create{criu_image_path} + Tasks.Start wall from the suite\'s gRPC client (shim start, manifest verification, runc restore, CUDA restore+unlock)', stock: 'runc restore + raw restore+unlock', target: 1.1 },
  { op: 'restore-group', stockOp: 'restore', ours: 'the same into a warm group shim (io.kybernate.group shared with a keeper container: `start` finds the daemon serving)', stock: 'runc restore + raw restore+unlock', target: 1.1 },
  { op: 'restore-agent', stockOp: 'restore', ours: 'Agent.Restore of the snapshot just taken, one gRPC call from the suite\'s AgentClient (snapshot checked against this node, Tasks.Create{criu_image_path} + Start, the agent\'s view after)', stock: 'runc restore + raw restore+unlock', target: 1.1 },
  { op: 'restore-shim', stockOp: 'restore', ours: 'the shim\'s own runc-restore + gpu-total (its \'restored\' log line)', stock: 'runc restore + raw restore+unlock', target: 1.1 },
  { op: 'resume-rpc', stockOp: 'resume', ours: 'Control.Resume as one ttrpc call from the running suite (connection open; thaw, CUDA restore+unlock)', stock: 'raw restore+unlock (thaw not included)', target: 1.1 },
  { op: 'resume-agent', stockOp: 'resume', ours: 'Agent.Resume, one gRPC call from the suite\'s AgentClient (the agent finds the task, Control.Resume through the shim, the view after)', stock: 'raw restore+unlock (thaw not included)', target: 1.1 },
  { op: 'resume', ours: '`kybernate resume` (CLI wall: node start, dial, thaw, CUDA restore+unlock)', stock: 'raw restore+unlock (thaw not included)', target: 1.1 },
  { op: 'resume-shim', stockOp: 'resume', ours: 'the shim\'s own duration of those resumes (durationMs; rpc and CLI rounds)', stock: 'raw restore+unlock', target: 1.1 },
  { op: 'checkpoint', ours: 'Tasks.Checkpoint{exit} wall (CUDA lock+checkpoint, runc checkpoint, manifest)', stock: 'raw lock+checkpoint + runc checkpoint' },
  { op: 'checkpoint-agent', stockOp: 'checkpoint', ours: 'Agent.Checkpoint{exit} wall: Tasks.Checkpoint into the agent\'s snapshot dir (the same tmpfs as ours), then the exit awaited and the task deleted, the view after', stock: 'raw lock+checkpoint + runc checkpoint' },
  { op: 'checkpoint-group', stockOp: 'checkpoint', ours: 'Tasks.Checkpoint{exit} of the group shim\'s container', stock: 'raw lock+checkpoint + runc checkpoint' },
  { op: 'suspend-rpc', stockOp: 'suspend', ours: 'Control.Suspend as one ttrpc call from the running suite (CUDA lock+checkpoint, freeze)', stock: 'raw lock+checkpoint (freeze not included)' },
  { op: 'suspend-agent', stockOp: 'suspend', ours: 'Agent.Suspend, one gRPC call from the suite\'s AgentClient (the agent\'s fresh view of the workload with nvidia-smi, Control.Suspend through the shim, the view after)', stock: 'raw lock+checkpoint (freeze not included)' },
  { op: 'suspend', ours: '`kybernate suspend` (CLI wall)', stock: 'raw lock+checkpoint (freeze not included)' },
  { op: 'suspend-shim', stockOp: 'suspend', ours: 'the shim\'s own duration of those suspends (durationMs; rpc and CLI rounds)', stock: 'raw lock+checkpoint' },
];

/** The snapshot-tier round's rows (tiers-path.ts): no stock counterpart; bytes = the snapshot's size. */
const TIER_OPS: Array<{ op: Sample['op']; what: string }> = [
  { op: 'checkpoint-tier', what: 'Agent.Checkpoint{exit} into ram (the snapshot directory on /dev/shm)' },
  { op: 'restore-from-ram', what: 'Agent.Restore of that snapshot, in ram' },
  { op: 'move-to-disk', what: 'Agent.MoveSnapshot{tier: disk} of the second checkpoint: FastCDC chunks sha256-named, each written to a temp file, fsynced and renamed, the index last; then the ram copy released' },
  { op: 'restore-from-disk', what: 'Agent.Restore of it from disk only: promote-disk (the chunks read, sha256-checked and written back into ram as plain files) then the same restore as from ram' },
];

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const fmt = (x: number | undefined): string => (x === undefined ? 'n/a' : x.toFixed(1));

export function formatTable(r: Report): string {
  const out = [`GPU container suite: ${r.device}`, '',
    '| workload | operation | ours median ms | stock median ms | ours/stock (medians) | ours/stock (minima) | target | rounds |',
    '|---|---|---|---|---|---|---|---|'];
  const workloads = [...new Set(r.samples.map((s) => s.workload))];
  for (const w of workloads) {
    for (const o of OPS) {
      const ours = r.samples.filter((s) => s.workload === w && s.op === o.op && s.path === 'ours').map((s) => s.ms);
      const stock = r.samples.filter((s) => s.workload === w && s.op === (o.stockOp ?? o.op) && s.path === 'stock').map((s) => s.ms);
      if (ours.length === 0 && (stock.length === 0 || o.stockOp)) continue;
      const om = ours.length ? median(ours) : undefined;
      const sm = stock.length ? median(stock) : undefined;
      const ratio = om !== undefined && sm ? om / sm : undefined;
      const ratioMin = ours.length && stock.length ? Math.min(...ours) / Math.min(...stock) : undefined;
      const target = o.target === undefined ? '' : `<= ${o.target}x ${ratio === undefined ? '' : ratio <= o.target ? 'met' : 'MISSED'}`;
      out.push(`| ${w} | ${o.op} | ${fmt(om)} | ${fmt(sm)} | ${ratio === undefined ? 'n/a' : ratio.toFixed(3)} | ${ratioMin === undefined ? 'n/a' : ratioMin.toFixed(3)} | ${target} | ${ours.length}/${stock.length} |`);
    }
  }
  const tierRows = TIER_OPS.flatMap((o) => r.samples.filter((s) => s.op === o.op));
  if (tierRows.length) {
    out.push('', 'Snapshot tiers (one round; MB/s = snapshot bytes / wall, decimal MB):', '',
      '| workload | operation | round | wall ms | snapshot GiB | written GiB | MB/s | steps | detail |', '|---|---|---|---|---|---|---|---|---|');
    for (const s of tierRows) {
      const steps = Object.entries(s.parts ?? {}).map(([k, v]) => `${k} ${fmt(v)}`).join('; ');
      out.push(`| ${s.workload} | ${s.op} | ${s.round} | ${fmt(s.ms)} | ${s.bytes === undefined ? '' : (s.bytes / 2 ** 30).toFixed(2)} | ` +
        `${s.written === undefined ? '' : (s.written / 2 ** 30).toFixed(2)} | ${s.bytes && s.ms > 0 ? (s.bytes / 1e6 / (s.ms / 1000)).toFixed(0) : ''} | ${steps} | ${s.detail ?? ''} |`);
    }
  }
  out.push('', 'Where the time goes (median ms of each step over the rounds; a per-pid step summed over the pids of a round):', '',
    '| workload | path | operation | steps |', '|---|---|---|---|');
  const keys = [...new Set(r.samples.map((s) => `${s.workload}|${s.path}|${s.op}`))];
  for (const k of keys) {
    const rounds = r.samples.filter((s) => `${s.workload}|${s.path}|${s.op}` === k && s.parts);
    if (rounds.length === 0) continue;
    const perRound = rounds.map((s) => {
      const m: Record<string, number> = {};
      for (const [name, v] of Object.entries(s.parts!)) {
        const step = name.replace(/[:@]\d+$/, '');
        m[step] = (m[step] ?? 0) + v;
      }
      return m;
    });
    const names = [...new Set(perRound.flatMap((m) => Object.keys(m)))];
    const cells = names.map((n) => `${n} ${fmt(median(perRound.map((m) => m[n]).filter((x): x is number => x !== undefined)))}`);
    const [w, p, op] = k.split('|');
    out.push(`| ${w} | ${p} | ${op} | ${cells.join('; ')} |`);
  }
  out.push('', 'What each column times:');
  for (const o of OPS) out.push(`- ${o.op}: ours = ${o.ours}; stock = ${o.stock}`);
  if (tierRows.length) for (const o of TIER_OPS) out.push(`- ${o.op}: ${o.what}`);
  const failed = r.checks.filter((c) => !c.ok);
  out.push('', `Checks: ${r.checks.length - failed.length} passed, ${failed.length} failed`);
  for (const c of failed) out.push(`- FAIL ${c.what}: ${c.detail.split('\n')[0]}`);
  for (const n of r.notes) out.push(`- note: ${n}`);
  return `${out.join('\n')}\n`;
}
