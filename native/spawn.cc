#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace kyb {

namespace {

// Default search path when the child's env has no PATH (the same as glibc's execvpe).
constexpr const char* kDefaultPath = "/bin:/usr/bin";

enum Stage : int { kDup = 1, kPdeathsig, kSetsid, kCloseFds, kChdir, kExec };

struct ChildFailure {
  int stage;
  int err;
};

// Everything the child touches, built before fork: after fork the child may only make
// async-signal-safe calls, so it must not allocate.
struct Plan {
  std::string file;
  std::vector<std::string> argStore, envStore, candidates;
  std::vector<char*> argv, envp;
  std::string cwd;
  std::vector<int> sources;  // target fd i <- sources[i]; -1 = /dev/null
  std::vector<int> scratch;  // one slot per target, for the child's temporary dups
  int deathSignal = 0;
  bool setsid = false;
  int maxFd = 0;  // close-loop bound if close_range is unavailable
};

std::vector<std::string> StringArray(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(key) + " must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) throw Napi::TypeError::New(env, std::string(key) + " must be an array of strings");
    std::string s = e.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos)
      throw Napi::TypeError::New(env, std::string(key) + " must not contain NUL");
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<int> IntArray(Napi::Env env, const Napi::Value& v, const char* key) {
  std::vector<int> out;
  if (v.IsUndefined()) return out;
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(key) + " must be an array of fds");
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) throw Napi::TypeError::New(env, std::string(key) + " must be an array of fds");
    out.push_back(e.As<Napi::Number>().Int32Value());
  }
  return out;
}

Plan ParsePlan(Napi::Env env, const Napi::Object& o) {
  Plan p;
  Napi::Value file = o.Get("file");
  if (!file.IsString()) throw Napi::TypeError::New(env, "file must be a string");
  p.file = file.As<Napi::String>().Utf8Value();
  if (p.file.empty() || p.file.find('\0') != std::string::npos)
    throw Napi::TypeError::New(env, "file must be a non-empty string without NUL");
  p.argStore.push_back(p.file);
  for (auto& a : StringArray(env, o, "args")) p.argStore.push_back(std::move(a));
  p.envStore = StringArray(env, o, "env");

  Napi::Value cwd = o.Get("cwd");
  if (!cwd.IsUndefined()) {
    if (!cwd.IsString()) throw Napi::TypeError::New(env, "cwd must be a string");
    p.cwd = cwd.As<Napi::String>().Utf8Value();
  }
  p.sources = IntArray(env, o.Get("stdio"), "stdio");
  if (p.sources.size() != 3) throw Napi::TypeError::New(env, "stdio must be [stdin, stdout, stderr]");
  for (int fd : IntArray(env, o.Get("extraFds"), "extraFds")) {
    if (fd < 0) throw Napi::TypeError::New(env, "extraFds must be open fds");
    p.sources.push_back(fd);
  }
  p.scratch.assign(p.sources.size(), -1);
  Napi::Value sig = o.Get("deathSignal");
  if (!sig.IsUndefined()) {
    if (!sig.IsNumber()) throw Napi::TypeError::New(env, "deathSignal must be a number");
    p.deathSignal = sig.As<Napi::Number>().Int32Value();
  }
  Napi::Value setsid = o.Get("setsid");
  p.setsid = setsid.IsBoolean() && setsid.As<Napi::Boolean>().Value();

  for (auto& s : p.argStore) p.argv.push_back(s.data());
  p.argv.push_back(nullptr);
  for (auto& s : p.envStore) p.envp.push_back(s.data());
  p.envp.push_back(nullptr);

  // PATH search happens here, with the child's PATH, so the child only loops over execve.
  if (p.file.find('/') == std::string::npos) {
    std::string path = kDefaultPath;
    for (auto& e : p.envStore)
      if (e.compare(0, 5, "PATH=") == 0) path = e.substr(5);
    size_t start = 0;
    for (;;) {
      size_t end = path.find(':', start);
      std::string dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
      p.candidates.push_back((dir.empty() ? std::string(".") : dir) + "/" + p.file);
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  long open_max = sysconf(_SC_OPEN_MAX);
  p.maxFd = open_max > 0 && open_max < (1 << 20) ? static_cast<int>(open_max) : (1 << 20);
  return p;
}

[[noreturn]] void Fail(int errFd, int stage, int err) {
  ChildFailure f{stage, err};
  ssize_t r;
  do {
    r = write(errFd, &f, sizeof f);
  } while (r < 0 && errno == EINTR);
  _exit(127);
}

// Runs in the child between fork and execve: async-signal-safe calls only, no allocation.
[[noreturn]] void Child(Plan& p, int errFd, int devNull, pid_t parent) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < NSIG; ++s) sigaction(s, &dfl, nullptr);  // SIGKILL/SIGSTOP just fail
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  if (p.deathSignal > 0) {
    if (prctl(PR_SET_PDEATHSIG, p.deathSignal, 0, 0, 0) < 0) Fail(errFd, kPdeathsig, errno);
    // The parent may have died before prctl: nobody will send the signal then.
    if (getppid() != parent) raise(p.deathSignal);
  }
  if (p.setsid && setsid() < 0) Fail(errFd, kSetsid, errno);

  // Sources may collide with targets (fd 1 wanted as fd 0, ...): first copy every source and the
  // error pipe above the target range, then place them. dup2 clears CLOEXEC on the targets only.
  const int n = static_cast<int>(p.sources.size());
  if (errFd < n) {
    int moved = fcntl(errFd, F_DUPFD_CLOEXEC, n);
    if (moved < 0) Fail(errFd, kDup, errno);
    errFd = moved;
  }
  for (int i = 0; i < n; ++i) {
    int src = p.sources[i] < 0 ? devNull : p.sources[i];
    p.scratch[i] = fcntl(src, F_DUPFD_CLOEXEC, n);
    if (p.scratch[i] < 0) Fail(errFd, kDup, errno);
  }
  for (int i = 0; i < n; ++i)
    if (dup2(p.scratch[i], i) < 0) Fail(errFd, kDup, errno);
  // Everything above the targets closes at execve; the error pipe must stay open until then.
  if (syscall(SYS_close_range, n, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
    for (int fd = n; fd < p.maxFd; ++fd) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  if (!p.cwd.empty() && chdir(p.cwd.c_str()) < 0) Fail(errFd, kChdir, errno);

  if (p.candidates.empty()) {
    execve(p.file.c_str(), p.argv.data(), p.envp.data());
    Fail(errFd, kExec, errno);
  }
  bool sawEacces = false;
  for (auto& c : p.candidates) {
    execve(c.c_str(), p.argv.data(), p.envp.data());
    switch (errno) {
      case EACCES:
        sawEacces = true;
        break;
      case ENOENT:
      case ENOTDIR:
      case ESTALE:
      case ENODEV:
      case ETIMEDOUT:
        break;
      default:
        Fail(errFd, kExec, errno);
    }
  }
  Fail(errFd, kExec, sawEacces ? EACCES : ENOENT);
}

const char* StageName(int stage) {
  switch (stage) {
    case kDup: return "dup2";
    case kPdeathsig: return "prctl(PR_SET_PDEATHSIG)";
    case kSetsid: return "setsid";
    case kCloseFds: return "close_range";
    case kChdir: return "chdir";
    default: return "execve";
  }
}

}  // namespace

Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Plan p = ParsePlan(env, info[0].As<Napi::Object>());
  Addon* addon = Addon::Of(env);

  int devNull = -1;
  for (int fd : p.sources)
    if (fd < 0 && devNull < 0) {
      devNull = open("/dev/null", O_RDWR | O_CLOEXEC);
      if (devNull < 0) ThrowErrno(env, "spawn", errno, "/dev/null");
    }
  int errPipe[2];
  if (pipe2(errPipe, O_CLOEXEC) < 0) {
    int e = errno;
    if (devNull >= 0) close(devNull);
    ThrowErrno(env, "spawn", e, p.file);
  }

  // All signals stay blocked across fork so none of Node's handlers run in the child; the child
  // resets dispositions to SIG_DFL before unblocking.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) Child(p, errPipe[1], devNull, parent);
  int forkErr = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  close(errPipe[1]);
  if (devNull >= 0) close(devNull);
  if (pid < 0) {
    close(errPipe[0]);
    ThrowErrno(env, "spawn", forkErr, p.file);
  }
  addon->reaper.NotifySpawn();

  // EOF means execve succeeded (the pipe is CLOEXEC); a record means the child failed.
  ChildFailure f{};
  ssize_t r;
  do {
    r = read(errPipe[0], &f, sizeof f);
  } while (r < 0 && errno == EINTR);
  close(errPipe[0]);
  if (r == static_cast<ssize_t>(sizeof f)) {
    if (addon->reaper.running())
      addon->failedSpawns.insert(pid);  // the reaper thread reaps it; its exit is dropped
    else
      waitpid(pid, nullptr, 0);
    Failure fail;
    fail.op = "spawn";
    fail.err = f.err;
    fail.path = f.stage == kChdir ? p.cwd : p.file;
    fail.pid = pid;
    fail.message = "spawn " + p.file;
    if (f.stage != kExec) fail.message += std::string(": ") + StageName(f.stage) + (f.stage == kChdir ? " " + p.cwd : "");
    throw MakeError(env, fail);
  }
  return Napi::Number::New(env, pid);
}

}  // namespace kyb
