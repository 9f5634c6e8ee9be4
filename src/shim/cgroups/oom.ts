// OOM-kill notifications for the cgroup of a container's init process.
//
// v2 (memory controller in the unified hierarchy): the kernel raises a file-modified event on
// memory.events whenever a counter changes, so fs.watch + comparing oom_kill suffices.
// v1: notifications need an eventfd registered through cgroup.event_control, which Node cannot
// create; the native addon does it on its own thread. Without the addon we poll the oom_kill
// counter of memory.oom_control every 500 ms (kernel >= 4.13), which only delays the event.
//
// The cgroup vanishing (container gone) ends the watch silently; onOom never throws into us.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Long from 'long';
import { processCgroups, readMounts } from './hierarchy';
import { isGone, parseFlatKeyed } from './files';

export interface OomWatch {
  close(): void;
}

const POLL_MS = 500;

interface NativeOomV1 {
  watchOomV1(memoryCgroupDir: string, cb: () => void): number;
  unwatchOomV1(id: number): void;
}

function readCounter(file: string, key: string): Long | undefined {
  try {
    return parseFlatKeyed(fs.readFileSync(file, 'utf8')).get(key) ?? Long.UZERO;
  } catch (err) {
    if (isGone(err)) return undefined;
    throw err;
  }
}

/**
 * Calls onOom once per observed increase of an oom_kill counter (several kills between two
 * reads are reported once). Returns a no-op watch when the process or its memory cgroup is
 * already gone.
 */
export function watchOom(pid: number, onOom: () => void): OomWatch {
  let cgroups;
  const mounts = readMounts();
  try {
    cgroups = processCgroups(pid, mounts);
  } catch (err) {
    if (isGone(err)) return { close() {} };
    throw err;
  }
  const v1Memory = cgroups.v1.get('memory');
  if (v1Memory !== undefined) return watchV1(v1Memory, onOom);
  if (cgroups.unified !== undefined) return watchV2(cgroups.unified, onOom);
  return { close() {} };
}

/** Runs the counter comparison; returns false once the cgroup is gone. */
function makeChecker(file: string, onOom: () => void): () => boolean {
  let last = readCounter(file, 'oom_kill');
  return () => {
    const now = readCounter(file, 'oom_kill');
    if (now === undefined || last === undefined) return false;
    if (now.greaterThan(last)) {
      last = now;
      try {
        onOom();
      } catch {
        // The callback's failures are its own; the watch must keep running.
      }
    }
    return true;
  };
}

function watchV2(dir: string, onOom: () => void): OomWatch {
  const file = path.join(dir, 'memory.events');
  const check = makeChecker(file, onOom);
  let watcher: fs.FSWatcher | undefined;
  const close = (): void => {
    watcher?.close();
    watcher = undefined;
  };
  if (!check()) return { close };
  try {
    watcher = fs.watch(file, { persistent: false }, () => {
      if (!check()) close();
    });
    watcher.on('error', close);
  } catch (err) {
    if (isGone(err)) return { close };
    throw err;
  }
  return { close };
}

function watchV1(dir: string, onOom: () => void): OomWatch {
  const file = path.join(dir, 'memory.oom_control');
  const check = makeChecker(file, onOom);
  let closed = false;
  let stop: () => void = () => {};
  const close = (): void => {
    closed = true;
    const s = stop;
    stop = () => {};
    s();
  };
  if (!check()) return { close };

  const poll = (): void => {
    const timer = setInterval(() => {
      if (!check()) close();
    }, POLL_MS);
    timer.unref();
    stop = () => clearInterval(timer);
  };

  void loadNative().then((native) => {
    if (closed) return;
    if (native === undefined) return poll();
    let id: number;
    try {
      // The eventfd also fires when the cgroup is removed; check() tells the two apart.
      id = native.watchOomV1(dir, () => {
        if (!closed && !check()) close();
      });
    } catch {
      return poll();
    }
    stop = () => native.unwatchOomV1(id);
  });
  return { close };
}

let nativeLoad: Promise<NativeOomV1 | undefined> | undefined;

/** The addon is optional here: a missing build or export selects polling. */
function loadNative(): Promise<NativeOomV1 | undefined> {
  nativeLoad ??= import('../../native')
    .then((mod: unknown) => {
      const m = mod as Partial<NativeOomV1>;
      return typeof m.watchOomV1 === 'function' && typeof m.unwatchOomV1 === 'function'
        ? (m as NativeOomV1)
        : undefined;
    })
    .catch(() => undefined);
  return nativeLoad;
}
