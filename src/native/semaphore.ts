// At most `limit` native calls at once, the rest waiting in FIFO order (libuv's pool keeps the other
// threads for fs and dns). A finished call hands its slot to the first waiter directly: the slot never
// goes free in between, so a caller that arrives at that moment waits its turn instead of taking the
// slot too (counting down, then up again in the woken waiter, admits one call too many).
export class Semaphore {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly limit: number) {}

  /** Calls running now. */
  get active(): number { return this.running; }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.running--;
    }
  }
}
