// `delete` fast path: after a normal teardown the daemon already deleted the container, unmounted its
// rootfs and recorded {"deleted":true} in <bundle>/kybernate.json (src/shim/bundle-state.ts). Then
// src/shim/manager/delete.ts does nothing but print a DeleteResponse, which the front prints itself.
// Any other state (no file, not deleted, a value that is merely truthy in JS) goes to the JS shim,
// which runs `runc delete --force` and unmounts.
#include <time.h>
#include <unistd.h>

#include "front.h"

namespace kybfront {

namespace {

constexpr size_t kStateLimit = 1 << 20;
constexpr uint32_t kSigkillStatus = 128 + 9;

// readInitPid(): Number.parseInt(text, 10) || 0, for the pids a kernel hands out. A sign, an empty or
// non-numeric file, or a number beyond uint32 gives 0.
uint32_t ReadInitPid(const std::string& bundle) {
  std::string text;
  if (!ReadFile((bundle + "init.pid").c_str(), &text, 64)) return 0;
  size_t i = 0;
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) i++;
  uint64_t pid = 0;
  size_t digits = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; i++, digits++) {
    pid = pid * 10 + static_cast<uint64_t>(text[i] - '0');
    if (pid > 0xffffffffu) return 0;
  }
  return digits == 0 ? 0 : static_cast<uint32_t>(pid);
}

}  // namespace

bool DeleteFast(const Flags& flags) {
  // "" resolves against the cwd, as `flags.bundle || process.cwd()` does.
  std::string bundle = flags.bundle.empty() ? "" : flags.bundle + "/";
  std::string doc;
  if (!ReadFile((bundle + "kybernate.json").c_str(), &doc, kStateLimit)) return false;
  JsonValue root, deleted;
  if (!JsonParseDocument(doc, &root) || root.kind != JsonKind::kObject) return false;
  if (!JsonFindMember(root, "deleted", &deleted) || deleted.kind != JsonKind::kTrue) return false;
  uint32_t pid = ReadInitPid(bundle);
  timespec now;
  if (clock_gettime(CLOCK_REALTIME, &now) != 0) return false;
  std::string msg = EncodeDeleteResponse(pid, kSigkillStatus, now.tv_sec, static_cast<int32_t>(now.tv_nsec));
  if (!WriteAll(1, msg.data(), msg.size())) _exit(1);
  return true;
}

}  // namespace kybfront
