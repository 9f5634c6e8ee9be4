#include "reaper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "addon.h"
#include "errors.h"

namespace kyb {

namespace {
// Safety net for the "no children" sleep: an orphan re-parented to us, or a child forked by someone
// other than spawn() (libuv), is still reaped within this time.
constexpr auto kIdleWait = std::chrono::milliseconds(500);
}  // namespace

void Reaper::Start(Napi::Env env, Addon* addon, Napi::Function onExit) {
  if (running_) return;
  tsfn_ = Tsfn::New(env, onExit, "kybernate.reaper", 0, 1, addon);
  tsfn_.Unref(env);
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = false;
    stopper_ = 0;
    stopperReaped_ = false;
  }
  running_ = true;
  thread_ = std::thread([this] { Loop(); });
}

void Reaper::NotifySpawn() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++spawns_;
  }
  cv_.notify_all();
}

void Reaper::SetRef(Napi::Env env, bool ref) {
  if (!running_) return;
  if (ref)
    tsfn_.Ref(env);
  else
    tsfn_.Unref(env);
}

// A blocking waitid() cannot be interrupted without a signal handler, so Stop() makes it return by
// creating a child that exits. The child waits on a pipe until stopper_ holds its pid, so the loop
// always recognises it and never reports it to JS.
pid_t Reaper::ForkStopper() {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);  // Node's handlers must not run in the child
  pid_t pid = fork();
  if (pid == 0) {
    char c;
    close(p[1]);
    while (read(p[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid > 0) {
    std::lock_guard<std::mutex> lk(mu_);
    stopper_ = pid;
  }
  close(p[1]);  // releases the child
  close(p[0]);
  return pid;
}

void Reaper::Stop() {
  if (!running_) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  pid_t stopper = ForkStopper();
  thread_.join();
  bool reaped;
  {
    std::lock_guard<std::mutex> lk(mu_);
    reaped = stopperReaped_;
  }
  if (stopper > 0 && !reaped) waitpid(stopper, nullptr, 0);
  tsfn_.Release();
  running_ = false;
}

void Reaper::Loop() {
  for (;;) {
    uint64_t seen;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      seen = spawns_;
    }
    siginfo_t si{};
    if (waitid(P_ALL, 0, &si, WEXITED) == 0) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (si.si_pid == stopper_ && stopper_ != 0) {
          stopperReaped_ = true;
          continue;
        }
      }
      auto* ev = new ExitEvent{si.si_pid, 0, 0};
      if (si.si_code == CLD_EXITED) {
        ev->status = si.si_status;
      } else {  // CLD_KILLED or CLD_DUMPED: WEXITED reports nothing else
        ev->signal = si.si_status;
        ev->status = 128 + si.si_status;
      }
      if (tsfn_.NonBlockingCall(ev) != napi_ok) delete ev;
      continue;
    }
    if (errno == EINTR) continue;
    // ECHILD (or anything unexpected): sleep until spawn() forks or the safety timeout passes.
    // `seen` was read before waitid, so a fork that raced with it has already bumped spawns_.
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, kIdleWait, [&] { return stopping_ || spawns_ != seen; });
  }
}

void Reaper::DeliverToJs(Napi::Env env, Napi::Function fn, Addon* addon, ExitEvent* ev) {
  ExitEvent e = *ev;
  delete ev;
  if (env == nullptr) return;  // environment is being torn down
  if (addon->failedSpawns.erase(e.pid) > 0) return;
  fn.Call({Napi::Number::New(env, e.pid), Napi::Number::New(env, e.status),
           Napi::Number::New(env, e.signal)});
}

Napi::Value SetSubreaper(const Napi::CallbackInfo& info) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) ThrowErrno(info.Env(), "setSubreaper", errno);
  return info.Env().Undefined();
}

Napi::Value StartReaper(const Napi::CallbackInfo& info) {
  Napi::Function cb = ArgFunction(info, 0, "onExit");
  Addon* addon = Addon::Of(info.Env());
  addon->reaper.Start(info.Env(), addon, cb);
  return info.Env().Undefined();
}

Napi::Value StopReaper(const Napi::CallbackInfo& info) {
  Addon::Of(info.Env())->reaper.Stop();
  return info.Env().Undefined();
}

Napi::Value ReaperRef(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean())
    throw Napi::TypeError::New(info.Env(), "ref must be a boolean");
  Addon::Of(info.Env())->reaper.SetRef(info.Env(), info[0].As<Napi::Boolean>().Value());
  return info.Env().Undefined();
}

}  // namespace kyb
