// The demo's workload: busybox httpd on port 8080 in a network sandbox, under the Kybernate runtime. `/`
// says hello; `/cgi-bin/echo?x` answers "query=x token=T", where T is drawn once when the container starts
// and lives only in httpd's environment (its memory): a restored httpd answers with the token it had, one
// started afresh with a new one. The script runs inside the container (sh -c there); the host runs ctr
// with an argv array, never a shell.
//
// Invariants: startDemoWorkload resolves only once the workload answers HTTP at `upstream`, and on failure
// removes what it created; before it starts anything in the sandbox it releases a network lock CRIU left
// there (src/network/criu-lock.ts); remove() takes the container away in whatever state it is in (running,
// paused, stopped, checkpointed with no task, a restore cut before its start, already gone).
import * as http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { ContainerdClient } from '../../containerd/client';
import { KybernateError, errExists, errInvalid } from '../../errors';
import { validateId } from '../../ids';
import { releaseCriuLock, type Sandbox } from '../../network/sandbox';
import { ctr, ctrOk, lines, type CtrTarget } from './ctr';
import { DEMO_IMAGE, demoImageTar } from './paths';

export const WORKLOAD_PORT = 8080;
export const KYBERNATE_RUNTIME = 'io.containerd.kybernate.v2';
export const HELLO = 'hello from a Kybernate workload\n';

/** The container's command: write the page and the CGI, draw the token, become httpd (pid 1). */
export const HTTPD_COMMAND: readonly string[] = ['sh', '-c', [
  'set -e',
  'mkdir -p /www/cgi-bin',
  `echo '${HELLO.trim()}' > /www/index.html`,
  "cat > /www/cgi-bin/echo <<'EOF'",
  '#!/bin/sh',
  "printf 'Content-Type: text/plain\\r\\n\\r\\n'",
  'echo "query=$QUERY_STRING token=$KYB_TOKEN"',
  'EOF',
  'chmod 755 /www/cgi-bin/echo',
  'export KYB_TOKEN=$(cat /proc/sys/kernel/random/uuid)',
  `exec httpd -f -p ${WORKLOAD_PORT} -h /www`,
].join('\n')];

export interface WorkloadOptions {
  namespace: string;
  id: string;
  sandbox: Sandbox;
  /** The image tarball to import when the namespace lacks DEMO_IMAGE; default .deps/images/busybox.tar. */
  imageTar?: string;
  /** Where the container's stdout/stderr go (file://); default none (--null-io). */
  logFile?: string;
  /** Remove a container of the same id first (the demo's own leftover); otherwise that is ALREADY_EXISTS. */
  replace?: boolean;
  /** How long the workload may take to answer HTTP; default 30 s. */
  readyTimeoutMs?: number;
}

export interface DemoWorkload {
  id: string;
  namespace: string;
  /** ip:port the activator forwards to. */
  upstream: string;
  remove(): Promise<void>;
}

/** Imports DEMO_IMAGE into `namespace` unless it is there already. */
export async function ensureImage(cd: CtrTarget, namespace: string, tar?: string): Promise<void> {
  if (lines(await ctrOk(cd, namespace, ['images', 'ls', '-q'])).includes(DEMO_IMAGE)) return;
  const file = tar ?? demoImageTar();
  if (!file) {
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION',
      `the demo image ${DEMO_IMAGE} is not in namespace ${namespace} and .deps/images/busybox.tar was not found: run \`make setup\` (or \`make image\`)`);
  }
  await ctrOk(cd, namespace, ['images', 'import', file], 120_000);
}

export async function startDemoWorkload(cd: CtrTarget, o: WorkloadOptions): Promise<DemoWorkload> {
  validateId('namespace', o.namespace);
  validateId('container id', o.id);
  // It becomes a file:// URI: an absolute path of plain characters only.
  if (o.logFile !== undefined && !/^\/[A-Za-z0-9_./@+-]+$/.test(o.logFile)) throw errInvalid(`invalid log file ${JSON.stringify(o.logFile)}`);
  const remove = () => removeWorkload(cd, o.namespace, o.id);
  if (lines(await ctrOk(cd, o.namespace, ['containers', 'ls', '-q'])).includes(o.id)) {
    if (!o.replace) throw errExists(`container ${o.namespace}/${o.id}`);
    await remove();
  }
  await ensureImage(cd, o.namespace, o.imageTar);
  const io = o.logFile ? ['--log-uri', `file://${o.logFile}`] : ['--null-io'];
  const upstream = `${o.sandbox.ip}:${WORKLOAD_PORT}`;
  // A fresh start: a lock CRIU left for a workload checkpointed here and never restored would hide this one.
  await releaseCriuLock(o.sandbox.name);
  try {
    await ctrOk(cd, o.namespace, ['run', '-d', '--runtime', KYBERNATE_RUNTIME, '--with-ns', `network:${o.sandbox.netns}`, ...io,
      DEMO_IMAGE, o.id, ...HTTPD_COMMAND]);
    await waitAnswering(cd, o.namespace, o.id, upstream, o.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await remove().catch(() => undefined);
    throw err;
  }
  return { id: o.id, namespace: o.namespace, upstream, remove };
}

/** Polls GET / until it answers 200; fails early when the task is gone. */
async function waitAnswering(cd: CtrTarget, namespace: string, id: string, upstream: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (let i = 0; Date.now() < deadline; i++) {
    const status = await httpStatus(`http://${upstream}/`).catch((err: Error) => { last = err.message; return 0; });
    if (status === 200) return;
    if (status !== 0) last = `status ${status}`;
    if (i % 10 === 9 && !(await taskStatus(cd, namespace, id))) break;
    await sleep(50);
  }
  throw new KybernateError('KYB_ERR_UNAVAILABLE', `the demo workload ${namespace}/${id} did not answer HTTP at ${upstream}: ${last || 'its task is gone'}`);
}

function httpStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 2_000 }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer after 2 s`)));
    req.on('error', reject);
  });
}

/** The task's status as `ctr tasks ls` shows it (RUNNING, STOPPED, …), with its pid; undefined when it has none. */
export async function taskStatus(cd: CtrTarget, namespace: string, id: string): Promise<{ pid: number; status: string } | undefined> {
  for (const line of lines((await ctr(cd, namespace, ['tasks', 'ls'])).stdout).slice(1)) {
    const [tid, pid, status] = line.split(/\s+/);
    if (tid === id && status) return { pid: Number(pid), status };
  }
  return undefined;
}

/**
 * Kills and deletes the task (if any) and the container with its snapshot. Every step tolerates what an
 * earlier run, a checkpoint or a crash left: no task, a paused one, a stopped one, a created one with no
 * process, no container.
 */
export async function removeWorkload(cd: CtrTarget, namespace: string, id: string): Promise<void> {
  validateId('namespace', namespace);
  validateId('container id', id);
  const client = new ContainerdClient({ address: cd.address, timeoutMs: 15_000 });
  try {
    const t = await client.task(namespace, id);
    if (t) {
      if (t.status === 'paused') await client.resumeTask(namespace, id).catch(() => undefined);
      // A created task with pid 0 (a restore cut before Start) has no process: containerd deletes it as it is.
      const processLess = t.status === 'created' && t.pid === 0;
      if (t.status !== 'stopped' && !processLess) {
        await client.killTask(namespace, id, 9, true).catch(() => undefined);
        for (const end = Date.now() + 10_000; Date.now() < end; await sleep(50)) {
          const now = await client.task(namespace, id);
          if (!now || now.status === 'stopped') break;
        }
      }
      await client.deleteTask(namespace, id).catch((err: unknown) => {
        if (!(KybernateError.is(err) && err.code === 'KYB_ERR_NOT_FOUND')) throw err;
      });
    }
  } finally {
    client.close();
  }
  const r = await ctr(cd, namespace, ['containers', 'delete', id]);
  if (r.code !== 0 && !/not found/i.test(r.stderr)) {
    throw new KybernateError('KYB_ERR_RUNTIME', `ctr containers delete ${namespace}/${id}: ${r.stderr}`);
  }
}
