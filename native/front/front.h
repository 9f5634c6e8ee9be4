// The native front of containerd-shim-kybernate-v2: containerd execs it for every `start` and `delete`.
// It answers the common cases itself (a live group daemon for `start`, an already deleted container
// for `delete`), hands the rest to a warm spare shim (src/shim/spare/protocol.ts), and otherwise execs
// Node with the JS shim exactly as the old launcher did.
//
// Invariant behind every fast path: when anything looks unusual the front delegates (spare, then
// Node) rather than guess. Delegating is always correct; a wrong fast answer is not.
#ifndef KYBERNATE_FRONT_H_
#define KYBERNATE_FRONT_H_

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>
#include <vector>

namespace kybfront {

constexpr const char* kProgram = "containerd-shim-kybernate-v2";

// ---- flags.cc: the argv rules of src/shim/flags.ts (Go's `flag` package) ----
struct Flags {
  std::string namespace_, id, address, bundle;
  bool version = false, info = false;
  std::string action;  // "" = run the daemon
};
Flags ParseFlags(int argc, char** argv);  // argv[0] is skipped

// ---- conf.cc: <realpath(/proc/self/exe)>.conf, written by scripts/bundle.cjs ----
struct Conf {
  std::string build;               // identifies this exact build; names the spare's socket
  std::string node;                // absolute path of node
  std::string script;              // absolute path of dist/containerd-shim-kybernate-v2.cjs
  std::vector<std::string> args;   // node options, placed before the script
};
bool LoadConf(Conf* conf, std::string* err);

// ---- io.cc ----
bool ReadAll(int fd, std::string* out);                   // until EOF; EINTR retried
bool ReadFile(const char* path, std::string* out, size_t limit);
bool WriteAll(int fd, const char* p, size_t n);           // partial writes and EINTR handled
bool WriteFile0600(const char* path, std::string_view data);
bool EnvIsZero(const char* name);                         // env var set to exactly "0"
int64_t MonoNs();
[[noreturn]] void Fail(const std::string& message);       // "<program>: message\n" on stderr, exit 1

// ---- json.cc: validating scanner with JSON.parse's grammar ----
enum class JsonKind { kObject, kArray, kString, kNumber, kTrue, kFalse, kNull };
struct JsonValue {
  JsonKind kind = JsonKind::kNull;
  const char* begin = nullptr;  // strings: the contents between the quotes; others: the whole token
  const char* end = nullptr;
  bool escaped = false;         // strings: contains a backslash escape
  std::string_view raw() const { return std::string_view(begin, static_cast<size_t>(end - begin)); }
};
// False when JSON.parse would throw (or nesting is deeper than the scanner's bound).
bool JsonParseDocument(std::string_view doc, JsonValue* root);
// The LAST member named `key` of object `obj` (JSON.parse keeps the last duplicate). Keys written with
// escapes compare by their decoded value.
bool JsonFindMember(const JsonValue& obj, const char* key, JsonValue* out);
bool Utf8Valid(std::string_view s);

// ---- sha256.cc: libcrypto.so.3 via dlopen ----
bool Sha256Hex(std::string_view data, std::string* hex);

// ---- proto.cc ----
enum class Bootstrap { kNo, kMatch, kUnsure };
// Is stdin containerd 2.3's BootstrapParams for this -id/-namespace, exactly as protobufjs would decide?
Bootstrap ClassifyStdin(std::string_view in, std::string_view id, std::string_view ns);
std::string EncodeDeleteResponse(uint32_t pid, uint32_t exit_status, int64_t seconds, int32_t nanos);

// ---- start.cc / delete.cc: the fast paths; true = answered (stdout written), exit 0 ----
bool StartFast(const Flags& flags, std::string_view stdin_bytes);
bool DeleteFast(const Flags& flags);

// ---- spare_client.cc ----
struct SpareDone {
  uint32_t exit_code = 0;
  std::string out, err;
};
// True with `done` filled for a kind-0 answer (final); false means fall back to Node.
bool AskSpare(const Conf& conf, int argc, char** argv, std::string_view stdin_bytes, SpareDone* done);

// ---- fallback.cc ----
// execv's Node with the JS shim; stdin_bytes (when non-null) become fd 0 through a memfd.
[[noreturn]] void ExecNode(const Conf& conf, int argc, char** argv, const std::string* stdin_bytes);

// ---- trace.cc ----
void TraceStart();                                              // marks main()'s start
void Trace(std::string_view ev, std::string_view id);           // one line to $KYBERNATE_TRACE

}  // namespace kybfront

#endif  // KYBERNATE_FRONT_H_
