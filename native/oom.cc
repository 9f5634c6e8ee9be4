#include "oom.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "errors.h"

namespace kyb {

void OomWatcher::EnsureThread(Napi::Env env) {
  if (thread_.joinable()) return;
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) ThrowErrno(env, "watchOomV1", errno);
  wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  if (wake_ < 0 || epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_, &ev) < 0) {
    int e = errno;
    if (wake_ >= 0) close(wake_);
    close(epfd_);
    wake_ = epfd_ = -1;
    ThrowErrno(env, "watchOomV1", e);
  }
  stopping_ = false;
  thread_ = std::thread([this] { Loop(); });
}

uint32_t OomWatcher::Watch(Napi::Env env, const std::string& dir, Napi::Function cb) {
  EnsureThread(env);
  const std::string oomControl = dir + "/memory.oom_control";
  const std::string eventControl = dir + "/cgroup.event_control";
  int ofd = open(oomControl.c_str(), O_RDONLY | O_CLOEXEC);
  if (ofd < 0) ThrowErrno(env, "watchOomV1", errno, oomControl);
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    int e = errno;
    close(ofd);
    ThrowErrno(env, "watchOomV1", e, dir);
  }
  int cfd = open(eventControl.c_str(), O_WRONLY | O_CLOEXEC);
  if (cfd < 0) {
    int e = errno;
    close(ofd);
    close(efd);
    ThrowErrno(env, "watchOomV1", e, eventControl);
  }
  // The kernel holds its own references once the line is written, so both files close here.
  const std::string line = std::to_string(efd) + " " + std::to_string(ofd);
  ssize_t w = write(cfd, line.data(), line.size());
  int e = errno;
  close(cfd);
  close(ofd);
  if (w < 0) {
    close(efd);
    ThrowErrno(env, "watchOomV1", e, eventControl);
  }

  std::lock_guard<std::mutex> lk(mu_);
  uint32_t id = next_++;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = id;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, efd, &ev) < 0) {
    int err = errno;
    close(efd);
    ThrowErrno(env, "watchOomV1", err, dir);
  }
  Napi::ThreadSafeFunction tsfn = Napi::ThreadSafeFunction::New(env, cb, "kybernate.oom", 0, 1);
  tsfn.Unref(env);
  watches_.emplace(id, Entry{efd, dir, tsfn});
  return id;
}

void OomWatcher::Drop(std::map<uint32_t, Entry>::iterator it) {
  epoll_ctl(epfd_, EPOLL_CTL_DEL, it->second.efd, nullptr);
  close(it->second.efd);
  it->second.tsfn.Release();
  watches_.erase(it);
}

bool OomWatcher::Unwatch(uint32_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = watches_.find(id);
  if (it == watches_.end()) return false;
  Drop(it);
  return true;
}

bool OomWatcher::Active(uint32_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  return watches_.count(id) > 0;
}

void OomWatcher::Loop() {
  epoll_event evs[16];
  for (;;) {
    int n = epoll_wait(epfd_, evs, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return;
    for (int i = 0; i < n; ++i) {
      uint64_t id = evs[i].data.u64;
      auto it = watches_.find(static_cast<uint32_t>(id));
      if (id == 0 || it == watches_.end()) continue;  // unwatched since epoll_wait returned
      uint64_t count;
      if (read(it->second.efd, &count, sizeof count) != sizeof count) continue;
      // Removing the cgroup also signals the eventfd; that is no OOM, and the watch is over.
      if (access(it->second.dir.c_str(), F_OK) != 0) {
        Drop(it);
        continue;
      }
      it->second.tsfn.NonBlockingCall();
    }
  }
}

void OomWatcher::Shutdown() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  uint64_t one = 1;
  if (write(wake_, &one, sizeof one) < 0) {
    // eventfd write only fails on counter overflow, which cannot happen with one writer
  }
  thread_.join();
  std::lock_guard<std::mutex> lk(mu_);
  while (!watches_.empty()) Drop(watches_.begin());
  close(wake_);
  close(epfd_);
  wake_ = epfd_ = -1;
}

Napi::Value WatchOomV1(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "memoryCgroupDir");
  Napi::Function cb = ArgFunction(info, 1, "cb");
  return Napi::Number::New(info.Env(), Addon::Of(info.Env())->oom.Watch(info.Env(), dir, cb));
}

Napi::Value UnwatchOomV1(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), Addon::Of(info.Env())->oom.Unwatch(static_cast<uint32_t>(ArgInt(info, 0, "id"))));
}

Napi::Value OomWatchActive(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), Addon::Of(info.Env())->oom.Active(static_cast<uint32_t>(ArgInt(info, 0, "id"))));
}

}  // namespace kyb
