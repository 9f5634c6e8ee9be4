// The activator as the tests run it: bin/kybernate-activator with a config file of the test's own (routes
// pointing at real workloads), its admin socket and front on free ports; ready once it logged `listening`.
// Also the HTTP workload (busybox httpd with an echo CGI) that runs in its own network namespace, and
// plain-HTTP helpers that open a fresh connection per request unless told otherwise.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { fetchActivatorStatus, type ActivatorStatus, type RouteStatus } from '../../src/activator-api/status';
import { REPO_ROOT } from '../e2e/support/harness';
import { waitFor } from '../e2e/support/ctr';

export const ACTIVATOR_BIN = join(REPO_ROOT, 'bin', 'kybernate-activator');

const base = mkdtempSync(join(tmpdir(), 'kyb-activator-'));
const live = new Set<ChildProcess>();
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
  rmSync(base, { recursive: true, force: true });
});

/**
 * The workload: busybox httpd on :8080 serving / ("hello") and /cgi-bin/echo, which answers
 * "<token> <query>": the token is drawn once when the container starts and lives only in httpd's environment
 * (its memory), so an answer after a restore shows the same process, and each answer names its request;
 * /cgi-bin/ready, a readiness path a test can hold shut (503 while /tmp/ready is missing).
 */
export const HTTPD = ['sh', '-c', [
  'set -e',
  'mkdir -p /www/cgi-bin',
  'echo hello > /www/index.html',
  "cat > /www/cgi-bin/echo <<'EOF'",
  '#!/bin/sh',
  "printf 'Content-Type: text/plain\\r\\n\\r\\n'",
  'echo "$KYB_TOKEN $QUERY_STRING"',
  'EOF',
  "cat > /www/cgi-bin/ready <<'EOF'",
  '#!/bin/sh',
  "if [ -e /tmp/ready ]; then printf 'Content-Type: text/plain\\r\\n\\r\\nready\\n'; exit 0; fi",
  "printf 'HTTP/1.0 503 Not Ready\\r\\nContent-Type: text/plain\\r\\n\\r\\nnot ready\\n'",
  'EOF',
  'chmod 755 /www/cgi-bin/echo /www/cgi-bin/ready',
  'touch /tmp/ready',
  'export KYB_TOKEN=$(cat /proc/sys/kernel/random/uuid)',
  'exec httpd -f -p 8080 -h /www',
].join('\n')];

export interface RouteSpec {
  name: string;
  workload: { namespace: string; id: string };
  upstream: string;
  host?: string;
  pathPrefix?: string;
  sleep?: Record<string, unknown>;
  probe?: Record<string, unknown>;
  limits?: Record<string, unknown>;
  failAfter?: number;
}

export interface Activator {
  pid: number;
  /** host:port of the front. */
  listen: string;
  admin: string;
  metrics?: string;
  config: string;
  logs(): string;
  status(): Promise<ActivatorStatus>;
  route(name: string): Promise<RouteStatus>;
  /** Rewrites the config file with these routes (the activator reloads it). */
  setRoutes(routes: RouteSpec[]): void;
  kill(): Promise<void>;
  stop(): Promise<number | null>;
}

export function activatorDir(): string {
  return mkdtempSync(join(base, 'a-'));
}

export function startActivator(o: { agent: string; routes: RouteSpec[]; dir?: string; listen?: string; metrics?: boolean }): Promise<Activator> {
  const dir = o.dir ?? activatorDir();
  const config = join(dir, 'activator.json');
  const write = (routes: RouteSpec[]): void => writeFileSync(config, `${JSON.stringify({
    listen: o.listen ?? '127.0.0.1:0', agent: o.agent, admin: join(dir, 'admin.sock'), metrics: o.metrics ? '127.0.0.1:0' : 'off', routes,
  }, null, 2)}\n`);
  write(o.routes);
  const child = spawn(ACTIVATOR_BIN, ['--config', config, '--log-level', 'debug'], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => { live.delete(child); r(code); }));
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      const first = !out.includes('"msg":"listening"');
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('"msg":"listening"'));
      if (!line || !first) return;
      const l = JSON.parse(line) as { listen: string; admin: string; metrics?: string };
      const status = (): Promise<ActivatorStatus> => fetchActivatorStatus(l.admin);
      resolve({
        pid: child.pid!, listen: l.listen, admin: l.admin, metrics: l.metrics, config,
        logs: () => out + err,
        status,
        route: async (name) => {
          const r = (await status()).routes.find((x) => x.name === name);
          if (!r) throw new Error(`no route ${name}`);
          return r;
        },
        setRoutes: write,
        kill: async () => { child.kill('SIGKILL'); await exited; },
        stop: async () => { child.kill('SIGTERM'); return exited; },
      });
    });
    void exited.then((code) => reject(new Error(`kybernate-activator exited ${code} before listening:\n${out}${err}`)));
  });
}

/** Waits until the route's gate is in `state`. */
export function waitRouteState(a: Activator, name: string, state: string, timeoutMs = 30_000): Promise<RouteStatus> {
  return waitFor(`route ${name} to be ${state}`, async () => {
    const r = await a.route(name);
    return r.state === state ? r : undefined;
  }, timeoutMs);
}

export interface Answer { status: number; headers: http.IncomingHttpHeaders; body: string }

/** One request on a fresh connection (no pooling: each request is its own client). */
export function get(address: string, path: string, o: { host?: string; agent?: http.Agent | false; timeoutMs?: number } = {}): Promise<Answer> {
  const [host, port] = splitHostPort(address);
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, agent: o.agent ?? false, headers: { host: o.host ?? 'demo.test' }, timeout: o.timeoutMs ?? 60_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in ${o.timeoutMs ?? 60_000} ms`)));
    req.on('error', reject);
  });
}

export function splitHostPort(a: string): [string, number] {
  const i = a.lastIndexOf(':');
  return [a.slice(0, i).replace(/^\[|\]$/g, ''), Number(a.slice(i + 1))];
}
