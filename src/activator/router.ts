// The front's handlers: each request (or upgrade) finds its route, passes its workload's gate (at once when
// awake, held while it wakes), is forwarded, and leaves the gate when its response (or tunnel) ends. The
// route set is swapped whole on reload; a route that keeps its name and workload keeps its gate (its state,
// its held requests), so a reload never wakes or drops anything it does not have to.
import type http from 'node:http';
import type http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { FrontHandlers } from './listener';
import { Gate, Rejection, type GateDeps } from './gate';
import type { ActivatorMetrics } from './metrics';
import type { UpstreamPools } from './pools';
import { forward, reply } from './proxy';
import { RouteTable, type RouteConfig } from './routes';
import { tunnel } from './tunnel';

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

interface Entry { route: RouteConfig; gate: Gate }

/** The header that tells a client its request waited for a wake, and how long (ms). */
export const WAKE_HEADER = 'x-kybernate-wake-ms';

export class Router implements FrontHandlers {
  private table = new RouteTable<Entry>([]);
  private readonly gates = new Map<string, Gate>();

  constructor(private readonly pools: UpstreamPools, private readonly metrics: ActivatorMetrics, private readonly gateDeps: GateDeps) {}

  /** Installs a new route set (start, reload); returns what changed, for the log. */
  setRoutes(routes: RouteConfig[]): { added: string[]; changed: string[]; removed: string[] } {
    const added: string[] = [];
    const changed: string[] = [];
    const entries: Entry[] = [];
    const keep = new Set<string>();
    for (const route of routes) {
      keep.add(route.name);
      let gate = this.gates.get(route.name);
      const same = gate && sameWorkload(gate.route, route);
      if (gate && same) {
        if (JSON.stringify(gate.route) !== JSON.stringify(route)) changed.push(route.name);
        gate.update(route);
      } else {
        gate?.close();
        gate = new Gate(route, this.gateDeps);
        this.gates.set(route.name, gate);
        void gate.refresh();
        added.push(route.name);
      }
      entries.push({ route, gate });
    }
    const removed: string[] = [];
    for (const [name, gate] of this.gates) {
      if (keep.has(name)) continue;
      gate.close();
      this.gates.delete(name);
      removed.push(name);
    }
    this.table = new RouteTable(entries);
    return { added, changed, removed };
  }

  /** Asks the agent for every workload's state (start: so that a first request to a running workload is not held). */
  async refreshAll(): Promise<void> {
    await Promise.all([...this.gates.values()].map((g) => g.refresh()));
  }

  gatesInOrder(): Gate[] {
    return [...this.gates.values()];
  }

  close(): void {
    for (const g of this.gates.values()) g.close();
  }

  request = (req: Req, res: Res): void => {
    const entry = this.table.match(hostOf(req), req.url ?? '/');
    if (entry === undefined) {
      this.metrics.request('', 'no_route');
      reply(res, 404, `no route for host ${hostOf(req) ?? '(none)'} and path ${req.url}`);
      return;
    }
    if (entry.gate.tryEnter()) {
      this.forward(entry, req, res, 0);
      return;
    }
    const ac = new AbortController();
    const onClose = (): void => ac.abort();
    res.once('close', onClose);
    entry.gate.wait(ac.signal).then((waited) => {
      res.off('close', onClose);
      this.forward(entry, req, res, waited);
    }, (r: Rejection) => {
      res.off('close', onClose);
      this.metrics.request(entry.route.name, r.outcome);
      if (r.outcome !== 'client_aborted') reply(res, r.status, r.reason, { retryAfterS: r.retryAfterS });
    });
  };

  upgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const entry = this.table.match(req.headers.host, req.url ?? '/');
    if (entry === undefined) {
      this.metrics.request('', 'no_route');
      rawReply(socket, 404, `no route for host ${req.headers.host ?? '(none)'} and path ${req.url}`);
      return;
    }
    const ac = new AbortController();
    const onClose = (): void => ac.abort();
    socket.once('close', onClose);
    entry.gate.wait(ac.signal).then(() => {
      socket.off('close', onClose);
      // The gate counts the tunnel as in flight until both sides closed: an open WebSocket keeps it awake.
      return tunnel(req, socket, head, entry.route.upstream).then((r) => {
        entry.gate.leave();
        this.metrics.request(entry.route.name, r.outcome);
      });
    }, (r: Rejection) => {
      socket.off('close', onClose);
      this.metrics.request(entry.route.name, r.outcome);
      if (r.outcome !== 'client_aborted') rawReply(socket, r.status, r.reason, r.retryAfterS);
    });
  };

  private forward(entry: Entry, req: Req, res: Res, waitedMs: number): void {
    const { route, gate } = entry;
    forward(req, res, {
      upstream: route.upstream,
      pools: this.pools,
      responseStartMs: route.limits.responseStartMs,
      headers: waitedMs > 0 ? { [WAKE_HEADER]: String(waitedMs) } : undefined,
    }).then((r) => {
      gate.leave();
      this.metrics.request(route.name, r.outcome);
      if (r.outcome === 'upstream_error' || r.outcome === 'timeout') gate.upstreamFailed();
    }, () => gate.leave());
  }
}

function sameWorkload(a: RouteConfig, b: RouteConfig): boolean {
  return a.workload.namespace === b.workload.namespace && a.workload.id === b.workload.id && a.upstream === b.upstream;
}

function hostOf(req: Req): string | undefined {
  return req.headers.host ?? (req.headers[':authority'] as string | undefined);
}

const REASONS: Record<number, string> = { 404: 'Not Found', 503: 'Service Unavailable' };

/** An answer on an upgrade's raw socket (no ServerResponse exists for it), then close. */
function rawReply(socket: Duplex, status: number, reason: string, retryAfterS?: number): void {
  const body = `${reason}\n`;
  socket.end(`HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\n${retryAfterS ? `retry-after: ${retryAfterS}\r\n` : ''}connection: close\r\n\r\n${body}`);
}
