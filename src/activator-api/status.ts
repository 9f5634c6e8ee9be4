// The activator's status as its admin socket serves it (GET /status, JSON) and `kybernate activator status`
// reads it. Shared by the daemon and the CLI, so both agree on the shape; plain HTTP over a root-only unix
// socket (the socket's permissions are the access control, as for the agent's).
import http from 'node:http';
import { KybernateError } from '../errors';

export const DEFAULT_ACTIVATOR_ADMIN = '/run/kybernate/activator.sock';

/** awake: serving. draining: idle, about to sleep (a request cancels it). sleeping: the agent is putting it to
 * sleep. asleep: suspended or checkpointed. waking: resume/restore and readiness probe in progress. failed:
 * wakes kept failing; requests are refused at once until the workload runs again or the routes reload.
 * unknown: not asked yet (the agent is asked on the first request). */
export type GateState = 'unknown' | 'awake' | 'draining' | 'sleeping' | 'asleep' | 'waking' | 'failed';

export interface WakeStep { name: string; ms: number }

export interface WakeRecord {
  /** ISO time the wake began. */
  at: string;
  /** What it woke from: suspend, checkpoint, or running (it was awake already: the probe only). */
  from: string;
  ok: boolean;
  ms: number;
  steps: WakeStep[];
  /** Requests that waited for it. */
  held: number;
  error?: string;
}

export interface RouteStatus {
  name: string;
  host: string;
  pathPrefix: string;
  namespace: string;
  id: string;
  upstream: string;
  sleepKind: string;
  state: GateState;
  /** ISO time of the last change of state. */
  since: string;
  inFlight: number;
  held: number;
  failures: number;
  reason?: string;
  lastWake?: WakeRecord;
  lastSleep?: { at: string; kind: string; ok: boolean; ms: number; error?: string };
}

export interface ActivatorStatus {
  version: string;
  listen: string;
  agent: string;
  uptimeS: number;
  routes: RouteStatus[];
}

/** GET /status from the admin socket; a clear KybernateError when nothing answers there. */
export function fetchActivatorStatus(socket: string, timeoutMs = 10_000): Promise<ActivatorStatus> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: socket, path: '/status', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        if (res.statusCode !== 200) {
          reject(new KybernateError('KYB_ERR_INTERNAL', `activator status: HTTP ${res.statusCode}: ${body.trim()}`));
          return;
        }
        try {
          resolve(JSON.parse(body) as ActivatorStatus);
        } catch (err) {
          reject(new KybernateError('KYB_ERR_PROTOCOL', `activator status: not JSON: ${(err as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new KybernateError('KYB_ERR_DEADLINE', `the activator at ${socket} did not answer in ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (KybernateError.is(err)) reject(err);
      else if (err.code === 'EACCES' || err.code === 'EPERM') reject(new KybernateError('KYB_ERR_PERMISSION', `permission denied on the activator's socket ${socket}: it is root-only`, { cause: err }));
      else reject(new KybernateError('KYB_ERR_UNAVAILABLE', `the kybernate activator is not running (nothing answers at ${socket}): start it with \`kybernate-activator\``, { cause: err }));
    });
  });
}
