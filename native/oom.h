// cgroup v1 OOM notifications (memory.oom_control through cgroup.event_control), one epoll thread
// for every watch, each watch calling its JS callback through an unref'd ThreadSafeFunction.
#ifndef KYBERNATE_OOM_H_
#define KYBERNATE_OOM_H_

#include <napi.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace kyb {

class OomWatcher {
 public:
  // Registers the watch; throws on failure. Returns an id > 0.
  uint32_t Watch(Napi::Env env, const std::string& dir, Napi::Function cb);
  // False if the id is unknown (already removed, or its cgroup is gone).
  bool Unwatch(uint32_t id);
  bool Active(uint32_t id);
  // Joins the thread and drops every watch (env teardown).
  void Shutdown();

 private:
  struct Entry {
    int efd;
    std::string dir;
    Napi::ThreadSafeFunction tsfn;
  };
  void EnsureThread(Napi::Env env);
  void Loop();
  void Drop(std::map<uint32_t, Entry>::iterator it);  // mu_ held

  std::mutex mu_;
  std::map<uint32_t, Entry> watches_;
  uint32_t next_ = 1;
  int epfd_ = -1;
  int wake_ = -1;  // eventfd with epoll data 0: Shutdown() writes it
  bool stopping_ = false;
  std::thread thread_;
};

Napi::Value WatchOomV1(const Napi::CallbackInfo& info);
Napi::Value UnwatchOomV1(const Napi::CallbackInfo& info);
Napi::Value OomWatchActive(const Napi::CallbackInfo& info);

}  // namespace kyb

#endif  // KYBERNATE_OOM_H_
