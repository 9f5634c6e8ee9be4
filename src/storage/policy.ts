// The HSM policy of the snapshot tiers (RAM, disk, S3) as pure functions over facts and a clock the caller
// passes in (`now`, in ms; simulated in the tests): which copies to move or drop and which snapshots to
// delete next, where a new snapshot goes, and where a restored one is promoted to. No I/O, no timers, no
// randomness. The executor applies a round of actions, then plans again with fresh facts.
//
// Invariants (each has a test in test/storage/policy.test.ts):
//  P1  Tiers are cfg.tiers in order, fastest first. A copy in a tier that is not configured is invisible:
//      it counts towards no usage, is never moved, and is not a "copy below" for P7.
//  P2  Busy snapshots are never named by an action; their copies still count towards usage and retention.
//  P3  At most one action per snapshot per round, and it names a copy the snapshot has.
//  P4  Retention first: per workload (namespace, containerId), snapshots ranked newest first by createdAt
//      (then id); those ranked past keepPerWorkload are deleted, except pinned ones (kept in addition to
//      the N). The newest is never deleted. keepPerWorkload 0 keeps all.
//  P5  Age: a copy in tier T (not the last) leaves T when now - lastUsedAt > T.demoteAfterMs (strictly).
//      Of several such copies of a snapshot, the fastest leaves first (one per round, P3).
//  P6  Capacity: tier by tier, fastest first, while T's usage (sum of sizeBytes of the snapshots with a copy
//      in T once this round's earlier actions are done) exceeds T.capacityBytes, the copy of the least
//      recently used candidate (lastUsedAt, then createdAt, then id) leaves T. In the last tier, or when no
//      candidate is left, the excess is only reported (evaluate().pressure): never solved by deletion.
//  P7  Leaving T: a copy is dropped when the snapshot has a copy in a lower tier, else demoted to the next
//      configured tier below T. So no action leaves a snapshot with zero copies; only retention deletes.
//  P8  Pinned: the copy in the pinned tier never leaves, and a pinned snapshot is never deleted; its copies
//      in other tiers follow P5–P7.
//  P9  Deterministic: the result depends on the set of facts, not their order (sorted by id first).
//  P10 Convergence: every action removes a copy or moves one strictly down, so applying each round's
//      actions and planning again reaches an empty plan within (copies × tiers) rounds.
//  P11 placement(): the asked tier if configured and it has room, else an error; unasked, the fastest tier
//      with room. "Room": usage + sizeBytes <= capacityBytes.
//  P12 promotionTarget(): the fastest configured tier above the snapshot's fastest copy with room for it,
//      else undefined (restore from where it is). Pass the usage after this round (evaluate().usage).

export type TierName = 'ram' | 'disk' | 's3';

export interface TierPolicy {
  name: TierName;
  /** Infinity: unbounded. */
  capacityBytes: number;
  /** Idle time after which a snapshot here moves one tier down; undefined: never by age. */
  demoteAfterMs?: number;
}

export interface PolicyConfig {
  /** Fastest first, only the configured ones. */
  tiers: TierPolicy[];
  /** Retention: newest N per (namespace, containerId); 0 = keep all. */
  keepPerWorkload: number;
}

export interface SnapshotFacts {
  id: string;
  namespace: string;
  containerId: string;
  /** Logical bytes. */
  sizeBytes: number;
  createdAt: number;
  /** Last restore or prefetch. */
  lastUsedAt: number;
  /** Tiers holding a complete copy. */
  tiers: TierName[];
  /** Keep a copy in this tier: never demote or delete it. */
  pinned?: TierName;
  /** Being moved or restored: leave it alone this round. */
  busy?: boolean;
}

export type Action =
  | { kind: 'demote'; id: string; from: TierName; to: TierName; reason: string }
  | { kind: 'delete'; id: string; reason: string }
  /** Remove a redundant copy in a faster tier (a copy exists below). */
  | { kind: 'drop'; id: string; tier: TierName; reason: string };

/** A tier still over capacity once the round's actions are done. */
export interface Pressure { tier: TierName; usageBytes: number; capacityBytes: number }

export interface Evaluation {
  actions: Action[];
  /** Per configured tier, the bytes held once the actions are done (unconfigured tiers: 0). */
  usage: Record<TierName, number>;
  pressure: Pressure[];
}

/** The actions of the next round (P1–P10). */
export function plan(snapshots: SnapshotFacts[], cfg: PolicyConfig, now: number): Action[] {
  return evaluate(snapshots, cfg, now).actions;
}

/** plan(), with the usage it leaves behind and the tiers it could not bring under capacity. */
export function evaluate(snapshots: SnapshotFacts[], cfg: PolicyConfig, now: number): Evaluation {
  const names = cfg.tiers.map((t) => t.name);
  const last = names.length - 1;
  const facts = [...snapshots].sort((a, b) => cmp(a.id, b.id));
  for (let i = 1; i < facts.length; i++) {
    if (facts[i].id === facts[i - 1].id) throw new Error(`storage policy: two snapshots with id ${facts[i].id}`);
  }
  // The configured tiers holding each snapshot as this round's actions leave them, and their usage.
  const copies = new Map(facts.map((s) => [s.id, new Set(s.tiers.filter((t) => names.includes(t)))]));
  const usage: Record<TierName, number> = { ram: 0, disk: 0, s3: 0 };
  for (const s of facts) for (const t of copies.get(s.id)!) usage[t] += s.sizeBytes;
  const actions: Action[] = [];
  const acted = new Set<string>();
  const free = (s: SnapshotFacts): boolean => !s.busy && !acted.has(s.id);

  /** P7: the copy of `s` in names[i] leaves it (never the last tier; callers check). */
  const leave = (s: SnapshotFacts, i: number, reason: string): void => {
    const held = copies.get(s.id)!;
    const from = names[i];
    held.delete(from);
    usage[from] -= s.sizeBytes;
    acted.add(s.id);
    if (names.slice(i + 1).some((t) => held.has(t))) {
      actions.push({ kind: 'drop', id: s.id, tier: from, reason: `${reason}; a copy exists below` });
      return;
    }
    const to = names[i + 1];
    held.add(to);
    usage[to] += s.sizeBytes;
    actions.push({ kind: 'demote', id: s.id, from, to, reason });
  };

  // P4: retention.
  if (cfg.keepPerWorkload > 0) {
    const workloads = new Map<string, SnapshotFacts[]>();
    for (const s of facts) {
      const key = `${s.namespace}\0${s.containerId}`;
      const list = workloads.get(key);
      if (list) list.push(s);
      else workloads.set(key, [s]);
    }
    const doomed = new Map<string, string>();
    for (const list of workloads.values()) {
      list.sort((a, b) => b.createdAt - a.createdAt || cmp(a.id, b.id));
      list.forEach((s, rank) => {
        if (rank >= cfg.keepPerWorkload && s.pinned === undefined) {
          const what = `${ordinal(rank + 1)} newest of ${s.namespace}/${s.containerId}`;
          doomed.set(s.id, `retention: ${what}, keeping ${cfg.keepPerWorkload}`);
        }
      });
    }
    for (const s of facts) {
      const reason = doomed.get(s.id);
      if (reason === undefined || !free(s)) continue;
      for (const t of copies.get(s.id)!) usage[t] -= s.sizeBytes;
      copies.get(s.id)!.clear();
      acted.add(s.id);
      actions.push({ kind: 'delete', id: s.id, reason });
    }
  }

  // P5: age.
  for (const s of facts) {
    if (!free(s)) continue;
    const idle = now - s.lastUsedAt;
    const i = cfg.tiers.findIndex((t, i) =>
      i < last && copies.get(s.id)!.has(t.name) && s.pinned !== t.name && t.demoteAfterMs !== undefined && idle > t.demoteAfterMs);
    if (i >= 0) leave(s, i, `idle ${idle} ms > ${names[i]} demoteAfter ${cfg.tiers[i].demoteAfterMs} ms`);
  }

  // P6: capacity, fastest tier first, so that what it pushes down counts in the tiers below.
  const pressure: Pressure[] = [];
  cfg.tiers.forEach((tier, i) => {
    if (i < last && usage[tier.name] > tier.capacityBytes) {
      const candidates = facts
        .filter((s) => free(s) && copies.get(s.id)!.has(tier.name) && s.pinned !== tier.name)
        .sort((a, b) => a.lastUsedAt - b.lastUsedAt || a.createdAt - b.createdAt || cmp(a.id, b.id));
      for (const s of candidates) {
        if (usage[tier.name] <= tier.capacityBytes) break;
        leave(s, i, `${tier.name} over capacity (${usage[tier.name]} > ${tier.capacityBytes} bytes): least recently used`);
      }
    }
    if (usage[tier.name] > tier.capacityBytes) {
      pressure.push({ tier: tier.name, usageBytes: usage[tier.name], capacityBytes: tier.capacityBytes });
    }
  });
  return { actions, usage, pressure };
}

/** Where a new snapshot of `sizeBytes` goes (P11). */
export function placement(
  sizeBytes: number, usage: Record<TierName, number>, cfg: PolicyConfig, asked?: TierName,
): { tier: TierName } | { error: string } {
  const fits = (t: TierPolicy): boolean => (usage[t.name] ?? 0) + sizeBytes <= t.capacityBytes;
  if (asked !== undefined) {
    const t = cfg.tiers.find((x) => x.name === asked);
    if (t === undefined) return { error: `tier ${asked} is not configured (configured: ${cfg.tiers.map((x) => x.name).join(', ') || 'none'})` };
    if (fits(t)) return { tier: asked };
    return { error: `tier ${asked} has no room for ${sizeBytes} bytes (${room(t, usage)})` };
  }
  const t = cfg.tiers.find(fits);
  if (t !== undefined) return { tier: t.name };
  return { error: `no tier has room for ${sizeBytes} bytes (${cfg.tiers.map((x) => `${x.name}: ${room(x, usage)}`).join('; ') || 'no tiers configured'})` };
}

/** Where a snapshot being restored is promoted to, or undefined to restore from where it is (P12). */
export function promotionTarget(s: SnapshotFacts, usage: Record<TierName, number>, cfg: PolicyConfig): TierName | undefined {
  const fastest = cfg.tiers.findIndex((t) => s.tiers.includes(t.name));
  return cfg.tiers.slice(0, Math.max(fastest, 0)).find((t) => (usage[t.name] ?? 0) + s.sizeBytes <= t.capacityBytes)?.name;
}

function room(t: TierPolicy, usage: Record<TierName, number>): string {
  return `${Math.max(0, t.capacityBytes - (usage[t.name] ?? 0))} of ${t.capacityBytes} bytes free`;
}

/** Code-unit order, the same on every machine (localeCompare is not). */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function ordinal(n: number): string {
  const suffix = n % 100 >= 11 && n % 100 <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th';
  return `${n}${suffix}`;
}
