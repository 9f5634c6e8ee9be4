// The one place where child exits are collected. A single native thread waits for ANY child
// (waitid P_ALL), because the shim is the child subreaper of its containers and libuv only reaps
// the children it spawned itself. Exits go to JS through an unref'd ThreadSafeFunction.
#ifndef KYBERNATE_REAPER_H_
#define KYBERNATE_REAPER_H_

#include <napi.h>
#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace kyb {

struct Addon;

struct ExitEvent {
  pid_t pid;
  int status;  // exit code, or 128 + signal
  int signal;  // terminating signal, or 0
};

class Reaper {
 public:
  // Idempotent while running; onExit(pid, status, signal) runs on the JS thread.
  void Start(Napi::Env env, Addon* addon, Napi::Function onExit);
  // Stops and joins the thread; exits already queued are still delivered.
  void Stop();
  // Wakes the thread if it sleeps because there were no children.
  void NotifySpawn();
  // Whether exits are being collected (main thread only).
  bool running() const { return running_; }
  // Ref'd while JS waits on a pid, so a pending exit keeps the process alive.
  void SetRef(Napi::Env env, bool ref);

  static void DeliverToJs(Napi::Env env, Napi::Function fn, Addon* addon, ExitEvent* ev);
  using Tsfn = Napi::TypedThreadSafeFunction<Addon, ExitEvent, &Reaper::DeliverToJs>;

 private:
  void Loop();
  pid_t ForkStopper();

  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t spawns_ = 0;  // bumped by NotifySpawn; lets the thread notice a spawn it raced with
  bool stopping_ = false;
  bool running_ = false;
  bool stopperReaped_ = false;
  pid_t stopper_ = 0;  // written before the stopper can exit (it waits on a pipe)
  Tsfn tsfn_;
};

Napi::Value SetSubreaper(const Napi::CallbackInfo& info);
Napi::Value StartReaper(const Napi::CallbackInfo& info);
Napi::Value StopReaper(const Napi::CallbackInfo& info);
Napi::Value ReaperRef(const Napi::CallbackInfo& info);

}  // namespace kyb

#endif  // KYBERNATE_REAPER_H_
