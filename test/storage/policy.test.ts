// The HSM policy (src/storage/policy.ts): each invariant P1–P12 of its header on a simulated clock, and a
// run of 3 workloads over simulated days where every round's actions are applied and planned again until
// the plan is empty: it converges, never leaves a snapshot without a copy, and leaves pinned copies alone.
import { describe, expect, it } from 'vitest';
import {
  evaluate, placement, plan, promotionTarget,
  type Action, type PolicyConfig, type SnapshotFacts, type TierName,
} from '../../src/storage/policy';

const MIN = 60_000;
const HOUR = 60 * MIN;
const ORDER: TierName[] = ['ram', 'disk', 's3'];

const cfg = (over: Partial<PolicyConfig> = {}): PolicyConfig => ({
  tiers: [
    { name: 'ram', capacityBytes: 100, demoteAfterMs: 10 * MIN },
    { name: 'disk', capacityBytes: 300, demoteAfterMs: 24 * HOUR },
    { name: 's3', capacityBytes: Infinity },
  ],
  keepPerWorkload: 0,
  ...over,
});

const snap = (id: string, over: Partial<SnapshotFacts> = {}): SnapshotFacts =>
  ({ id, namespace: 'default', containerId: 'web', sizeBytes: 10, createdAt: 0, lastUsedAt: 0, tiers: ['ram'], ...over });

/** The facts once `actions` are done; every action must name a snapshot, and a copy, that exist (P3). */
function apply(facts: SnapshotFacts[], actions: Action[]): SnapshotFacts[] {
  const byId = new Map(facts.map((s) => [s.id, { ...s, tiers: [...s.tiers] }]));
  for (const a of actions) {
    const s = byId.get(a.id);
    expect(s, `${a.kind} of unknown ${a.id}`).toBeDefined();
    if (a.kind === 'delete') { byId.delete(a.id); continue; }
    const from = a.kind === 'drop' ? a.tier : a.from;
    expect(s!.tiers, `${a.kind} ${a.id}`).toContain(from);
    s!.tiers = s!.tiers.filter((t) => t !== from);
    if (a.kind === 'demote' && !s!.tiers.includes(a.to)) s!.tiers.push(a.to);
    s!.tiers.sort((x, y) => ORDER.indexOf(x) - ORDER.indexOf(y));
  }
  return [...byId.values()];
}

/** The invariants every round must keep, whatever the facts. */
function checkRound(facts: SnapshotFacts[], actions: Action[], c: PolicyConfig): void {
  const ids = actions.map((a) => a.id);
  expect(new Set(ids).size, 'one action per snapshot (P3)').toBe(ids.length);
  const after = new Map(apply(facts, actions).map((s) => [s.id, s]));
  const names = c.tiers.map((t) => t.name);
  for (const s of facts) {
    const a = actions.find((x) => x.id === s.id);
    if (s.busy) expect(a, `busy ${s.id} untouched (P2)`).toBeUndefined();
    if (s.pinned) expect(a?.kind, `pinned ${s.id} not deleted (P8)`).not.toBe('delete');
    if (s.pinned && s.tiers.includes(s.pinned)) expect(after.get(s.id)?.tiers, `pinned copy of ${s.id} stays (P8)`).toContain(s.pinned);
    if (a?.kind === 'demote') expect(names.indexOf(a.to), 'next configured tier (P7)').toBe(names.indexOf(a.from) + 1);
    if (a && a.kind !== 'delete' && s.tiers.some((t) => names.includes(t))) {
      expect(after.get(s.id)!.tiers.some((t) => names.includes(t)), `${s.id} keeps a copy (P7)`).toBe(true);
    }
  }
}

/** Plans and applies until the plan is empty; the rounds it took. */
function settle(facts: SnapshotFacts[], c: PolicyConfig, now: number): { facts: SnapshotFacts[]; rounds: number } {
  for (let rounds = 0; rounds < 50; rounds++) {
    const actions = plan(facts, c, now);
    if (actions.length === 0) return { facts, rounds };
    checkRound(facts, actions, c);
    facts = apply(facts, actions);
  }
  throw new Error('no convergence in 50 rounds');
}

const usageOf = (facts: SnapshotFacts[]): Record<TierName, number> => {
  const u: Record<TierName, number> = { ram: 0, disk: 0, s3: 0 };
  for (const s of facts) for (const t of s.tiers) u[t] += s.sizeBytes;
  return u;
};

describe('retention (P4)', () => {
  it('keeps the newest N per workload by createdAt, ties by id, and deletes the rest', () => {
    const facts = [
      snap('a1', { createdAt: 1 }), snap('a2', { createdAt: 2 }), snap('a3', { createdAt: 3 }), snap('a4', { createdAt: 3 }),
      snap('b1', { containerId: 'db', createdAt: 1 }), snap('c1', { namespace: 'other', createdAt: 0 }),
    ];
    const actions = plan(facts, cfg({ keepPerWorkload: 2 }), 0);
    expect(actions).toEqual([
      { kind: 'delete', id: 'a1', reason: 'retention: 4th newest of default/web, keeping 2' },
      { kind: 'delete', id: 'a2', reason: 'retention: 3rd newest of default/web, keeping 2' },
    ]);
  });

  it('never deletes a pinned snapshot (kept beyond the N) nor the newest; 0 keeps all', () => {
    const facts = [snap('old', { createdAt: 1, pinned: 'disk', tiers: ['disk'] }), snap('mid', { createdAt: 2 }), snap('new', { createdAt: 3 })];
    expect(plan(facts, cfg({ keepPerWorkload: 1 }), 0).map((a) => [a.kind, a.id])).toEqual([['delete', 'mid']]);
    const pinnedNewest = [snap('x', { createdAt: 1 }), snap('y', { createdAt: 2, pinned: 'ram' })];
    expect(plan(pinnedNewest, cfg({ keepPerWorkload: 1 }), 0).map((a) => a.id)).toEqual(['x']);
    expect(plan(facts, cfg({ keepPerWorkload: 0 }), 0)).toEqual([]);
  });

  it('leaves a busy snapshot past the N for a later round (P2), and its bytes still count', () => {
    const facts = [snap('a', { createdAt: 1, busy: true, sizeBytes: 95 }), snap('b', { createdAt: 2, sizeBytes: 10 })];
    const e = evaluate(facts, cfg({ keepPerWorkload: 1 }), 0);
    expect(e.actions).toEqual([{ kind: 'demote', id: 'b', from: 'ram', to: 'disk', reason: expect.stringContaining('ram over capacity') }]);
    expect(plan([{ ...facts[0], busy: false }, facts[1]], cfg({ keepPerWorkload: 1 }), 0).map((a) => [a.kind, a.id])).toEqual([['delete', 'a']]);
  });
});

describe('age (P5)', () => {
  it('moves a copy idle longer than its tier\'s demoteAfterMs one tier down, one tier per round', () => {
    const s = snap('a', { lastUsedAt: 0 });
    expect(plan([s], cfg(), 10 * MIN), 'exactly demoteAfter: not yet').toEqual([]);
    expect(plan([s], cfg(), 10 * MIN + 1)).toEqual([{ kind: 'demote', id: 'a', from: 'ram', to: 'disk', reason: 'idle 600001 ms > ram demoteAfter 600000 ms' }]);
    const { facts, rounds } = settle([s], cfg(), 25 * HOUR);
    expect([facts[0].tiers, rounds]).toEqual([['s3'], 2]);
  });

  it('never moves the last tier, a tier without demoteAfterMs or a busy snapshot, and targets the next configured tier', () => {
    expect(plan([snap('a', { tiers: ['s3'] })], cfg(), 1e12)).toEqual([]);
    expect(plan([snap('a', { busy: true })], cfg(), 1e12), 'busy (P2)').toEqual([]);
    const noAge = cfg({ tiers: [{ name: 'ram', capacityBytes: 100 }, { name: 's3', capacityBytes: Infinity }] });
    expect(plan([snap('a')], noAge, 1e12)).toEqual([]);
    const skipDisk = cfg({ tiers: [{ name: 'ram', capacityBytes: 100, demoteAfterMs: 1 }, { name: 's3', capacityBytes: Infinity }] });
    expect(plan([snap('a')], skipDisk, 2)).toMatchObject([{ kind: 'demote', from: 'ram', to: 's3' }]);
  });

  it('drops a copy when one exists below instead of moving it (P7), fastest aged copy first', () => {
    expect(plan([snap('a', { tiers: ['ram', 'disk'] })], cfg(), HOUR)).toMatchObject([{ kind: 'drop', id: 'a', tier: 'ram' }]);
    expect(plan([snap('a', { tiers: ['ram', 's3'] })], cfg(), HOUR)).toMatchObject([{ kind: 'drop', id: 'a', tier: 'ram' }]);
    expect(settle([snap('a', { tiers: ['ram', 'disk'] })], cfg(), 48 * HOUR).facts[0].tiers).toEqual(['s3']);
  });

  it('keeps the pinned copy and moves the others (P8)', () => {
    expect(plan([snap('a', { pinned: 'ram' })], cfg(), 48 * HOUR)).toEqual([]);
    const { facts } = settle([snap('a', { pinned: 'disk', tiers: ['ram', 'disk'] })], cfg(), 48 * HOUR);
    expect(facts[0].tiers).toEqual(['disk']);
  });

  it('ignores copies in tiers that are not configured (P1)', () => {
    const ramOnly = cfg({ tiers: [{ name: 'ram', capacityBytes: 5, demoteAfterMs: 1 }] });
    const e = evaluate([snap('a', { tiers: ['ram', 'disk'] }), snap('b', { tiers: ['s3'] })], ramOnly, HOUR);
    expect(e.actions).toEqual([]);
    expect(e.usage).toEqual({ ram: 10, disk: 0, s3: 0 });
    expect(e.pressure).toEqual([{ tier: 'ram', usageBytes: 10, capacityBytes: 5 }]);
  });
});

describe('capacity (P6)', () => {
  it('demotes the least recently used (then oldest, then id) until the tier fits', () => {
    const facts = ['a', 'b', 'c', 'd', 'e'].map((id, i) => snap(id, { sizeBytes: 30, lastUsedAt: [5, 1, 1, 9, 3][i], createdAt: [0, 2, 2, 0, 0][i] }));
    expect(plan(facts, cfg(), 10).map((a) => a.id)).toEqual(['b', 'c']);
    expect(plan(facts.map((s) => (s.id === 'b' ? { ...s, id: 'z' } : s)), cfg(), 10).map((a) => a.id)).toEqual(['c', 'z']);
  });

  it('counts the moves it plans: what RAM pushes down can overflow disk, which then frees its own LRU', () => {
    const facts = [
      snap('hot', { sizeBytes: 80, lastUsedAt: 9 }), snap('warm', { sizeBytes: 80, lastUsedAt: 8 }),
      snap('cold', { sizeBytes: 250, lastUsedAt: 1, tiers: ['disk'] }),
    ];
    const e = evaluate(facts, cfg(), 10);
    expect(e.actions.map((a) => a.kind === 'demote' && `${a.id}:${a.from}>${a.to}`)).toEqual(['warm:ram>disk', 'cold:disk>s3']);
    expect(e.usage).toEqual({ ram: 80, disk: 80, s3: 250 });
    expect(e.pressure).toEqual([]);
  });

  it('only reports the last tier\'s excess, and a tier whose copies are all pinned or busy', () => {
    const c = cfg({ tiers: [{ name: 'ram', capacityBytes: 10 }, { name: 'disk', capacityBytes: 15 }] });
    const e = evaluate([snap('p', { pinned: 'ram' }), snap('b', { busy: true }), snap('d', { tiers: ['disk'], sizeBytes: 20 })], c, 0);
    expect(e.actions).toEqual([]);
    expect(e.pressure).toEqual([{ tier: 'ram', usageBytes: 20, capacityBytes: 10 }, { tier: 'disk', usageBytes: 20, capacityBytes: 15 }]);
  });

  it('uses the bytes retention and age free first', () => {
    const facts = [snap('old', { createdAt: 1, sizeBytes: 60 }), snap('new', { createdAt: 2, sizeBytes: 60, lastUsedAt: 0 }), snap('idle', { containerId: 'db', sizeBytes: 30 })];
    const e = evaluate(facts.map((s) => (s.id === 'idle' ? s : { ...s, lastUsedAt: HOUR })), cfg({ keepPerWorkload: 1 }), HOUR);
    expect(e.actions.map((a) => `${a.kind}:${a.id}`)).toEqual(['delete:old', 'demote:idle']);
  });
});

describe('every round', () => {
  it('is deterministic: the same actions whatever the order of the facts (P9); duplicate ids refused', () => {
    const facts = Array.from({ length: 12 }, (_, i) => snap(`s${i}`, { containerId: `w${i % 3}`, createdAt: i % 4, lastUsedAt: i % 5, sizeBytes: 20 + i }));
    const want = plan(facts, cfg({ keepPerWorkload: 2 }), 11 * MIN);
    expect(want.length).toBeGreaterThan(3);
    for (let k = 1; k < 5; k++) expect(plan([...facts.slice(k), ...facts.slice(0, k)].reverse(), cfg({ keepPerWorkload: 2 }), 11 * MIN)).toEqual(want);
    expect(() => plan([snap('a'), snap('a')], cfg(), 0)).toThrow(/two snapshots with id a/);
  });

  it('3 workloads over two simulated days: converges, never zero copies, pinned untouched, capacities kept (P10)', () => {
    const c = cfg({ keepPerWorkload: 4 });
    c.tiers[1].capacityBytes = 120;
    let facts: SnapshotFacts[] = [];
    const seen = new Set<string>();
    const busyAt = new Map<number, string>();
    for (let step = 0, now = 0; step < 200; step++, now += 15 * MIN) {
      const w = step % 3;
      if (step % 2 === 0) { // a checkpoint of workload w
        const id = `w${w}-${String(step).padStart(3, '0')}`;
        const where = placement(15 + w * 5, usageOf(facts), c);
        expect(where).toHaveProperty('tier');
        facts.push(snap(id, { containerId: `w${w}`, sizeBytes: 15 + w * 5, createdAt: now, lastUsedAt: now, tiers: [(where as { tier: TierName }).tier] }));
        if (step === 10) facts[facts.length - 1].pinned = 'ram';
      } else { // a restore of workload w's newest: promoted where the policy says
        const mine = facts.filter((x) => x.containerId === `w${w}`).sort((a, b) => b.createdAt - a.createdAt);
        const s = mine[step % 5 === 1 ? mine.length - 1 : 0]; // now and then an old one
        const to = s && promotionTarget(s, evaluate(facts, c, now).usage, c);
        if (s) Object.assign(s, { lastUsedAt: now, tiers: to ? [...new Set([to, ...s.tiers])].sort((x, y) => ORDER.indexOf(x) - ORDER.indexOf(y)) : s.tiers });
      }
      if (step % 7 === 3 && facts.length) { facts[step % facts.length].busy = true; busyAt.set(step, facts[step % facts.length].id); }
      if (busyAt.has(step - 1)) facts.find((s) => s.id === busyAt.get(step - 1))!.busy = false;
      for (const a of plan(facts, c, now)) seen.add(a.kind);
      const settled = settle(facts, c, now);
      expect(settled.rounds).toBeLessThanOrEqual(4);
      facts = settled.facts;
      for (const s of facts) for (const t of s.tiers) seen.add(t);
      const e = evaluate(facts, c, now);
      for (const s of facts) expect(s.tiers.length, `${s.id} has a copy`).toBeGreaterThan(0);
      expect(facts.find((s) => s.id === 'w1-010')?.tiers ?? ['ram'], 'pinned copy stays').toContain('ram');
      for (const p of e.pressure) { // only what the policy may not touch keeps a tier over capacity
        const movable = facts.filter((s) => s.tiers.includes(p.tier) && !s.busy && s.pinned !== p.tier);
        expect(movable, `${p.tier} over capacity with movable copies`).toEqual([]);
      }
      for (const s of facts) if (!s.busy && s.pinned !== 'ram' && s.tiers.includes('ram')) expect(now - s.lastUsedAt).toBeLessThanOrEqual(10 * MIN);
    }
    const perWorkload = ['w0', 'w1', 'w2'].map((w) => facts.filter((s) => s.containerId === w && !s.pinned).length);
    expect(perWorkload.every((n) => n <= 4)).toBe(true);
    expect([...seen].sort()).toEqual(['delete', 'demote', 'disk', 'drop', 'ram', 's3']);
    // Three idle days later everything has cooled down to S3 but the pinned RAM copy, in a few rounds.
    const idle = settle(facts.map((s) => ({ ...s, busy: false })), c, 200 * 15 * MIN + 72 * HOUR);
    expect(idle.rounds).toBeGreaterThanOrEqual(2);
    expect(idle.facts.map((s) => s.tiers.join('+'))).toEqual(facts.map((s) => (s.pinned ? 'ram' : 's3')));
  });
});

describe('placement (P11)', () => {
  const u = (ram: number, disk = 0, s3 = 0): Record<TierName, number> => ({ ram, disk, s3 });
  it('puts a new snapshot in the fastest tier with room, or the asked one', () => {
    expect(placement(40, u(60), cfg())).toEqual({ tier: 'ram' });
    expect(placement(41, u(60), cfg())).toEqual({ tier: 'disk' });
    expect(placement(10 ** 15, u(60, 300), cfg())).toEqual({ tier: 's3' });
    expect(placement(40, u(0), cfg(), 'disk')).toEqual({ tier: 'disk' });
  });
  it('gives a reason when the asked tier is full or not configured, or no tier has room', () => {
    expect(placement(41, u(60), cfg(), 'ram')).toEqual({ error: 'tier ram has no room for 41 bytes (40 of 100 bytes free)' });
    const noS3 = cfg({ tiers: cfg().tiers.slice(0, 2) });
    expect(placement(1, u(0), noS3, 's3')).toEqual({ error: 'tier s3 is not configured (configured: ram, disk)' });
    expect(placement(500, u(0, 10), noS3)).toEqual({ error: 'no tier has room for 500 bytes (ram: 100 of 100 bytes free; disk: 290 of 300 bytes free)' });
  });
});

describe('promotionTarget (P12)', () => {
  const u = (ram: number, disk = 0): Record<TierName, number> => ({ ram, disk, s3: 0 });
  it('is the fastest tier above the snapshot\'s fastest copy with room, else undefined', () => {
    expect(promotionTarget(snap('a', { tiers: ['s3'], sizeBytes: 50 }), u(50), cfg())).toBe('ram');
    expect(promotionTarget(snap('a', { tiers: ['s3'], sizeBytes: 51 }), u(50), cfg())).toBe('disk');
    expect(promotionTarget(snap('a', { tiers: ['disk', 's3'], sizeBytes: 51 }), u(50), cfg())).toBeUndefined();
    expect(promotionTarget(snap('a', { tiers: ['ram', 's3'] }), u(0), cfg())).toBeUndefined();
    expect(promotionTarget(snap('a', { tiers: [] }), u(0), cfg())).toBeUndefined();
  });
  it('sees the room the round\'s actions make (usage from evaluate)', () => {
    const facts = [snap('idle', { sizeBytes: 90 }), snap('b', { tiers: ['s3'], sizeBytes: 60 })];
    expect(promotionTarget(facts[1], usageOf(facts), cfg())).toBe('disk');
    expect(promotionTarget(facts[1], evaluate(facts, cfg(), HOUR).usage, cfg())).toBe('ram');
  });
});
