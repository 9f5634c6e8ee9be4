// Per-environment state of the addon. There are no C++ globals: every function reaches this
// struct through env.GetInstanceData<Addon>(), and a cleanup hook stops its threads when the
// environment (the main thread or a worker) is torn down.
#ifndef KYBERNATE_ADDON_H_
#define KYBERNATE_ADDON_H_

#include <napi.h>
#include <sys/types.h>

#include <unordered_set>

#include "oom.h"
#include "reaper.h"

namespace kyb {

struct Addon {
  Reaper reaper;
  OomWatcher oom;
  // Children whose execve failed: spawn() already threw for them, so their exit (reaped by the
  // reaper thread) is dropped instead of reported. Touched on the JS thread only.
  std::unordered_set<pid_t> failedSpawns;

  static Addon* Of(Napi::Env env) { return env.GetInstanceData<Addon>(); }
  void Shutdown() {
    reaper.Stop();
    oom.Shutdown();
  }
};

}  // namespace kyb

#endif  // KYBERNATE_ADDON_H_
