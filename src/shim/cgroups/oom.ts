// OOM-kill notifications for the cgroup of a container's init process.
//
// v2 (memory controller in the unified hierarchy): the kernel raises a file-modified event on
// memory.events whenever a counter changes, so fs.watch + comparing oom_kill suffices.
// v1: notifications need an eventfd registered through cgroup.event_control, which Node cannot
// create; the native addon does it on its own thread. The kernel signals it when the OOM killer
// is invoked, before the kill is counted, so (like containerd) every notification is an OOM
// event. Without the addon we poll the oom_kill counter of memory.oom_control every 500 ms
// (kernel >= 4.13), which only delays the event.
//
// The cgroup vanishing (container gone) or becoming unreadable ends the watch silently, and an
// exception thrown by onOom is swallowed: a watch never raises into the event loop.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Long from 'long';
import { processCgroups, readMounts } from './hierarchy';
import { isGone, parseFlatKeyed } from './files';

export type OomDelivery = 'inotify' | 'eventfd' | 'polling' | 'pending' | 'none';

export interface OomWatch {
  close(): void;
  /** How notifications arrive ('pending' while the addon loads, 'none' once over). For logs and tests. */
  readonly via: OomDelivery;
}

const NONE: OomWatch = { close() {}, via: 'none' };

const POLL_MS = 500;

interface NativeOomV1 {
  watchOomV1(memoryCgroupDir: string, cb: () => void): number;
  unwatchOomV1(id: number): unknown;
  /** Optional: false once the addon dropped the watch by itself (cgroup removed). */
  oomWatchActive?(id: number): boolean;
}

export interface WatchOomOptions {
  /** v1 only: poll memory.oom_control even when the addon is available (tests). */
  forcePolling?: boolean;
}

/** undefined when the file cannot be read: the watch then ends (it runs from timers/events). */
function readCounter(file: string, key: string): Long | undefined {
  try {
    return parseFlatKeyed(fs.readFileSync(file, 'utf8')).get(key) ?? Long.UZERO;
  } catch {
    return undefined;
  }
}

/**
 * Calls onOom for OOM kills in the cgroup of `pid`: per eventfd notification (v1 with the addon),
 * or per observed increase of the oom_kill counter (v2, v1 polling; kills between two reads are
 * reported once). Returns a no-op watch when the process or its memory cgroup is already gone.
 */
export function watchOom(pid: number, onOom: () => void, opts: WatchOomOptions = {}): OomWatch {
  let cgroups;
  const mounts = readMounts();
  try {
    cgroups = processCgroups(pid, mounts);
  } catch (err) {
    if (isGone(err)) return NONE;
    throw err;
  }
  const v1Memory = cgroups.v1.get('memory');
  if (v1Memory !== undefined) return watchV1(v1Memory, onOom, opts.forcePolling === true);
  if (cgroups.unified !== undefined) return watchV2(cgroups.unified, onOom);
  return NONE;
}

function notify(onOom: () => void): void {
  try {
    onOom();
  } catch {
    // The callback's failures are its own; the watch must keep running.
  }
}

/** Runs the counter comparison; returns false once the cgroup is gone. */
function makeChecker(file: string, onOom: () => void): () => boolean {
  let last = readCounter(file, 'oom_kill');
  return () => {
    const now = readCounter(file, 'oom_kill');
    if (now === undefined || last === undefined) return false;
    if (now.greaterThan(last)) {
      last = now;
      notify(onOom);
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
  const handle: OomWatch = {
    close,
    get via() {
      return watcher === undefined ? 'none' : 'inotify';
    },
  };
  if (!check()) return handle;
  try {
    watcher = fs.watch(file, { persistent: false }, () => {
      if (!check()) close();
    });
    watcher.on('error', close);
  } catch (err) {
    if (isGone(err)) return handle;
    throw err;
  }
  return handle;
}

function watchV1(dir: string, onOom: () => void, forcePolling: boolean): OomWatch {
  const file = path.join(dir, 'memory.oom_control');
  const check = makeChecker(file, onOom);
  let closed = false;
  let via: OomDelivery = 'pending';
  let stop: () => void = () => {};
  let alive: () => boolean = () => true;
  const close = (): void => {
    closed = true;
    via = 'none';
    const s = stop;
    stop = () => {};
    s();
  };
  const handle: OomWatch = {
    close,
    get via() {
      // The addon ends a watch on cgroup removal without calling back.
      if (via === 'eventfd' && !alive()) close();
      return via;
    },
  };
  if (!check()) {
    close();
    return handle;
  }

  const poll = (): void => {
    const timer = setInterval(() => {
      if (!check()) close();
    }, POLL_MS);
    timer.unref();
    via = 'polling';
    stop = () => clearInterval(timer);
  };

  if (forcePolling) {
    poll();
    return handle;
  }
  void loadNative().then((native) => {
    if (closed) return;
    if (native === undefined) return poll();
    let id: number;
    try {
      id = native.watchOomV1(dir, () => {
        if (closed) return;
        // The eventfd also fires when the cgroup is removed: that ends the watch, it is no OOM.
        if (!fs.existsSync(file)) return close();
        notify(onOom);
      });
    } catch {
      // Addon not built, or cgroup.event_control refused: polling still works.
      return poll();
    }
    via = 'eventfd';
    alive = () => {
      try {
        return native.oomWatchActive?.(id) ?? true;
      } catch {
        return false;
      }
    };
    stop = () => {
      try {
        native.unwatchOomV1(id);
      } catch {
        // Already dropped by the addon (cgroup removed).
      }
    };
  });
  return handle;
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
