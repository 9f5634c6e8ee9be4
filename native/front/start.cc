// `start` fast path: the container's group already has a live daemon, so the answer is that daemon's
// address, computed exactly as src/shim/manager/start.ts and src/shim/address.ts do:
//   group   = first non-empty of annotations[io.kybernate.group | io.containerd.runc.v2.group |
//             io.kubernetes.cri.sandbox-id], else -id
//   address = unix:///run/containerd/s/ + hex(sha256(path.join(-address, -namespace, group)))
// Only the plain answer of containerd 1.6–2.2 is produced here; 2.3's BootstrapParams (which may move
// the socket directory and wants a BootstrapResult) always go to the JS shim.
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "front.h"

namespace kybfront {

namespace {

constexpr const char* kSocketDir = "/run/containerd/s/";
constexpr size_t kSocketPathLimit = 106;  // SOCKET_PATH_LIMIT in address.ts
constexpr size_t kConfigLimit = 16 << 20;
constexpr int kProbeTimeoutMs = 500;

const char* const kGroupKeys[] = {"io.kybernate.group", "io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"};

// groupOf(id, spec.annotations). False = delegate: malformed JSON, or anything where reading the group
// without a real JS engine could differ (escapes, non-string values, invalid UTF-8, a non-object).
bool GroupOf(const Flags& flags, std::string* group) {
  std::string doc;
  if (!ReadFile("config.json", &doc, kConfigLimit)) return false;
  JsonValue root, annotations;
  if (!JsonParseDocument(doc, &root) || root.kind != JsonKind::kObject) return false;
  if (!JsonFindMember(root, "annotations", &annotations)) {
    *group = flags.id;
    return true;
  }
  if (annotations.kind == JsonKind::kNull) {  // `annotations?.[key]` on null is undefined
    *group = flags.id;
    return true;
  }
  if (annotations.kind != JsonKind::kObject) return false;
  for (const char* key : kGroupKeys) {
    JsonValue v;
    if (!JsonFindMember(annotations, key, &v)) continue;
    if (v.kind == JsonKind::kNull || v.kind == JsonKind::kFalse) continue;  // falsy: the next key
    if (v.kind != JsonKind::kString || v.escaped) return false;
    if (v.begin == v.end) continue;  // "" is falsy too
    if (!Utf8Valid(v.raw())) return false;
    *group = std::string(v.raw());
    return true;
  }
  *group = flags.id;
  return true;
}

// path.join(a, b, c) == a + "/" + b + "/" + c exactly when nothing needs normalising; otherwise delegate.
bool PlainJoin(const Flags& flags, const std::string& group, std::string* joined) {
  *joined = flags.address + "/" + flags.namespace_ + "/" + group;
  if (joined->find("//") != std::string::npos || joined->back() == '/') return false;
  size_t start = 0;
  while (start <= joined->size()) {
    size_t slash = joined->find('/', start);
    if (slash == std::string::npos) slash = joined->size();
    std::string_view seg(joined->data() + start, slash - start);
    if (seg == "." || seg == "..") return false;
    start = slash + 1;
  }
  // Node hashes the UTF-8 of its decoded strings: raw bytes match only if they are valid UTF-8.
  return Utf8Valid(*joined);
}

// canConnect(): does a daemon accept on `path`? SO_SNDTIMEO bounds a connect that waits on a full
// listen backlog, so a stuck daemon costs at most kProbeTimeoutMs before the slow path takes over.
bool CanConnect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  timeval tv{kProbeTimeoutMs / 1000, (kProbeTimeoutMs % 1000) * 1000};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  bool ok = false;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0) {
    int r;
    do {
      r = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    } while (r != 0 && errno == EINTR);
    ok = r == 0;
  }
  close(fd);
  return ok;
}

}  // namespace

bool StartFast(const Flags& flags, std::string_view stdin_bytes) {
  if (flags.id.empty() || flags.namespace_.empty() || flags.address.empty()) return false;
  if (ClassifyStdin(stdin_bytes, flags.id, flags.namespace_) != Bootstrap::kNo) return false;
  std::string group, joined, hash;
  if (!GroupOf(flags, &group)) return false;
  if (!PlainJoin(flags, group, &joined)) return false;
  if (!Sha256Hex(joined, &hash)) return false;
  std::string sock = std::string(kSocketDir) + hash;
  if (sock.size() > kSocketPathLimit || sock.size() >= sizeof(sockaddr_un::sun_path)) return false;
  if (!CanConnect(sock)) return false;  // no daemon yet: launching one is the JS shim's job
  std::string address = "unix://" + sock;
  // 1.6/1.7 reconnect after a daemon restart from ./address; 2.x migrates from it. If it cannot be
  // written, the JS shim tries again and reports the error properly.
  if (!WriteFile0600("address", address)) return false;
  if (!WriteAll(1, address.data(), address.size())) _exit(1);  // stdout half written: nothing to redo
  return true;
}

}  // namespace kybfront
