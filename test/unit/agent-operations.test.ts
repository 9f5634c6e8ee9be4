// The agent's operation queue (src/agent/operations.ts) on its own: arrival order per workload, parallel
// workloads, a waiter that cancels is dropped before it runs, a started operation outlives its caller,
// request ids joined and remembered within their limits.
import { describe, expect, it } from 'vitest';
import { KybernateError } from '../../src/errors';
import { Operations, type OperationKind, type OperationOutcome } from '../../src/agent/operations';

/** A run() that ends when the test says so. */
function gate<T>(value: T): { run: () => Promise<T>; open(): void; started: boolean } {
  let open!: () => void;
  const opened = new Promise<void>((r) => { open = r; });
  const g = { started: false, open, run: async () => { g.started = true; await opened; return value; } };
  return g;
}

function queue(limits?: { entries: number; ttlMs: number }) {
  const log: string[] = [];
  const ops = new Operations({
    started: (kind: OperationKind, _ns: string, id: string) => log.push(`start ${kind} ${id}`),
    done: (kind: OperationKind, _ns: string, id: string, o: OperationOutcome) => log.push(`done ${kind} ${id} ${o.ok ? 'ok' : o.code}`),
  }, limits);
  return { ops, log };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('agent operations queue', () => {
  it('runs a workload\'s operations one after the other in arrival order, other workloads alongside', async () => {
    const { ops, log } = queue();
    const a = gate('a');
    const b = gate('b');
    const c = gate('c');
    const pa = ops.run({ kind: 'suspend', namespace: 'n', id: 'w', run: a.run });
    const pb = ops.run({ kind: 'resume', namespace: 'n', id: 'w', run: b.run });
    const pc = ops.run({ kind: 'suspend', namespace: 'n', id: 'other', run: c.run });
    await tick();
    expect([a.started, b.started, c.started]).toEqual([true, false, true]);
    expect(ops.current('n', 'w')).toBe('suspend');
    a.open();
    expect(await pa).toBe('a');
    await tick();
    expect(b.started).toBe(true);
    b.open();
    c.open();
    expect(await Promise.all([pb, pc])).toEqual(['b', 'c']);
    expect(log.filter((l) => l.endsWith(' w') || l.includes(' w '))).toEqual(['start suspend w', 'done suspend w ok', 'start resume w', 'done resume w ok']);
    expect(ops.current('n', 'w')).toBeUndefined();
  });

  it('drops a waiter that cancels before its turn; a started operation runs to its end without its caller', async () => {
    const { ops, log } = queue();
    const a = gate('a');
    const b = gate('b');
    const first = new AbortController();
    const pa = ops.run({ kind: 'suspend', namespace: 'n', id: 'w', run: a.run, signal: first.signal });
    const second = new AbortController();
    const pb = ops.run({ kind: 'resume', namespace: 'n', id: 'w', run: b.run, signal: second.signal });
    second.abort(new KybernateError('KYB_ERR_DEADLINE', 'deadline'));
    await expect(pb).rejects.toMatchObject({ code: 'KYB_ERR_DEADLINE' });
    first.abort(new KybernateError('KYB_ERR_CANCELLED', 'gone'));
    await expect(pa).rejects.toMatchObject({ code: 'KYB_ERR_CANCELLED' });
    expect(ops.current('n', 'w')).toBe('suspend');
    a.open();
    await tick();
    expect(b.started).toBe(false);
    expect(log).toEqual(['start suspend w', 'done suspend w ok']);
  });

  it('a request id joins the operation in flight, returns its result afterwards, failures included, and names one operation', async () => {
    const { ops } = queue();
    const a = gate('a');
    let runs = 0;
    const run = () => { runs++; return a.run(); };
    const p1 = ops.run({ kind: 'suspend', namespace: 'n', id: 'w', requestId: 'r', run });
    const p2 = ops.run({ kind: 'suspend', namespace: 'n', id: 'w', requestId: 'r', run });
    a.open();
    expect(await Promise.all([p1, p2])).toEqual(['a', 'a']);
    expect(await ops.run({ kind: 'suspend', namespace: 'n', id: 'w', requestId: 'r', run })).toBe('a');
    expect(runs).toBe(1);
    const boom = () => Promise.reject(new KybernateError('KYB_ERR_FAILED_PRECONDITION', 'no'));
    await expect(ops.run({ kind: 'resume', namespace: 'n', id: 'w', requestId: 'f', run: boom })).rejects.toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION' });
    await expect(ops.run({ kind: 'resume', namespace: 'n', id: 'w', requestId: 'f', run })).rejects.toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION' });
    expect(runs).toBe(1);
    await expect(ops.run({ kind: 'resume', namespace: 'n', id: 'w', requestId: 'r', run })).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
    await expect(ops.run({ kind: 'suspend', namespace: 'n', id: 'x', requestId: 'r', run })).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
  });

  it('remembers at most `entries` ended request ids, for at most `ttlMs`', async () => {
    const { ops } = queue({ entries: 2, ttlMs: 60_000 });
    let runs = 0;
    const run = async () => ++runs;
    for (const r of ['r1', 'r2', 'r3']) await ops.run({ kind: 'suspend', namespace: 'n', id: 'w', requestId: r, run });
    expect(await ops.run({ kind: 'suspend', namespace: 'n', id: 'w', requestId: 'r3', run })).toBe(3);
    // r1 was the oldest of three with room for two: forgotten, so it runs again.
    expect(await ops.run({ kind: 'suspend', namespace: 'n', id: 'w', requestId: 'r1', run })).toBe(4);
    const quick = queue({ entries: 10, ttlMs: 0 });
    let n = 0;
    const count = async () => ++n;
    await quick.ops.run({ kind: 'suspend', namespace: 'n', id: 'w', requestId: 'r', run: count });
    await new Promise((r) => setTimeout(r, 5));
    expect(await quick.ops.run({ kind: 'suspend', namespace: 'n', id: 'w', requestId: 'r', run: count })).toBe(2);
  });
});
