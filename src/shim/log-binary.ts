// binary:// stdio URIs: containerd's logging-binary protocol (nerdctl's default log driver uses it).
// The binary gets the container's stdout and stderr as fds 3 and 4 and a readiness pipe as fd 5, which it
// closes (or writes to) once it is ready; CONTAINER_ID and CONTAINER_NAMESPACE are in its environment and
// the URI's query parameters become its arguments. It ends on its own when the container's output ends.
import * as net from 'node:net';
import { KybernateError } from '../errors';
import * as native from '../native';
import { reaper } from '../native/reaper';

const READY_TIMEOUT_MS = 10_000;

export interface LogBinaryOwner { containerId: string; namespace: string }

/** The write ends the container gets as stdout and stderr, once the binary is ready. */
export interface LogBinary { stdout: number; stderr: number }

function argsOf(uri: URL): string[] {
  const args: string[] = [];
  for (const [k, v] of uri.searchParams) {
    args.push(k);
    if (v) args.push(v);
  }
  return args;
}

export async function startLogBinary(uri: URL, owner: LogBinaryOwner): Promise<LogBinary> {
  if (!uri.pathname.startsWith('/')) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `binary log URI needs an absolute path: ${uri.href}`);
  const [outR, outW] = native.pipe();
  const [errR, errW] = native.pipe();
  const [readyR, readyW] = native.pipe();
  const env = [...Object.entries(process.env).map(([k, v]) => `${k}=${v ?? ''}`),
    `CONTAINER_ID=${owner.containerId}`, `CONTAINER_NAMESPACE=${owner.namespace}`];
  let pid: number;
  try {
    ({ pid } = reaper.spawn({ file: uri.pathname, args: argsOf(uri), env, stdio: [-1, -1, -1], extraFds: [outR, errR, readyW] }));
  } catch (err) {
    for (const fd of [outR, outW, errR, errW, readyR, readyW]) native.close(fd);
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `cannot start log binary ${uri.pathname}: ${(err as Error).message}`, { cause: err });
  }
  // The binary holds its ends now; ours would keep its stdin pipes from ever reaching EOF.
  for (const fd of [outR, errR, readyW]) native.close(fd);
  const ready = new net.Socket({ fd: readyR, readable: true, writable: false });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new KybernateError('KYB_ERR_DEADLINE', `log binary ${uri.pathname} not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      const done = () => { clearTimeout(timer); resolve(); };
      ready.once('data', done);
      ready.once('end', done);
      ready.once('close', done);
      ready.once('error', done);
    });
  } catch (err) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    native.close(outW);
    native.close(errW);
    throw err;
  } finally {
    ready.destroy();
  }
  return { stdout: outW, stderr: errW };
}
