// Optional timing trace: with KYBERNATE_TRACE=<absolute path>, one JSON line per invocation, written
// just before the front exits or execs:
//   {"c":"front","ev":"<action>:<fast|spare|node>","id":"<-id>","ms":<wall ms since main()>,"t":<unix ms>}
// A single write() on an O_APPEND fd keeps lines from concurrent shims whole.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "front.h"

namespace kybfront {

namespace {

int64_t g_start_ns = 0;

// JSON string contents; bytes of invalid UTF-8 become \u00XX so that the line stays valid JSON.
void AppendEscaped(std::string* out, std::string_view s) {
  const bool utf8 = Utf8Valid(s);
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(ch);
    } else if (c < 0x20 || (c >= 0x80 && !utf8)) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      out->append(buf);
    } else {
      out->push_back(ch);
    }
  }
}

}  // namespace

void TraceStart() { g_start_ns = MonoNs(); }

void Trace(std::string_view ev, std::string_view id) {
  const char* path = getenv("KYBERNATE_TRACE");
  if (path == nullptr || path[0] != '/') return;
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  double ms = static_cast<double>(MonoNs() - g_start_ns) / 1e6;
  long long unix_ms = static_cast<long long>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
  std::string line = "{\"c\":\"front\",\"ev\":\"";
  AppendEscaped(&line, ev);
  line += "\",\"id\":\"";
  AppendEscaped(&line, id);
  char tail[96];
  snprintf(tail, sizeof tail, "\",\"ms\":%.3f,\"t\":%lld}\n", ms, unix_ms);
  line += tail;
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;  // tracing never changes what the front does
  ssize_t w = write(fd, line.data(), line.size());
  (void)w;
  close(fd);
}

}  // namespace kybfront
