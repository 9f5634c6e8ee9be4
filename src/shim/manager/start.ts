// `start`: make sure a shim daemon for this container's group is listening, print how to reach it, exit.
// Output rules (containerd reads stdout+stderr combined): nothing but the answer; plain address for
// containerd 1.6–2.2, a protobuf BootstrapResult when 2.3+ sent BootstrapParams on stdin.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_SOCKET_DIR, SOCKET_PATH_LIMIT, groupOf, socketAddress, socketPath } from '../address';
import type { ShimFlags } from '../flags';
import { READY_EXISTING, READY_LISTENING, canConnect } from '../daemon-socket';
import { joinCgroup, shimCgroupOf } from './shim-cgroup';

const DAEMON_READY_TIMEOUT_MS = 10_000;

/** What 2.3+ containerd sends on stdin, after validation against the flags. */
export interface Bootstrap {
  socketDir?: string;
  ttrpcAddress?: string;
  grpcAddress?: string;
  /** Runtime options (an Any), from the extensions of BootstrapParams or the legacy stdin Any. */
  options?: { typeUrl: string; value: Uint8Array };
}

function readStdin(): Buffer {
  try {
    return fs.readFileSync(0);
  } catch {
    return Buffer.alloc(0); // closed or non-readable stdin: containerd sent nothing
  }
}

/**
 * Decides between 2.3's BootstrapParams and the legacy Any of runtime options. An Any decodes as
 * BootstrapParams too (field 1 ↔ instance_id, 2 ↔ namespace), so only a message whose instance_id and
 * namespace equal our -id/-namespace counts as BootstrapParams, exactly as containerd's own shims decide.
 */
export async function parseBootstrap(stdin: Uint8Array, flags: ShimFlags): Promise<Bootstrap | undefined> {
  if (stdin.length === 0) return undefined;
  const { containerd } = await import('../../gen/actions');
  try {
    const bp = containerd.runtime.bootstrap.v1.BootstrapParams.decode(stdin);
    if (bp.instanceId === flags.id && bp.namespace === flags.namespace) {
      const ext = bp.extensions.find((e) => e.value?.type_url);
      return {
        socketDir: bp.socketDir || undefined,
        ttrpcAddress: bp.containerdTtrpcAddress || undefined,
        grpcAddress: bp.containerdGrpcAddress || undefined,
        options: ext?.value ? { typeUrl: ext.value.type_url ?? '', value: ext.value.value ?? new Uint8Array() } : undefined,
      };
    }
  } catch {
    // not BootstrapParams: fall through to the legacy form
  }
  return undefined;
}

type AnyOptions = NonNullable<Bootstrap['options']>;

/**
 * The runtime options `start` got: 2.3+ carries them in BootstrapParams; 1.6–2.2 write the Any itself
 * (the task's options, else the container's runtime options) to stdin. Undefined when there are none or
 * stdin is not an Any.
 */
async function startOptions(stdin: Uint8Array, bootstrap: Bootstrap | undefined): Promise<AnyOptions | undefined> {
  if (bootstrap) return bootstrap.options;
  if (stdin.length === 0) return undefined;
  const { google } = await import('../../gen/actions');
  try {
    const any = google.protobuf.Any.decode(stdin);
    return any.type_url ? { typeUrl: any.type_url, value: any.value ?? new Uint8Array() } : undefined;
  } catch {
    return undefined;
  }
}

function readAnnotations(bundle: string): Record<string, string> | undefined {
  const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as { annotations?: Record<string, string> };
  return spec.annotations;
}

/**
 * Starts the daemon and resolves once it listens (or found a live daemon of the group already). With
 * `shimCgroup` the daemon is moved into that cgroup right after it is spawned, before it serves anything.
 */
function launchDaemon(flags: ShimFlags, sock: string, bundle: string, bootstrap?: Bootstrap, shimCgroup?: string): Promise<void> {
  // process.execArgv: the node options the front's conf gives (V8 flags) reach the daemon too.
  const args = [...process.execArgv, process.argv[1], '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address,
    '-publish-binary', flags.publishBinary, '-socket', sock];
  if (flags.debug) args.push('-debug');
  const env = { ...process.env };
  if (bootstrap?.ttrpcAddress) env.TTRPC_ADDRESS = bootstrap.ttrpcAddress;
  // containerd's pipes must not reach the daemon: containerd waits for every writer of them to close.
  // What reaches the daemon's stderr (a V8 fatal error, a native crash report) lands in the bundle.
  const stderr = fs.openSync(path.join(bundle, 'shim-stderr.log'), 'a', 0o600);
  let child;
  try {
    child = spawn(process.execPath, args, { cwd: bundle, env, detached: true, stdio: ['ignore', 'pipe', stderr] });
  } finally {
    fs.closeSync(stderr);
  }
  if (shimCgroup && child.pid !== undefined) {
    try {
      joinCgroup(child.pid, shimCgroup);
    } catch (err) {
      child.kill('SIGKILL');
      child.unref();
      return Promise.reject(err);
    }
  }
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`shim daemon did not become ready within ${DAEMON_READY_TIMEOUT_MS} ms`));
    }, DAEMON_READY_TIMEOUT_MS);
    const done = (err?: Error) => {
      clearTimeout(timer);
      child.stdout?.destroy();
      child.unref();
      if (err) reject(err); else resolve();
    };
    child.on('error', (err) => done(err));
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      out += chunk;
      const line = out.split('\n')[0];
      if (out.includes('\n')) {
        if (line === READY_LISTENING || line === READY_EXISTING) done();
        else done(new Error(`shim daemon failed: ${line}`));
      }
    });
    child.on('exit', (code, signal) => {
      if (!out.includes('\n')) done(new Error(`shim daemon exited before ready (code ${code}, signal ${signal}): ${out.trim()}`));
    });
  });
}

/** Where a container's group daemon is, and what its `start` must tell containerd. */
export interface StartPlan {
  /** unix://… as printed to containerd. */
  address: string;
  /** The socket's path. */
  sock: string;
  bootstrap?: Bootstrap;
  /** ShimCgroup from the runtime options: a daemon launched for this start moves there. */
  shimCgroup?: string;
}

/** Everything `start` decides before any daemon exists; reads `bundle`/config.json. */
export async function planStart(flags: ShimFlags, bundle: string, stdin: Uint8Array): Promise<StartPlan> {
  const bootstrap = await parseBootstrap(stdin, flags);
  const shimCgroup = await shimCgroupOf(await startOptions(stdin, bootstrap), flags.namespace);
  const group = groupOf(flags.id, readAnnotations(bundle));
  const address = socketAddress(flags.address, flags.namespace, group, bootstrap?.socketDir ?? DEFAULT_SOCKET_DIR);
  const sock = socketPath(address);
  if (sock.length > SOCKET_PATH_LIMIT) throw new Error(`socket path ${sock} is longer than ${SOCKET_PATH_LIMIT} bytes`);
  return { address, sock, bootstrap, shimCgroup };
}

/**
 * Records the address in the bundle (1.6/1.7 reconnect after a daemon restart from this file; 2.x migrates
 * from it) and returns what `start` prints: the plain address for 1.6–2.2, a BootstrapResult for 2.3+.
 */
export async function finishStart(plan: StartPlan, bundle: string): Promise<Buffer> {
  fs.writeFileSync(path.join(bundle, 'address'), plan.address, { mode: 0o600 });
  if (!plan.bootstrap) return Buffer.from(plan.address);
  const { containerd } = await import('../../gen/actions');
  return Buffer.from(containerd.runtime.bootstrap.v1.BootstrapResult.encode({ version: 2, address: plan.address, protocol: 'ttrpc' }).finish());
}

export async function start(flags: ShimFlags): Promise<void> {
  const bundle = process.cwd();
  const plan = await planStart(flags, bundle, readStdin());
  // A group's daemon that already serves needs no second Node process to find that out (the daemon's
  // own bind still settles races between concurrent starts of a new group). Such a daemon is not moved
  // into this container's shim cgroup: containerd's runc shim, too, only returns the existing address.
  if (!(await canConnect(plan.sock))) {
    await launchDaemon(flags, plan.sock, bundle, plan.bootstrap, plan.shimCgroup);
    // This start was the slow path (no spare answered the front): leave one for the next start.
    const { ensureSpare } = await import('../spare/launch');
    await ensureSpare();
  }
  process.stdout.write(await finishStart(plan, bundle));
}
