#include "criu.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "errors.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace kyb {

namespace {

// Our own declarations of libcriu's C ABI (lib/c/criu.h, stable since CRIU 3.x), so the addon builds
// without libcriu-dev and its protobuf-c headers: criu_opts is opaque, the enums are plain ints.
struct criu_opts;
struct FeatureCheck {  // struct criu_feature_check
  bool mem_track;
  bool lazy_pages;
  bool pidfd_store;
};

struct CriuLib {
  std::string error;  // why loading failed; empty when loaded
  // Required.
  int (*init_opts)(criu_opts**) = nullptr;
  void (*free_opts)(criu_opts*) = nullptr;
  void (*set_service_fd)(criu_opts*, int) = nullptr;
  void (*set_pid)(criu_opts*, int) = nullptr;
  void (*set_images_dir_fd)(criu_opts*, int) = nullptr;
  void (*set_work_dir_fd)(criu_opts*, int) = nullptr;
  void (*set_leave_running)(criu_opts*, bool) = nullptr;
  void (*set_shell_job)(criu_opts*, bool) = nullptr;
  void (*set_tcp_established)(criu_opts*, bool) = nullptr;
  void (*set_ext_unix_sk)(criu_opts*, bool) = nullptr;
  void (*set_file_locks)(criu_opts*, bool) = nullptr;
  void (*set_log_level)(criu_opts*, int) = nullptr;
  int (*set_log_file)(criu_opts*, const char*) = nullptr;  // void before 3.17: the result is ignored
  void (*set_manage_cgroups_mode)(criu_opts*, int) = nullptr;
  int (*add_ext_mount)(criu_opts*, const char*, const char*) = nullptr;
  int (*add_external)(criu_opts*, const char*) = nullptr;
  int (*check)(criu_opts*) = nullptr;
  int (*dump)(criu_opts*) = nullptr;
  int (*restore)(criu_opts*) = nullptr;
  int (*get_version)(criu_opts*) = nullptr;
  // Optional (CRIU >= 3.15): absent → feature check reports "unsupported by this libcriu".
  int (*feature_check)(criu_opts*, FeatureCheck*, size_t) = nullptr;
};

template <typename F>
bool Resolve(void* h, const char* name, F& out, bool required, std::string& error) {
  out = reinterpret_cast<F>(dlsym(h, name));
  if (out == nullptr && required && error.empty()) error = std::string("libcriu lacks required symbol ") + name;
  return out != nullptr || !required;
}

// libcriu is process-wide (one handle for every environment and worker), so the table is a function
// static, initialised once and never unloaded: workers may still run when an environment goes away.
const CriuLib& Lib(const std::string& path) {
  static const CriuLib lib = [&] {
    CriuLib l;
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* e = dlerror();
      l.error = std::string("libcriu not found (") + (e != nullptr ? e : path) + ")";
      return l;
    }
    std::string& err = l.error;
    Resolve(h, "criu_local_init_opts", l.init_opts, true, err);
    Resolve(h, "criu_local_free_opts", l.free_opts, true, err);
    Resolve(h, "criu_local_set_service_fd", l.set_service_fd, true, err);
    Resolve(h, "criu_local_set_pid", l.set_pid, true, err);
    Resolve(h, "criu_local_set_images_dir_fd", l.set_images_dir_fd, true, err);
    Resolve(h, "criu_local_set_work_dir_fd", l.set_work_dir_fd, true, err);
    Resolve(h, "criu_local_set_leave_running", l.set_leave_running, true, err);
    Resolve(h, "criu_local_set_shell_job", l.set_shell_job, true, err);
    Resolve(h, "criu_local_set_tcp_established", l.set_tcp_established, true, err);
    Resolve(h, "criu_local_set_ext_unix_sk", l.set_ext_unix_sk, true, err);
    Resolve(h, "criu_local_set_file_locks", l.set_file_locks, true, err);
    Resolve(h, "criu_local_set_log_level", l.set_log_level, true, err);
    Resolve(h, "criu_local_set_log_file", l.set_log_file, true, err);
    Resolve(h, "criu_local_set_manage_cgroups_mode", l.set_manage_cgroups_mode, true, err);
    Resolve(h, "criu_local_add_ext_mount", l.add_ext_mount, true, err);
    Resolve(h, "criu_local_add_external", l.add_external, true, err);
    Resolve(h, "criu_local_check", l.check, true, err);
    Resolve(h, "criu_local_dump", l.dump, true, err);
    Resolve(h, "criu_local_restore", l.restore, true, err);
    Resolve(h, "criu_local_get_version", l.get_version, true, err);
    Resolve(h, "criu_local_feature_check", l.feature_check, false, err);
    return l;
  }();
  return lib;
}

enum class Kind { kVersion, kCheck, kFeatures, kDump, kRestore };

const char* OpName(Kind k) {
  switch (k) {
    case Kind::kVersion: return "criuVersion";
    case Kind::kCheck: return "criuCheck";
    case Kind::kFeatures: return "criuFeatures";
    case Kind::kDump: return "criuDump";
    case Kind::kRestore: return "criuRestore";
  }
  return "criu";
}

struct Baton {
  Kind kind;
  const CriuLib* lib = nullptr;
  std::string binary;  // absolute path of the criu binary (the TS wrapper resolves PATH)
  int pid = 0;
  std::string imagesDir, workDir, logFile;
  int logLevel = 2;
  bool leaveRunning = false, shellJob = false, tcpEstablished = false, extUnixSk = false, fileLocks = false;
  int cgMode = -1;  // enum criu_cg_mode; -1 = CRIU's default
  std::vector<std::pair<std::string, std::string>> extMounts;
  std::vector<std::string> external;
  int timeoutMs = 0;  // 0 = no deadline
  // CRIU_FAULT=130 (FI_NO_BREAKPOINTS): criu stops the parasite by tracing syscalls instead of a
  // hardware breakpoint. Needed where debug registers do not work (seen in a VM: every dump hung).
  bool noBreakpoints = false;
  // Results.
  int result = 0;
  FeatureCheck features{};
  Failure fail;
  int criuErrno = 0;
  bool timedOut = false;
  std::vector<std::string> logErrors;
  std::string logPath;
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// fork+exec `criu swrk 3` with `sk` as its fd 3. Everything the child needs is built before fork.
pid_t SpawnSwrk(const std::string& binary, int sk, char* const* envp) {
  const char* argv[] = {binary.c_str(), "swrk", "3", nullptr};
  pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: async-signal-safe calls only. Node ignores SIGPIPE and the worker thread may block
  // signals; criu expects neither.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGPIPE, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (sk == 3) {
    fcntl(3, F_SETFD, 0);
  } else if (dup2(sk, 3) < 0) {
    _exit(126);
  }
  syscall(SYS_close_range, 4U, ~0U, CLOSE_RANGE_CLOEXEC);
  execve(argv[0], const_cast<char* const*>(argv), envp);
  _exit(127);
}

// CRIU's "Error" lines from its log (what crun shows), else the log's last lines.
void ReadLog(Baton& b, int dirFd) {
  if (b.logFile.empty() || dirFd < 0) return;
  Fd f;
  f.fd = openat(dirFd, b.logFile.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) return;
  // The interesting lines are near the end; a debug log can be large.
  off_t size = lseek(f.fd, 0, SEEK_END);
  off_t from = size > (1 << 20) ? size - (1 << 20) : 0;
  std::string text;
  text.resize(static_cast<size_t>(size - from));
  ssize_t got = pread(f.fd, text.data(), text.size(), from);
  if (got < 0) return;
  text.resize(static_cast<size_t>(got));
  std::vector<std::string> lines, errors;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    if (line.find("Error (") != std::string::npos || line.rfind("Error ", 0) == 0) errors.push_back(line);
    lines.push_back(std::move(line));
  }
  // A failing criu logs a few errors; more than 20 is noise after the first ones.
  if (errors.size() > 20) errors.resize(20);
  if (errors.empty()) {
    size_t n = lines.size() > 5 ? 5 : lines.size();
    errors.assign(lines.end() - static_cast<long>(n), lines.end());
  }
  b.logErrors = std::move(errors);
}

int Call(Baton& b, criu_opts* opts) {
  const CriuLib& l = *b.lib;
  switch (b.kind) {
    case Kind::kVersion: return l.get_version(opts);
    case Kind::kCheck: return l.check(opts);
    case Kind::kFeatures:
      b.features = FeatureCheck{true, true, true};
      return l.feature_check(opts, &b.features, sizeof b.features);
    case Kind::kDump: return l.dump(opts);
    case Kind::kRestore: return l.restore(opts);
  }
  return -EINVAL;
}

void Run(Baton& b) {
  const CriuLib& l = *b.lib;
  const char* op = OpName(b.kind);
  if (b.kind == Kind::kFeatures && l.feature_check == nullptr) {
    b.fail = Failure{op, ENOSYS, "criu feature check needs libcriu >= 3.15"};
    return;
  }
  Fd images, work;
  if (!b.imagesDir.empty()) {
    images.fd = open(b.imagesDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (images.fd < 0) {
      b.fail = Failure{op, errno, "", b.imagesDir, b.pid};
      b.fail.message = std::string(op) + ": images directory " + b.imagesDir;
      return;
    }
  }
  if (!b.workDir.empty()) {
    work.fd = open(b.workDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (work.fd < 0) {
      b.fail = Failure{op, errno, std::string(op) + ": work directory " + b.workDir, b.workDir, b.pid};
      return;
    }
  }
  int logDir = work.fd >= 0 ? work.fd : images.fd;
  if (!b.logFile.empty() && logDir >= 0)
    b.logPath = (work.fd >= 0 ? b.workDir : b.imagesDir) + "/" + b.logFile;

  int sks[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sks) < 0) {
    b.fail = Failure{op, errno, std::string(op) + ": socketpair"};
    return;
  }
  std::vector<std::string> envStore;
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e)
    if (!b.noBreakpoints || strncmp(*e, "CRIU_FAULT=", 11) != 0) envStore.emplace_back(*e);
  if (b.noBreakpoints) envStore.emplace_back("CRIU_FAULT=130");
  for (auto& e : envStore) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t swrk = SpawnSwrk(b.binary, sks[1], envp.data());
  int spawnErr = errno;
  close(sks[1]);
  if (swrk < 0) {
    close(sks[0]);
    b.fail = Failure{op, spawnErr, std::string(op) + ": fork criu swrk"};
    return;
  }

  criu_opts* opts = nullptr;
  if (l.init_opts(&opts) < 0 || opts == nullptr) {
    close(sks[0]);
    kill(swrk, SIGKILL);
    waitpid(swrk, nullptr, 0);
    b.fail = Failure{op, ENOMEM, std::string(op) + ": criu_local_init_opts failed"};
    return;
  }
  // From here libcriu owns sks[0]: it closes the service fd after the request.
  l.set_service_fd(opts, sks[0]);
  if (images.fd >= 0) l.set_images_dir_fd(opts, images.fd);
  if (work.fd >= 0) l.set_work_dir_fd(opts, work.fd);
  if (!b.logFile.empty()) {
    l.set_log_file(opts, b.logFile.c_str());
    l.set_log_level(opts, b.logLevel);
  }
  if (b.kind == Kind::kDump || b.kind == Kind::kRestore) {
    if (b.pid > 0) l.set_pid(opts, b.pid);
    l.set_leave_running(opts, b.leaveRunning);
    l.set_shell_job(opts, b.shellJob);
    l.set_tcp_established(opts, b.tcpEstablished);
    l.set_ext_unix_sk(opts, b.extUnixSk);
    l.set_file_locks(opts, b.fileLocks);
    if (b.cgMode >= 0) l.set_manage_cgroups_mode(opts, b.cgMode);
    for (auto& m : b.extMounts) l.add_ext_mount(opts, m.first.c_str(), m.second.c_str());
    for (auto& e : b.external) l.add_external(opts, e.c_str());
  }

  // The deadline kills criu: libcriu's recv then fails, and the tasks criu had seized are detached
  // (a tracer's death resumes its tracees), so the process keeps running.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog;
  if (b.timeoutMs > 0) {
    watchdog = std::thread([&] {
      std::unique_lock<std::mutex> lk(mu);
      if (!cv.wait_for(lk, std::chrono::milliseconds(b.timeoutMs), [&] { return done; })) {
        b.timedOut = true;
        kill(swrk, SIGKILL);
      }
    });
  }
  int ret = Call(b, opts);
  // libcriu keeps the response's cr_errno in a library-global variable and copies it to errno on
  // return; under concurrent calls it may belong to another call, so it is informational only.
  int callErrno = errno;
  {
    std::lock_guard<std::mutex> lk(mu);
    done = true;
  }
  cv.notify_all();
  if (watchdog.joinable()) watchdog.join();
  l.free_opts(opts);
  // criu swrk exits once libcriu closed the socket. ECHILD: a P_ALL reaper took it (see criu.h).
  while (waitpid(swrk, nullptr, 0) < 0 && errno == EINTR) {
  }

  if (b.timedOut) {
    ReadLog(b, logDir);
    b.fail = Failure{op, ETIMEDOUT, "", "", b.pid};
    b.fail.message = std::string(op) + ": criu did not finish within " + std::to_string(b.timeoutMs) +
                     " ms and was killed";
    return;
  }
  bool failed = b.kind == Kind::kVersion ? ret <= 0 : ret < 0;
  if (!failed) {
    b.result = ret;
    return;
  }
  b.criuErrno = ret == -EBADE ? callErrno : 0;
  ReadLog(b, logDir);
  std::string msg = std::string(op) + ": ";
  switch (-ret) {
    case EBADE: msg += "criu reported failure"; break;
    case ECONNREFUSED: msg += "could not start criu (" + b.binary + ")"; break;
    case ECOMM: msg += "lost the connection to criu (it exited or crashed)"; break;
    case EINVAL: msg += "criu does not support this request (too old?)"; break;
    case EBADMSG: msg += "unexpected response from criu"; break;
    default: msg += "failed (" + std::to_string(ret) + ")";
  }
  if (b.pid > 0) msg += " for pid " + std::to_string(b.pid);
  // The last error before criu's closing "Dumping FAILED." is the cause; earlier ones are often
  // warnings logged at error level.
  for (auto it = b.logErrors.rbegin(); it != b.logErrors.rend(); ++it) {
    if (it->find("FAILED") != std::string::npos && it + 1 != b.logErrors.rend()) continue;
    msg += ": " + *it;
    break;
  }
  b.fail = Failure{op, 0, msg, "", b.pid};
}

class Worker : public Napi::AsyncWorker {
 public:
  Worker(Napi::Env env, Baton baton)
      : Napi::AsyncWorker(env, "kybernate.criu"), b_(std::move(baton)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override { Run(b_); }
  void OnOK() override {
    Napi::Env env = Env();
    if (b_.fail.failed()) {
      Napi::Error e = MakeError(env, b_.fail);
      if (b_.fail.err == 0) e.Set("code", Napi::String::New(env, "KYB_ERR_NATIVE"));
      e.Set("criuErrno", Napi::Number::New(env, b_.criuErrno));
      Napi::Array lines = Napi::Array::New(env, b_.logErrors.size());
      for (size_t i = 0; i < b_.logErrors.size(); ++i) lines.Set(static_cast<uint32_t>(i), b_.logErrors[i]);
      e.Set("logErrors", lines);
      if (!b_.logPath.empty()) e.Set("logFile", Napi::String::New(env, b_.logPath));
      deferred_.Reject(e.Value());
      return;
    }
    switch (b_.kind) {
      case Kind::kCheck:
      case Kind::kDump: deferred_.Resolve(env.Undefined()); break;
      case Kind::kVersion:
      case Kind::kRestore: deferred_.Resolve(Napi::Number::New(env, b_.result)); break;
      case Kind::kFeatures: {
        Napi::Object o = Napi::Object::New(env);
        o.Set("memTrack", b_.features.mem_track);
        o.Set("lazyPages", b_.features.lazy_pages);
        o.Set("pidfdStore", b_.features.pidfd_store);
        deferred_.Resolve(o);
        break;
      }
    }
  }

 private:
  Baton b_;
  Napi::Promise::Deferred deferred_;
};

std::string OptString(const Napi::Object& o, const char* key, const std::string& def = "") {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) throw Napi::TypeError::New(o.Env(), std::string(key) + " must not contain NUL");
  return s;
}

int OptInt(const Napi::Object& o, const char* key, int def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a number");
  return v.As<Napi::Number>().Int32Value();
}

bool OptBool(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

Napi::Value Queue(const Napi::CallbackInfo& info, Kind kind) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  Baton b;
  b.kind = kind;
  b.binary = OptString(o, "binary");
  if (b.binary.empty() || b.binary[0] != '/') throw Napi::TypeError::New(env, "binary must be an absolute path");
  const CriuLib& lib = Lib(OptString(o, "libcriu", "libcriu.so.2"));
  if (!lib.error.empty()) {
    Failure f{OpName(kind), 0, lib.error};
    Napi::Error e = MakeError(env, f);
    e.Set("code", Napi::String::New(env, "KYB_ERR_NATIVE"));
    e.Set("criuMissing", Napi::Boolean::New(env, true));
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(e.Value());
    return d.Promise();
  }
  b.lib = &lib;
  b.imagesDir = OptString(o, "imagesDir");
  b.workDir = OptString(o, "workDir");
  b.logFile = OptString(o, "logFile");
  if (b.logFile.find('/') != std::string::npos)
    throw Napi::TypeError::New(env, "logFile is a name inside workDir, without '/'");
  b.logLevel = OptInt(o, "logLevel", 2);
  b.timeoutMs = OptInt(o, "timeoutMs", 0);
  b.noBreakpoints = OptBool(o, "noBreakpoints");
  if (kind == Kind::kDump || kind == Kind::kRestore) {
    if (b.imagesDir.empty()) throw Napi::TypeError::New(env, "imagesDir is required");
    b.pid = OptInt(o, "pid", 0);
    if (kind == Kind::kDump && b.pid <= 0) throw Napi::TypeError::New(env, "pid must be a positive number");
    b.leaveRunning = OptBool(o, "leaveRunning");
    b.shellJob = OptBool(o, "shellJob");
    b.tcpEstablished = OptBool(o, "tcpEstablished");
    b.extUnixSk = OptBool(o, "extUnixSk");
    b.fileLocks = OptBool(o, "fileLocks");
    b.cgMode = OptInt(o, "manageCgroupsMode", -1);
    Napi::Value mounts = o.Get("extMounts");
    if (mounts.IsArray()) {
      Napi::Array a = mounts.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        Napi::Value p = a.Get(i);
        if (!p.IsArray() || p.As<Napi::Array>().Length() != 2)
          throw Napi::TypeError::New(env, "extMounts must be [key, value] pairs");
        Napi::Array pair = p.As<Napi::Array>();
        b.extMounts.emplace_back(pair.Get(0u).ToString().Utf8Value(), pair.Get(1u).ToString().Utf8Value());
      }
    }
    Napi::Value ext = o.Get("external");
    if (ext.IsArray()) {
      Napi::Array a = ext.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) b.external.push_back(a.Get(i).ToString().Utf8Value());
    }
  }
  auto* w = new Worker(env, std::move(b));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

Napi::Value CriuVersion(const Napi::CallbackInfo& info) { return Queue(info, Kind::kVersion); }
Napi::Value CriuCheck(const Napi::CallbackInfo& info) { return Queue(info, Kind::kCheck); }
Napi::Value CriuFeatures(const Napi::CallbackInfo& info) { return Queue(info, Kind::kFeatures); }
Napi::Value CriuDump(const Napi::CallbackInfo& info) { return Queue(info, Kind::kDump); }
Napi::Value CriuRestore(const Napi::CallbackInfo& info) { return Queue(info, Kind::kRestore); }

}  // namespace kyb
