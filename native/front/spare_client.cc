// Client of the warm spare shim (wire format: src/shim/spare/protocol.ts). One request, one answer per
// connection. Invariant: only a complete kind-0 answer is final; everything else (no spare, refused,
// kind 1, EOF, a short or garbled answer, the timeout) returns false and the caller execs Node. A kind-1
// answer means the spare changed nothing; after a timeout the Node path is idempotent for start/delete.
#include <errno.h>
#include <stdio.h>

#include <algorithm>
#include <vector>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "front.h"

extern char** environ;

namespace kybfront {

namespace {

constexpr const char* kDefaultDir = "/run/kybernate/shim-spare";
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxFrame = 16u << 20;  // MAX_FRAME: larger fields are refused by both sides
constexpr int kDefaultTimeoutMs = 10000;

void PutU32(std::string* out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
  out->append(b, 4);
}

void PutBytes(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

int TimeoutMs() {
  // Tests shorten the wait for a spare that never answers; the default covers a busy node.
  const char* v = getenv("KYBERNATE_SHIM_SPARE_TIMEOUT_MS");
  if (v == nullptr || *v == '\0') return kDefaultTimeoutMs;
  char* end;
  long ms = strtol(v, &end, 10);
  return (*end != '\0' || ms <= 0 || ms > 600000) ? kDefaultTimeoutMs : static_cast<int>(ms);
}

// Waits for `events` until the deadline; false on timeout or error.
bool WaitFor(int fd, short events, int64_t deadline_ns) {
  pollfd pfd{fd, events, 0};
  for (;;) {
    int64_t left_ms = (deadline_ns - MonoNs() + 999999) / 1000000;
    if (left_ms <= 0) return false;
    int r = poll(&pfd, 1, static_cast<int>(left_ms));
    if (r > 0) return true;  // POLLERR/POLLHUP too: the next send/recv reports them
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

struct Parser {
  const std::string& buf;
  size_t off = 0;
  bool U32(uint32_t* v) {
    if (buf.size() - off < 4) return false;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(buf.data() + off);
    *v = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    off += 4;
    return true;
  }
  // 1 = read (its place in `buf`), 0 = not all there yet, -1 = too large (garbage). Nothing is copied
  // until the whole answer is there: the answer is parsed again after every read.
  int Bytes(size_t* at, uint32_t* len) {
    if (!U32(len)) return 0;
    if (*len > kMaxFrame) return -1;
    if (buf.size() - off < *len) return 0;
    *at = off;
    off += *len;
    return 1;
  }
};

enum class Answer { kIncomplete, kGarbage, kDone, kFallBack };

Answer ParseAnswer(const std::string& buf, SpareDone* done) {
  size_t head = buf.size() < 4 ? buf.size() : 4;
  if (memcmp(buf.data(), "KYBR", head) != 0) return Answer::kGarbage;
  Parser p{buf};
  p.off = head;
  uint32_t kind, exit_code, out_len, err_len;
  size_t out_at, err_at;
  if (head < 4 || !p.U32(&kind)) return Answer::kIncomplete;
  if (kind == 1) {
    int r = p.Bytes(&out_at, &out_len);  // the reason: for the spare's own log, not containerd's output
    return r == 1 ? Answer::kFallBack : r == 0 ? Answer::kIncomplete : Answer::kGarbage;
  }
  if (kind != 0) return Answer::kGarbage;
  if (!p.U32(&exit_code)) return Answer::kIncomplete;
  int r = p.Bytes(&out_at, &out_len);
  if (r == 1) r = p.Bytes(&err_at, &err_len);
  if (r != 1) return r == 0 ? Answer::kIncomplete : Answer::kGarbage;
  done->exit_code = exit_code;
  done->out.assign(buf, out_at, out_len);
  done->err.assign(buf, err_at, err_len);
  return Answer::kDone;
}

bool Exchange(int fd, const std::string& req, int64_t deadline, SpareDone* done) {
  for (size_t sent = 0; sent < req.size();) {
    // MSG_NOSIGNAL: a spare that closes early must not kill the front with SIGPIPE.
    ssize_t n = send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
    } else if (errno == EAGAIN) {
      if (!WaitFor(fd, POLLOUT, deadline)) return false;
    } else if (errno != EINTR) {
      return false;
    }
  }
  // No shutdown(SHUT_WR): a Node server without allowHalfOpen would end its side on our EOF before
  // it answered. The spare knows the request is whole by decoding it.
  std::string buf;
  char chunk[64 << 10];
  for (;;) {
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      Answer a = ParseAnswer(buf, done);
      if (a == Answer::kDone) return true;
      if (a != Answer::kIncomplete) return false;
      if (buf.size() > 3 * static_cast<size_t>(kMaxFrame)) return false;
    } else if (n == 0) {
      return false;  // EOF before a whole answer
    } else if (errno == EAGAIN) {
      if (!WaitFor(fd, POLLIN, deadline)) return false;
    } else if (errno != EINTR) {
      return false;
    }
  }
}

bool IsImageVar(const char* kv) {
  static const char* const kPrefixes[] = {"LD_", "NODE_", "UV_", "MALLOC_"};
  for (const char* p : kPrefixes) {
    if (strncmp(kv, p, strlen(p)) == 0) return true;
  }
  return strncmp(kv, "GLIBC_TUNABLES=", 15) == 0 || strncmp(kv, "KYBERNATE_ADDON=", 16) == 0;
}

// The environment key of src/shim/spare/launch.ts spareKey(): FNV-1a 64 over the sorted "K=V" entries of
// the variables that shape a process at exec (loader, Node, libuv), each followed by a NUL. A spare booted
// with another such environment listens under another name, so it is never asked.
std::string EnvKey() {
  std::vector<const char*> vars;
  for (char** e = environ; *e != nullptr; e++) {
    if (IsImageVar(*e)) vars.push_back(*e);
  }
  std::sort(vars.begin(), vars.end(), [](const char* a, const char* b) { return strcmp(a, b) < 0; });
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char* v : vars) {
    for (const char* c = v;; c++) {
      h ^= static_cast<unsigned char>(*c);
      h *= 0x100000001b3ull;
      if (*c == '\0') break;
    }
  }
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

}  // namespace

bool AskSpare(const Conf& conf, int argc, char** argv, std::string_view stdin_bytes, SpareDone* done) {
  if (EnvIsZero("KYBERNATE_SHIM_SPARE") || conf.build.empty()) return false;
  const char* dir = getenv("KYBERNATE_SHIM_SPARE_DIR");
  if (dir == nullptr || *dir == '\0') dir = kDefaultDir;
  std::string path = std::string(dir) + "/" + conf.build + "-" + EnvKey() + ".sock";
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return false;
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == nullptr) return false;

  const int64_t deadline = MonoNs() + static_cast<int64_t>(TimeoutMs()) * 1000000;
  // Non-blocking: a unix connect to a full backlog fails with EAGAIN at once instead of waiting. Connect
  // first: with no spare running (the common case without one) the request is never built.
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  int r;
  do {
    r = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    close(fd);
    return false;
  }

  std::string req("KYBS");
  PutU32(&req, kVersion);
  PutBytes(&req, conf.build);
  PutBytes(&req, cwd);
  PutU32(&req, static_cast<uint32_t>(argc - 1));
  for (int i = 1; i < argc; i++) PutBytes(&req, argv[i]);
  size_t envc = 0;
  for (char** e = environ; *e != nullptr; e++) envc++;
  PutU32(&req, static_cast<uint32_t>(envc));
  for (char** e = environ; *e != nullptr; e++) PutBytes(&req, *e);
  PutBytes(&req, stdin_bytes);
  // The spare would refuse a larger request; closing without sending lets it see a plain hang-up.
  bool ok = req.size() <= kMaxFrame && Exchange(fd, req, deadline, done);
  close(fd);
  return ok;
}

}  // namespace kybfront
