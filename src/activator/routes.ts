// Routes: which workload answers a request (by Host and path prefix), where it listens, and how it sleeps
// and wakes. parseRoutes validates the config file's "routes" (every value checked, unknown keys refused,
// so a typo never silently becomes a default); RouteTable picks the route of a request.
import net from 'node:net';
import { parseHostPort } from '../hostport';

export type SleepKind = 'suspend' | 'checkpoint' | 'never';

export interface RouteConfig {
  name: string;
  /** Lower-case host name without port; '*' matches any. */
  host: string;
  /** Starts with '/'; the longest matching prefix wins, then an exact host over '*'. */
  pathPrefix: string;
  workload: { namespace: string; id: string };
  /** HOST:PORT of the workload's server. */
  upstream: string;
  sleep: { kind: SleepKind; idleMs: number; minRunMs: number; graceMs: number };
  probe: { http?: string; intervalMs: number; timeoutMs: number };
  limits: { queue: number; waitMs: number; responseStartMs: number };
  /** Consecutive failed wakes after which the workload is marked failed (refused at once, not woken). */
  failAfter: number;
}

export const ROUTE_DEFAULTS = {
  host: '*',
  pathPrefix: '/',
  sleep: { kind: 'checkpoint' as SleepKind, idleMs: 300_000, minRunMs: 30_000, graceMs: 2_000 },
  probe: { http: undefined as string | undefined, intervalMs: 10, timeoutMs: 60_000 },
  limits: { queue: 1000, waitMs: 60_000, responseStartMs: 60_000 },
  failAfter: 3,
};

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;
const ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,75}$/;
const HOST = /^(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*)$/;

export function parseRoutes(raw: unknown): RouteConfig[] {
  if (!Array.isArray(raw)) throw new Error('"routes" must be a list');
  const routes = raw.map((r, i) => parseRoute(r, `routes[${i}]`));
  const names = new Set<string>();
  const places = new Set<string>();
  for (const r of routes) {
    if (names.has(r.name)) throw new Error(`two routes are named ${r.name}`);
    names.add(r.name);
    const place = `${r.host} ${r.pathPrefix}`;
    if (places.has(place)) throw new Error(`two routes for host ${r.host} and path prefix ${r.pathPrefix}`);
    places.add(place);
  }
  return routes;
}

function parseRoute(raw: unknown, at: string): RouteConfig {
  const o = object(raw, at, ['name', 'host', 'pathPrefix', 'workload', 'upstream', 'sleep', 'probe', 'limits', 'failAfter']);
  const name = str(o.name, `${at}.name`);
  if (!NAME.test(name)) throw new Error(`${at}.name ${JSON.stringify(name)}: letters, digits, _ . - (at most 63)`);
  const where = `route ${name}`;
  const host = o.host === undefined ? ROUTE_DEFAULTS.host : str(o.host, `${where}: host`).toLowerCase();
  if (!HOST.test(host)) throw new Error(`${where}: host ${JSON.stringify(host)} is not a host name (without port) or "*"`);
  const pathPrefix = o.pathPrefix === undefined ? ROUTE_DEFAULTS.pathPrefix : str(o.pathPrefix, `${where}: pathPrefix`);
  if (!pathPrefix.startsWith('/') || /[\s?#]/.test(pathPrefix)) throw new Error(`${where}: pathPrefix must start with / and hold no spaces, ? or #`);
  const w = object(o.workload, `${where}: workload`, ['namespace', 'id']);
  const workload = { namespace: w.namespace === undefined ? 'default' : str(w.namespace, `${where}: workload.namespace`), id: str(w.id, `${where}: workload.id`) };
  for (const [k, v] of Object.entries(workload)) if (!ID.test(v)) throw new Error(`${where}: workload.${k} ${JSON.stringify(v)} is not a containerd name`);
  const upstream = str(o.upstream, `${where}: upstream`);
  const hp = parseHostPort(upstream);
  if (!hp || hp.port === 0 || !(net.isIP(hp.host) || HOST.test(hp.host))) throw new Error(`${where}: upstream must be HOST:PORT, not ${JSON.stringify(upstream)}`);

  const s = object(o.sleep ?? {}, `${where}: sleep`, ['kind', 'idleMs', 'minRunMs', 'graceMs']);
  const kind = s.kind === undefined ? ROUTE_DEFAULTS.sleep.kind : str(s.kind, `${where}: sleep.kind`);
  if (kind !== 'suspend' && kind !== 'checkpoint' && kind !== 'never') throw new Error(`${where}: sleep.kind must be suspend, checkpoint or never, not ${JSON.stringify(kind)}`);
  const d = ROUTE_DEFAULTS;
  const sleep = {
    kind: kind as SleepKind,
    idleMs: ms(s.idleMs, d.sleep.idleMs, `${where}: sleep.idleMs`, 1),
    minRunMs: ms(s.minRunMs, d.sleep.minRunMs, `${where}: sleep.minRunMs`, 0),
    graceMs: ms(s.graceMs, d.sleep.graceMs, `${where}: sleep.graceMs`, 0),
  };
  const p = object(o.probe ?? {}, `${where}: probe`, ['http', 'tcp', 'intervalMs', 'timeoutMs']);
  if (p.http !== undefined && p.tcp !== undefined) throw new Error(`${where}: probe is either http (a path) or tcp (true), not both`);
  if (p.tcp !== undefined && p.tcp !== true) throw new Error(`${where}: probe.tcp can only be true (the default: a TCP connect)`);
  const http = p.http === undefined ? undefined : str(p.http, `${where}: probe.http`);
  if (http !== undefined && !http.startsWith('/')) throw new Error(`${where}: probe.http must be a path starting with /`);
  const probe = { http, intervalMs: ms(p.intervalMs, d.probe.intervalMs, `${where}: probe.intervalMs`, 1), timeoutMs: ms(p.timeoutMs, d.probe.timeoutMs, `${where}: probe.timeoutMs`, 1) };
  const l = object(o.limits ?? {}, `${where}: limits`, ['queue', 'waitMs', 'responseStartMs']);
  const limits = {
    queue: int(l.queue, d.limits.queue, `${where}: limits.queue`, 0),
    waitMs: ms(l.waitMs, d.limits.waitMs, `${where}: limits.waitMs`, 1),
    responseStartMs: ms(l.responseStartMs, d.limits.responseStartMs, `${where}: limits.responseStartMs`, 1),
  };
  return { name, host, pathPrefix, workload, upstream, sleep, probe, limits, failAfter: int(o.failAfter, d.failAfter, `${where}: failAfter`, 1) };
}

function object(v: unknown, at: string, keys: string[]): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${at} must be an object`);
  for (const k of Object.keys(v)) {
    if (!k.startsWith('//') && !keys.includes(k)) throw new Error(`${at}: unknown key ${JSON.stringify(k)} (the keys are ${keys.join(', ')})`);
  }
  return v as Record<string, unknown>;
}

function str(v: unknown, at: string): string {
  if (typeof v !== 'string' || v === '') throw new Error(`${at} must be a non-empty string`);
  return v;
}

function int(v: unknown, def: number, at: string, min: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new Error(`${at} must be a whole number >= ${min}`);
  return v;
}

/** Milliseconds: a whole number, at most 24 days (setTimeout's limit). */
function ms(v: unknown, def: number, at: string, min: number): number {
  const n = int(v, def, at, min);
  if (n > 2 ** 31 - 1) throw new Error(`${at} must be at most ${2 ** 31 - 1} ms`);
  return n;
}

/** Matches requests to routes; built once per route set, so matching allocates nothing. */
export class RouteTable<T extends { route: RouteConfig }> {
  /** Longest prefix first; for equal prefixes an exact host before '*'. */
  private readonly entries: T[];

  constructor(entries: Iterable<T>) {
    this.entries = [...entries].sort((a, b) =>
      b.route.pathPrefix.length - a.route.pathPrefix.length || Number(a.route.host === '*') - Number(b.route.host === '*'));
  }

  /** `hostHeader` as the client sent it (Host or :authority, maybe with a port); `path` the request target. */
  match(hostHeader: string | undefined, path: string): T | undefined {
    const host = hostOnly(hostHeader);
    for (const e of this.entries) {
      const r = e.route;
      if (r.host !== '*' && r.host !== host) continue;
      if (prefixMatches(r.pathPrefix, path)) return e;
    }
    return undefined;
  }

  get size(): number {
    return this.entries.length;
  }
}

/** '/api' matches /api, /api/x and /api?q, not /apix; '/' and prefixes ending in '/' match plainly. */
function prefixMatches(prefix: string, path: string): boolean {
  if (!path.startsWith(prefix)) return false;
  if (prefix.endsWith('/') || path.length === prefix.length) return true;
  const next = path.charCodeAt(prefix.length);
  return next === 47 /* / */ || next === 63 /* ? */;
}

function hostOnly(h: string | undefined): string {
  if (!h) return '';
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1).toLowerCase();
  const colon = h.indexOf(':');
  return (colon === -1 ? h : h.slice(0, colon)).toLowerCase();
}
