#include "fd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <string>

#include "errors.h"

namespace kyb {

namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Inputs and outputs of one receiveFd call; Execute() touches only this.
struct ReceiveBaton {
  int listenFd;
  int timeoutMs;
  int fd = -1;
  Failure fail;
};

// Accepts one connection on the console socket and takes the fd it sends (runc sends the pty
// master with the pty's name as payload).
void ReceiveOne(ReceiveBaton& b) {
  const int64_t deadline = NowMs() + b.timeoutMs;
  auto timedOut = [&] {
    b.fail.op = "receiveFd";
    b.fail.err = ETIMEDOUT;
    b.fail.message = "receiveFd: no fd received within " + std::to_string(b.timeoutMs) + " ms";
  };
  pollfd pfd{b.listenFd, POLLIN, 0};
  for (;;) {
    int64_t left = deadline - NowMs();
    if (left <= 0) return timedOut();
    int r = poll(&pfd, 1, static_cast<int>(left));
    if (r > 0) break;
    if (r == 0) return timedOut();
    if (errno != EINTR) {
      b.fail = Failure{"receiveFd", errno, "receiveFd: poll"};
      return;
    }
  }
  int conn = accept4(b.listenFd, nullptr, nullptr, SOCK_CLOEXEC);
  if (conn < 0) {
    b.fail = Failure{"receiveFd", errno, "receiveFd: accept"};
    return;
  }
  int64_t left = deadline - NowMs();
  if (left < 1) left = 1;
  timeval tv{static_cast<time_t>(left / 1000), static_cast<suseconds_t>((left % 1000) * 1000)};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  char payload[4096];
  iovec iov{payload, sizeof payload};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  close(conn);
  if (n < 0) {
    if (err == EAGAIN || err == EWOULDBLOCK) return timedOut();
    b.fail = Failure{"receiveFd", err, "receiveFd: recvmsg"};
    return;
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int* fds = reinterpret_cast<int*>(CMSG_DATA(c));
    for (size_t i = 0; i < count; ++i) {
      if (b.fd < 0)
        b.fd = fds[i];
      else
        close(fds[i]);  // only one fd is expected; never leak extras
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    if (b.fd >= 0) close(b.fd);
    b.fd = -1;
    b.fail = Failure{"receiveFd", 0, "receiveFd: control message truncated (too many fds sent)"};
    return;
  }
  if (b.fd < 0) b.fail = Failure{"receiveFd", 0, "receiveFd: the peer sent no fd"};
}

class ReceiveWorker : public Napi::AsyncWorker {
 public:
  ReceiveWorker(Napi::Env env, ReceiveBaton baton)
      : Napi::AsyncWorker(env, "kybernate.receiveFd"), baton_(baton), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    ReceiveOne(baton_);
    close(baton_.listenFd);
  }
  void OnOK() override {
    if (baton_.fail.failed())
      deferred_.Reject(MakeError(Env(), baton_.fail).Value());
    else
      deferred_.Resolve(Napi::Number::New(Env(), baton_.fd));
  }

 private:
  ReceiveBaton baton_;
  Napi::Promise::Deferred deferred_;
};

}  // namespace

Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) ThrowErrno(info.Env(), "pipe", errno);
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, Napi::Number::New(info.Env(), p[0]));
  a.Set(1u, Napi::Number::New(info.Env(), p[1]));
  return a;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  // Linux releases the fd even when close() reports EINTR, so it is never retried.
  if (close(fd) < 0 && errno != EINTR) ThrowErrno(info.Env(), "close", errno, "fd " + std::to_string(fd));
  return info.Env().Undefined();
}

Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  if (info.Length() < 2 || !info[1].IsBoolean()) throw Napi::TypeError::New(info.Env(), "on must be a boolean");
  bool on = info[1].As<Napi::Boolean>().Value();
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) < 0)
    ThrowErrno(info.Env(), "setNonBlocking", errno, "fd " + std::to_string(fd));
  return info.Env().Undefined();
}

Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) ThrowErrno(info.Env(), "listenUnix", ENAMETOOLONG, path);
  path.copy(addr.sun_path, path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(info.Env(), "listenUnix", errno, path);
  // chmod after bind leaves a short window with the umask's mode; callers put the socket in a
  // directory only root can enter, as containerd does for console sockets.
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || chmod(path.c_str(), 0600) < 0 ||
      listen(fd, 1) < 0) {
    int e = errno;
    close(fd);
    ThrowErrno(info.Env(), "listenUnix", e, path);
  }
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value ReceiveFd(const Napi::CallbackInfo& info) {
  int listenFd = ArgInt(info, 0, "listenFd");
  int timeoutMs = ArgInt(info, 1, "timeoutMs");
  if (timeoutMs < 0) throw Napi::TypeError::New(info.Env(), "timeoutMs must be >= 0");
  // The worker polls its own copy: if JS closes listenFd meanwhile, the number could be reused by an
  // unrelated fd, and the worker must not accept() on that.
  int own = fcntl(listenFd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) ThrowErrno(info.Env(), "receiveFd", errno, "fd " + std::to_string(listenFd));
  ReceiveBaton b{own, timeoutMs};
  auto* w = new ReceiveWorker(info.Env(), b);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value SetWinsize(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  int cols = ArgInt(info, 1, "cols");
  int rows = ArgInt(info, 2, "rows");
  if (cols < 0 || rows < 0 || cols > 0xffff || rows > 0xffff)
    throw Napi::RangeError::New(info.Env(), "cols and rows must be within 0..65535");
  winsize ws{};
  ws.ws_col = static_cast<unsigned short>(cols);
  ws.ws_row = static_cast<unsigned short>(rows);
  if (ioctl(fd, TIOCSWINSZ, &ws) < 0) ThrowErrno(info.Env(), "setWinsize", errno, "fd " + std::to_string(fd));
  return info.Env().Undefined();
}

Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    ThrowErrno(info.Env(), "peerCredentials", errno, "fd " + std::to_string(fd));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("pid", Napi::Number::New(info.Env(), cred.pid));
  o.Set("uid", Napi::Number::New(info.Env(), cred.uid));
  o.Set("gid", Napi::Number::New(info.Env(), cred.gid));
  return o;
}

}  // namespace kyb
