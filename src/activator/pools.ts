// Pooled HTTP/1.1 connections to the workloads: one undici Pool per upstream "host:port".
//
// Invariants: drain() takes the pool out of the map before it closes it, so a request that arrives while a
// workload is being drained gets a fresh pool (fresh connections) and never one that is closing; when
// drain() resolves, every connection to the upstream that existed when it was called, or that an earlier
// drain() was still closing, is closed on our side (undici waits for each socket's 'close'), so none of
// ours is open inside the workload when CRIU dumps it. After close(), get() throws.
import { Pool } from 'undici';
import { KybernateError } from '../errors';

const DEFAULT_CONNECTIONS = 128;
const DEFAULT_DRAIN_GRACE_MS = 5_000;
/**
 * Idle keep-alive connections are closed after this long, unless the upstream's Keep-Alive header says
 * less (undici takes the smaller). Below node's 5 s server default, so we close first and never send a
 * request onto a socket the upstream is closing.
 */
const DEFAULT_KEEP_ALIVE_MS = 4_000;

export class UpstreamPools {
  private readonly pools = new Map<string, Pool>();
  /** Pools being closed, by upstream: a second drain() waits for the first. */
  private readonly draining = new Map<string, Promise<void>>();
  private readonly connections: number;
  private readonly keepAliveTimeoutMs: number;
  private closed = false;

  constructor(opts: { connections?: number; keepAliveTimeoutMs?: number } = {}) {
    this.connections = opts.connections ?? DEFAULT_CONNECTIONS;
    this.keepAliveTimeoutMs = opts.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_MS;
  }

  /** The pool for `upstream` ("host:port" or "[v6]:port"), created on first use. */
  get(upstream: string): Pool {
    let pool = this.pools.get(upstream);
    if (pool === undefined) {
      if (this.closed) throw new KybernateError('KYB_ERR_UNAVAILABLE', 'the activator is shutting down');
      // pipelining 1: one request at a time per connection (a slow response never holds up another);
      // undici disables Nagle on its sockets itself.
      pool = new Pool(`http://${upstream}`, {
        connections: this.connections,
        pipelining: 1,
        keepAliveTimeout: this.keepAliveTimeoutMs,
      });
      this.pools.set(upstream, pool);
    }
    return pool;
  }

  /**
   * Closes every connection to `upstream`: requests in flight finish (up to graceMs, then they are
   * destroyed, failing with an upstream error); the next get() makes a fresh pool.
   */
  async drain(upstream: string, graceMs = DEFAULT_DRAIN_GRACE_MS): Promise<void> {
    const before = this.draining.get(upstream);
    const pool = this.pools.get(upstream);
    if (pool === undefined) return before; // a drain under way still counts: wait for it
    this.pools.delete(upstream);
    const done: Promise<void> = Promise.all([before, closeWithin(pool, graceMs)]).then(() => {
      if (this.draining.get(upstream) === done) this.draining.delete(upstream);
    });
    this.draining.set(upstream, done);
    return done;
  }

  /** Drains every upstream; get() refuses from now on. Idempotent. */
  async close(graceMs = DEFAULT_DRAIN_GRACE_MS): Promise<void> {
    this.closed = true;
    const upstreams = new Set([...this.pools.keys(), ...this.draining.keys()]);
    await Promise.all([...upstreams].map((u) => this.drain(u, graceMs)));
  }
}

/** pool.close() (graceful) racing a timer that turns it into pool.destroy(). */
async function closeWithin(pool: Pool, graceMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const destroyed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      const err = new KybernateError('KYB_ERR_UNAVAILABLE', `upstream connections closed: the request did not finish within ${graceMs} ms of a drain`);
      pool.destroy(err).then(resolve, resolve);
    }, graceMs);
  });
  try {
    // close() fails only if the pool was destroyed meanwhile: closed all the same.
    await Promise.race([pool.close().catch(() => undefined), destroyed]);
  } finally {
    clearTimeout(timer);
  }
}
