// The one semaphore of the native calls (libcriu, CUDA): never more than its limit at once, FIFO, and a
// released slot goes to the first waiter even when a new caller arrives in the same instant.
import { describe, expect, it } from 'vitest';
import { Semaphore } from '../../src/native/semaphore';

/** A call that runs until release() and records how many calls ran with it. */
function gated(sem: Semaphore, seen: number[], order: string[], name: string) {
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  const done = sem.run(async () => {
    order.push(name);
    seen.push(sem.active);
    await held;
  });
  return { release, done };
}

describe('Semaphore', () => {
  it('runs at most its limit at once and starts waiters in the order they came', async () => {
    const sem = new Semaphore(2);
    const seen: number[] = [];
    const order: string[] = [];
    const a = gated(sem, seen, order, 'a');
    const b = gated(sem, seen, order, 'b');
    const c = gated(sem, seen, order, 'c');
    await Promise.resolve();
    expect(order).toEqual(['a', 'b']);
    // a finishes; d, arriving after it, queues behind c.
    a.release();
    await a.done;
    const d = gated(sem, seen, order, 'd');
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(order).toEqual(['a', 'b', 'c']);
    expect(sem.active).toBe(2);
    b.release();
    await b.done;
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(order).toEqual(['a', 'b', 'c', 'd']);
    c.release();
    d.release();
    await Promise.all([c.done, d.done]);
    expect(Math.max(...seen)).toBeLessThanOrEqual(2);
    expect(sem.active).toBe(0);
  });

  it('admits no call past the limit whatever the microtask in which a new caller arrives after a release', async () => {
    // The release wakes the first waiter in a microtask; a caller arriving k microtasks after the release
    // may come before the woken waiter's first line: every k up to 8 is tried.
    for (let k = 0; k <= 8; k++) {
      const sem = new Semaphore(2);
      const seen: number[] = [];
      const order: string[] = [];
      const a = gated(sem, seen, order, 'a');
      const b = gated(sem, seen, order, 'b');
      const c = gated(sem, seen, order, 'c');
      let d: ReturnType<typeof gated> | undefined;
      const arrive = (n: number) => { if (n === 0) d = gated(sem, seen, order, 'd'); else queueMicrotask(() => arrive(n - 1)); };
      a.release();
      arrive(k);
      await a.done;
      for (let i = 0; i < 20; i++) await Promise.resolve();
      expect(sem.active, `arrival after ${k} microtasks`).toBe(2);
      expect(Math.max(...seen), `arrival after ${k} microtasks`).toBeLessThanOrEqual(2);
      expect(order.slice(0, 3), `arrival after ${k} microtasks`).toEqual(['a', 'b', 'c']);
      b.release();
      c.release();
      d!.release();
      await Promise.all([b.done, c.done, d!.done]);
      expect(sem.active).toBe(0);
    }
  });

  it('frees the slot of a call that failed', async () => {
    const sem = new Semaphore(1);
    await expect(sem.run(async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    expect(sem.active).toBe(0);
    expect(await sem.run(async () => 'next')).toBe('next');
  });
});
