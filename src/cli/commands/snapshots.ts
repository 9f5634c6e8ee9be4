// `kybernate snapshots ls|rm|mv|verify|gc`: the snapshots in the agent's tiers (ListSnapshots), deleting one
// (DeleteSnapshot), moving one to another tier (MoveSnapshot), reading one whole against its manifest
// (VerifySnapshot) and deleting the chunks nothing references (CollectGarbage). Both are scoped to a namespace (-n, default "default") unless -A: rm
// resolves its SNAPSHOT (id or hex prefix) among that namespace's snapshots first, so that a prefix
// never removes another namespace's snapshot.
import { parseArgs } from 'node:util';
import type { AgentClient } from '../../agent-api/client';
import { KybernateError } from '../../errors';
import { fromTimestamp } from '../../timestamp';
import { agentSocket, reportFailure, withAgent } from '../agent-target';
import { checkId, checkSnapshotRef, namespaceOf, seconds } from '../args';
import { EXIT } from '../exit-codes';
import { age, bytes, columns, progressLine, shortSnapshot } from '../format';
import { UsageError } from '../usage-error';
import { num, snapshotJson } from './ps';

/** Listing and deleting touch only the snapshot directory; this is plenty. */
const DEFAULT_TIMEOUT_S = 60;
/** A move copies the whole snapshot (tens of GiB for a model server). */
const MOVE_TIMEOUT_S = 3600;

const FLAGS = {
  namespace: { type: 'string', short: 'n' },
  'all-namespaces': { type: 'boolean', short: 'A' },
  agent: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const;

interface Parsed {
  /** '' = every namespace (-A). */
  namespace: string;
  positionals: string[];
  socket: string;
  timeoutMs: number;
  json: boolean;
  /** The subcommand's own options (mv and pin: --tier; pin: --unpin; gc: --grace). */
  tier?: string;
  unpin: boolean;
  grace?: string;
}

const OWN = { tier: { type: 'string' }, unpin: { type: 'boolean' }, grace: { type: 'string' } } as const;

/** The common options and `own` of the subcommand's (any other is refused, as parseArgs does). */
function parse(cmd: string, args: string[], own: ReadonlyArray<keyof typeof OWN> = []): Parsed {
  const options = { ...FLAGS, ...Object.fromEntries(own.map((k) => [k, OWN[k]])) } as typeof FLAGS & Partial<typeof OWN>;
  const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true });
  const v = values as typeof values & { tier?: string; unpin?: boolean; grace?: string };
  return {
    tier: v.tier,
    unpin: v.unpin ?? false,
    grace: v.grace,
    namespace: namespaceOf(cmd, values),
    positionals,
    socket: agentSocket(values.agent),
    timeoutMs: seconds('timeout', values.timeout) ?? DEFAULT_TIMEOUT_S * 1000,
    json: values.json ?? false,
  };
}

/** Runs fn against the agent with a progress line; prints its text or JSON; exit 1 or 3 as reportFailure says. */
async function withOutput(p: Parsed, label: string, fields: Record<string, unknown>,
  fn: (agent: AgentClient) => Promise<{ json: object; text: string }>): Promise<number> {
  const stop = p.json ? () => {} : progressLine(label);
  try {
    const out = await withAgent(p.socket, fn);
    stop();
    process.stdout.write(p.json ? `${JSON.stringify({ ok: true, agent: p.socket, ...fields, ...out.json }, null, 2)}\n` : out.text);
    return EXIT.OK;
  } catch (err) {
    stop();
    return reportFailure(err, p.json, { agent: p.socket, ...fields });
  }
}

function ls(args: string[]): Promise<number> {
  const p = parse('snapshots ls', args);
  if (p.positionals.length > 1) throw new UsageError(`snapshots ls: at most one container id, got ${p.positionals.length}`);
  const id = p.positionals[0] === undefined ? '' : checkId('container id', p.positionals[0]);
  if (id && !p.namespace) throw new UsageError('snapshots ls: a container id needs its namespace (-n), not -A');
  return withOutput(p, 'listing snapshots', { namespace: p.namespace, ...(id ? { id } : {}) }, async (agent) => {
    const snapshots = (await agent.listSnapshots({ namespace: p.namespace, id }, { timeoutMs: p.timeoutMs })).snapshots ?? [];
    const now = Date.now();
    const rows = snapshots.map((s) => {
      const created = fromTimestamp(s.createdAt);
      const gpu = num(s.gpuMemoryBytes);
      return [
        s.namespace ?? '', s.containerId ?? '', shortSnapshot(s.id ?? ''), created ? `${age(created, now)} ago` : '-',
        (s.tiers ?? ['ram']).join(','), bytes(num(s.sizeBytes)), bytes(num(s.storedBytes)), gpu > 0 ? bytes(gpu) : '-', s.exited ? 'yes' : 'no',
      ];
    });
    return {
      json: { snapshots: snapshots.map(snapshotJson) },
      text: columns(['NAMESPACE', 'ID', 'SNAPSHOT', 'CREATED', 'TIER', 'SIZE', 'STORED', 'GPU MEM', 'EXITED'], rows),
    };
  });
}

function rm(args: string[]): Promise<number> {
  const p = parse('snapshots rm', args);
  if (p.positionals.length !== 1) throw new UsageError(`snapshots rm: exactly one snapshot (its id or a hex prefix), got ${p.positionals.length}`);
  const ref = checkSnapshotRef(p.positionals[0]);
  return withOutput(p, `removing snapshot ${ref}`, { namespace: p.namespace, snapshot: ref }, async (agent) => {
    let target = ref;
    if (p.namespace) {
      // The agent matches a prefix across every namespace: resolve it within this one first.
      const hex = ref.replace(/^sha256:/, '');
      const all = (await agent.listSnapshots({ namespace: p.namespace }, { timeoutMs: p.timeoutMs })).snapshots ?? [];
      const hits = all.filter((s) => (s.id ?? '').replace(/^sha256:/, '').startsWith(hex));
      if (hits.length === 0) {
        throw new KybernateError('KYB_ERR_NOT_FOUND', `no snapshot ${ref} in namespace ${p.namespace} (kybernate snapshots ls -A lists every namespace's)`);
      }
      if (hits.length > 1) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `snapshot ${ref} is ambiguous: ${hits.map((h) => h.id).join(', ')}`);
      target = hits[0]!.id ?? ref;
    }
    const s = (await agent.deleteSnapshot({ snapshot: target }, { timeoutMs: p.timeoutMs })).snapshot ?? {};
    const created = fromTimestamp(s.createdAt);
    return {
      json: { removed: snapshotJson(s) },
      text: `removed snapshot ${shortSnapshot(s.id ?? '')} (${s.id ?? ''}) of ${s.namespace ?? ''}/${s.containerId ?? ''}: ` +
        `${bytes(num(s.sizeBytes))}${created ? `, created ${created.toISOString()}` : ''}\n`,
    };
  });
}

function mv(args: string[]): Promise<number> {
  const p = parse('snapshots mv', args, ['tier']);
  const { tier } = p;
  if (tier === undefined || !['ram', 'disk', 's3'].includes(tier)) throw new UsageError(`snapshots mv: --tier ram|disk|s3 is required${tier ? `, not ${tier}` : ''}`);
  if (p.positionals.length !== 1) throw new UsageError(`snapshots mv: exactly one snapshot (its id or a hex prefix), got ${p.positionals.length}`);
  const ref = checkSnapshotRef(p.positionals[0]);
  const timeoutMs = p.timeoutMs === DEFAULT_TIMEOUT_S * 1000 ? MOVE_TIMEOUT_S * 1000 : p.timeoutMs;
  return withOutput(p, `moving snapshot ${ref} to ${tier}`, { snapshot: ref, tier }, async (agent) => {
    const bar = p.json ? undefined : await moveProgressBar(agent, ref);
    let r;
    try {
      r = await agent.moveSnapshot({ snapshot: ref, tier }, { timeoutMs });
    } finally {
      bar?.();
    }
    const s = r.snapshot ?? {};
    const ms = r.durationMs ?? 0;
    const written = num(r.bytesWritten);
    return {
      json: { snapshot: snapshotJson(s), bytesWritten: written, durationMs: ms },
      text: `moved snapshot ${shortSnapshot(s.id ?? '')} of ${s.namespace ?? ''}/${s.containerId ?? ''} to ${tier}: ` +
        `${bytes(num(s.sizeBytes))}, ${bytes(written)} written, ${bytes(num(s.storedBytes))} stored there (${ms.toFixed(1)} ms` +
        `${ms > 0 ? `, ${bytes(num(s.sizeBytes) / (ms / 1000))}/s` : ''})\n`,
    };
  });
}

/**
 * On a terminal, a progress bar on stderr from the agent's move progress events: bytes, rate and ETA.
 * Returns the function that ends it; nothing when stderr is not a terminal.
 */
async function moveProgressBar(agent: AgentClient, ref: string): Promise<(() => void) | undefined> {
  if (process.stderr.isTTY !== true) return undefined;
  const hex = ref.replace(/^sha256:/, '');
  const stream = agent.events({});
  const t0 = Date.now();
  let shown = false;
  stream.on((e) => {
    const pr = e.progress;
    if (pr?.operation !== 'move' || !(pr.snapshot ?? '').replace(/^sha256:/, '').startsWith(hex)) return;
    const done = num(pr.bytesDone);
    const total = num(pr.bytesTotal);
    const s = (Date.now() - t0) / 1000;
    const rate = s > 0 ? done / s : 0;
    const eta = rate > 0 && total > done ? `, ${Math.ceil((total - done) / rate)}s left` : '';
    const width = 30;
    const filled = total > 0 ? Math.round((done / total) * width) : 0;
    shown = true;
    process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${bytes(done)} of ${bytes(total)}, ${bytes(rate)}/s${eta}\x1b[K`);
  }, () => {});
  await stream.ready.catch(() => undefined);
  return () => {
    stream.close();
    if (shown) process.stderr.write('\r\x1b[K');
  };
}

function pin(args: string[]): Promise<number> {
  const p = parse('snapshots pin', args, ['tier', 'unpin']);
  const { tier, unpin } = p;
  if (unpin === (tier !== undefined)) throw new UsageError('snapshots pin: give --tier ram|disk|s3, or --unpin');
  if (tier !== undefined && !['ram', 'disk', 's3'].includes(tier)) throw new UsageError(`snapshots pin: --tier is ram, disk or s3, not ${tier}`);
  if (p.positionals.length !== 1) throw new UsageError(`snapshots pin: exactly one snapshot (its id or a hex prefix), got ${p.positionals.length}`);
  const ref = checkSnapshotRef(p.positionals[0]);
  return withOutput(p, `pinning snapshot ${ref}`, { snapshot: ref }, async (agent) => {
    const s = (await agent.pinSnapshot({ snapshot: ref, tier: tier ?? '' }, { timeoutMs: p.timeoutMs })).snapshot ?? {};
    return {
      json: { snapshot: snapshotJson(s) },
      text: s.pinned ? `pinned snapshot ${shortSnapshot(s.id ?? '')} in ${s.pinned}: the storage policy keeps it there\n`
        : `unpinned snapshot ${shortSnapshot(s.id ?? '')}\n`,
    };
  });
}

function verify(args: string[]): Promise<number> {
  const p = parse('snapshots verify', args);
  if (p.positionals.length !== 1) throw new UsageError(`snapshots verify: exactly one snapshot (its id or a hex prefix), got ${p.positionals.length}`);
  const ref = checkSnapshotRef(p.positionals[0]);
  const timeoutMs = p.timeoutMs === DEFAULT_TIMEOUT_S * 1000 ? MOVE_TIMEOUT_S * 1000 : p.timeoutMs;
  return withOutput(p, `verifying snapshot ${ref}`, { snapshot: ref }, async (agent) => {
    const r = await agent.verifySnapshot({ snapshot: ref }, { timeoutMs });
    const s = r.snapshot ?? {};
    return {
      json: { snapshot: snapshotJson(s), verified: r.verified ?? [], bytesRead: num(r.bytesRead), durationMs: r.durationMs ?? 0 },
      text: `snapshot ${shortSnapshot(s.id ?? '')} of ${s.namespace ?? ''}/${s.containerId ?? ''}: every byte matches its manifest in ` +
        `${(r.verified ?? []).join(', ')} (${bytes(num(r.bytesRead))} read, ${(r.durationMs ?? 0).toFixed(1)} ms)\n`,
    };
  });
}

function gc(args: string[]): Promise<number> {
  const p = parse('snapshots gc', args, ['grace']);
  const grace = seconds('grace', p.grace);
  if (p.positionals.length > 0) throw new UsageError('snapshots gc: takes no arguments');
  const timeoutMs = p.timeoutMs === DEFAULT_TIMEOUT_S * 1000 ? MOVE_TIMEOUT_S * 1000 : p.timeoutMs;
  return withOutput(p, 'collecting unreferenced chunks', {}, async (agent) => {
    // --grace 0 is 0 s, which the API reads as "the default": send 1 s, the least it takes.
    const graceS = grace === undefined ? 0 : Math.max(1, Math.round(grace / 1000));
    const tiers = (await agent.collectGarbage({ graceS }, { timeoutMs })).tiers ?? [];
    const rows = tiers.map((t) => ({ tier: t.tier ?? '', deletedChunks: num(t.deletedChunks), freedBytes: num(t.freedBytes), keptChunks: num(t.keptChunks) }));
    return {
      json: { tiers: rows },
      text: rows.length === 0 ? 'no chunk tiers are configured (the agent\'s "storage" key)\n'
        : columns(['TIER', 'DELETED', 'FREED', 'KEPT'], rows.map((r) => [r.tier, String(r.deletedChunks), bytes(r.freedBytes), String(r.keptChunks)])),
    };
  });
}

export async function snapshotsCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'ls':
      return ls(rest);
    case 'rm':
      return rm(rest);
    case 'mv':
      return mv(rest);
    case 'verify':
      return verify(rest);
    case 'pin':
      return pin(rest);
    case 'gc':
      return gc(rest);
    case undefined:
      throw new UsageError('snapshots: give a subcommand, ls, rm, mv, pin, verify or gc');
    default:
      throw new UsageError(`snapshots: unknown subcommand ${sub} (ls, rm, mv, pin, verify or gc)`);
  }
}
