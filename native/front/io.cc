// Small I/O helpers. Every fd the front opens is O_CLOEXEC, so none of them reaches Node after execv.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "front.h"

namespace kybfront {

bool ReadAll(int fd, std::string* out) {
  char buf[64 << 10];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      out->append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return true;
    } else if (errno != EINTR) {
      return false;
    }
  }
}

bool ReadFile(const char* path, std::string* out, size_t limit) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  // A bounded read: a huge or endless file (a fifo, /dev/zero) must not stall start or delete.
  char buf[16 << 10];
  bool ok = true;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      if (out->size() + static_cast<size_t>(n) > limit) {
        ok = false;
        break;
      }
      out->append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      ok = false;
      break;
    }
  }
  close(fd);
  return ok;
}

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool WriteFile0600(const char* path, std::string_view data) {
  // Same as fs.writeFileSync(path, data, { mode: 0o600 }): the mode applies when the file is created.
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = WriteAll(fd, data.data(), data.size());
  if (close(fd) != 0) ok = false;
  return ok;
}

bool EnvIsZero(const char* name) {
  const char* v = getenv(name);
  return v != nullptr && v[0] == '0' && v[1] == '\0';
}

int64_t MonoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void Fail(const std::string& message) {
  std::string line = std::string(kProgram) + ": " + message + "\n";
  WriteAll(2, line.data(), line.size());
  _exit(1);
}

}  // namespace kybfront
