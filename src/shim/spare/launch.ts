// Where the node's one warm spare shim daemon listens, and starting one. A spare is a shim daemon booted
// ahead of time (Node, the Task service and its protobuf code loaded) that the native front hands the next
// container group that needs a daemon; see spare.ts.
//
// Invariants: a spare is only ever reached at <dir>/<build>.sock, so a front never talks to a spare of
// another build; at most one spare serves that path (it binds under the socket lock); starting one is
// skipped while another is already booting (a marker younger than SPAWN_MARKER_MS), so a burst of slow
// starts boots one spare, not one each.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { canConnect } from '../../socket-lock';

/** Replaced by scripts/bundle.cjs with the build id it also writes into the front's conf. */
declare const __KYBERNATE_SHIM_BUILD__: string | undefined;

/**
 * Variables that shape a process when it is exec'd (the dynamic loader's, Node's and libuv's): a spare booted
 * with one set must not become the daemon of a containerd whose shims would have had another (containerd
 * itself puts its own opt/lib on LD_LIBRARY_PATH). Everything else in the environment is taken over at the
 * claim (containerd's addresses, the namespace, PATH, …).
 */
const IMAGE_VARS = /^(LD_|NODE_|UV_|MALLOC_|GLIBC_TUNABLES$|KYBERNATE_ADDON$)/;
const DEFAULT_SPARE_DIR = '/run/kybernate/shim-spare';
const SPAWN_MARKER_MS = 10_000;
/**
 * A claimed spare retitles itself with the flags a launched daemon has on its command line (claim.ts), so
 * that ps and tools that find a containerd's shims by their -address see it. The kernel's argv area is
 * all the room a title has: spares get this blank argument (ignored by the flag parser) to make room.
 */
const TITLE_ROOM = ' '.repeat(480);
/** Spares boot at low priority: on a busy node their boot must not slow the containers being started. */
export const SPARE_NICE = 19;

/** This bundle's build id, or undefined when it was not built with the native front (no spares then). */
export function buildId(): string | undefined {
  const id = typeof __KYBERNATE_SHIM_BUILD__ === 'string' ? __KYBERNATE_SHIM_BUILD__ : undefined;
  return id && /^[0-9a-f]{16}$/.test(id) ? id : undefined;
}

/** False when KYBERNATE_SHIM_SPARE=0 (in containerd's environment) or this build has no front. */
export function sparesEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.KYBERNATE_SHIM_SPARE !== '0' && buildId() !== undefined;
}

export function spareDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.KYBERNATE_SHIM_SPARE_DIR || DEFAULT_SPARE_DIR;
}

/**
 * The spare socket for a start made with `env`: <dir>/<build>-<key>.sock, where the key names the variables
 * that shape a process at exec (see spareKey). The native front computes the same name.
 */
export function spareSocket(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(spareDir(env), `${buildId() ?? 'none'}-${spareKey(env)}.sock`);
}

/**
 * FNV-1a 64 (hex) over the sorted "K=V" entries of env's image variables (IMAGE_VARS), each followed by a
 * NUL byte; the same bytes native/front/spare_client.cc hashes (its environ is containerd's, given to the shim).
 */
export function spareKey(env: NodeJS.ProcessEnv): string {
  const entries = Object.entries(env).filter(([k, v]) => IMAGE_VARS.test(k) && v !== undefined).map(([k, v]) => Buffer.from(`${k}=${v}`));
  entries.sort(Buffer.compare);
  let h = 0xcbf29ce484222325n;
  for (const e of entries) {
    for (const byte of [...e, 0]) {
      h ^= BigInt(byte);
      h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
    }
  }
  return h.toString(16).padStart(16, '0');
}

/** The file a spare's stderr goes to (a V8 fatal error before it is claimed lands there). */
export function spareLog(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(spareDir(env), `${buildId() ?? 'none'}.log`);
}

function markerPath(env: NodeJS.ProcessEnv): string {
  return `${spareSocket(env)}.booting`;
}

/** Claims the right to boot the next spare; false while a fresh marker says one is booting already. */
function takeMarker(env: NodeJS.ProcessEnv): boolean {
  const marker = markerPath(env);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(marker, String(process.pid), { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return false;
      const age = Date.now() - (fs.statSync(marker, { throwIfNoEntry: false })?.mtimeMs ?? 0);
      if (age < SPAWN_MARKER_MS) return false;
      fs.rmSync(marker, { force: true }); // its booter died before removing it
    }
  }
  return false;
}

/** A booted spare removes the marker once it listens (or gives up). */
export function clearMarker(env: NodeJS.ProcessEnv = process.env): void {
  fs.rmSync(markerPath(env), { force: true });
}

/**
 * Boots a spare unless spares are off, one listens already, or one is booting. The child is detached,
 * niced, outside our stdio; it inherits our cgroup, so callers start it before joining a container's shim
 * cgroup. Never throws: without a spare the next start takes the Node path, as before spares existed.
 */
export async function ensureSpare(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  if (!sparesEnabled(env)) return;
  try {
    fs.mkdirSync(spareDir(env), { recursive: true, mode: 0o700 });
    if (await canConnect(spareSocket(env))) return;
    if (!takeMarker(env)) return;
    const log = fs.openSync(spareLog(env), 'a', 0o600);
    try {
      const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'spare', TITLE_ROOM],
        { cwd: '/', env, detached: true, stdio: ['ignore', 'ignore', log] });
      child.on('error', () => clearMarker(env));
      if (child.pid !== undefined) {
        try {
          os.setPriority(child.pid, SPARE_NICE);
        } catch {
          // it boots at our priority
        }
      }
      child.unref();
    } finally {
      fs.closeSync(log);
    }
  } catch {
    clearMarker(env);
  }
}


/** Why a spare booted with `boot` cannot serve a start made with `want`, or undefined when it can. */
export function environmentMismatch(boot: NodeJS.ProcessEnv, want: NodeJS.ProcessEnv): string | undefined {
  const keys = new Set([...Object.keys(boot), ...Object.keys(want)].filter((k) => IMAGE_VARS.test(k)));
  for (const k of [...keys].sort()) {
    if (boot[k] !== want[k]) return `the spare was booted with ${k}=${JSON.stringify(boot[k] ?? null)}, this start has ${JSON.stringify(want[k] ?? null)}`;
  }
  return undefined;
}
