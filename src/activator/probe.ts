// Readiness after a wake: the workload's server must answer before held requests go to it. An HTTP probe
// (GET path; any response below 500 means the server serves) or a TCP connect; one fresh connection per
// attempt (never a pooled one: the pool is for requests), every intervalMs until timeoutMs.
import http from 'node:http';
import net from 'node:net';
import { KybernateError } from '../errors';
import { parseHostPort } from '../hostport';
import type { RouteConfig } from './routes';

const ATTEMPT_TIMEOUT_MS = 1_000;

export async function probeUntilReady(route: RouteConfig): Promise<void> {
  const { host, port } = parseHostPort(route.upstream)!;
  const { http: path, intervalMs, timeoutMs } = route.probe;
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const left = deadline - Date.now();
    try {
      await (path === undefined ? tcpAttempt(host, port, Math.min(left, ATTEMPT_TIMEOUT_MS)) : httpAttempt(host, port, path, Math.min(left, ATTEMPT_TIMEOUT_MS)));
      return;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() + intervalMs >= deadline) {
      throw new KybernateError('KYB_ERR_DEADLINE', `the workload did not answer its readiness probe (${path === undefined ? 'TCP connect' : `GET ${path}`} to ${route.upstream}) within ${timeoutMs} ms: ${last}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function tcpAttempt(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); reject(new Error('connect timed out')); }, timeoutMs);
    s.once('connect', () => { clearTimeout(t); s.destroy(); resolve(); });
    s.once('error', (err) => { clearTimeout(t); reject(err); });
  });
}

function httpAttempt(host: string, port: number, path: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, agent: false, timeout: timeoutMs, headers: { 'user-agent': 'kybernate-activator-probe' } }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      if (status > 0 && status < 500) resolve();
      else reject(new Error(`GET ${path}: HTTP ${status}`));
    });
    req.once('timeout', () => req.destroy(new Error(`GET ${path}: no answer in ${timeoutMs} ms`)));
    req.once('error', reject);
  });
}
