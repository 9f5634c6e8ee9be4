// Shim flags parsed with exactly the rules of src/shim/flags.ts: the front and the JS shim must agree on
// -id/-namespace/-address/-bundle and on the action, or a fast answer could name another container.
#include <string.h>

#include <map>

#include "front.h"

namespace kybfront {

namespace {

bool IsBoolean(const std::string& n) { return n == "debug" || n == "v" || n == "version" || n == "info"; }

bool IsKnown(const std::string& n) {
  return n == "namespace" || n == "id" || n == "address" || n == "publish-binary" || n == "bundle" ||
         n == "socket" || n == "debug-socket";
}

}  // namespace

Flags ParseFlags(int argc, char** argv) {
  std::map<std::string, std::string> values;  // a later flag overwrites an earlier one, as Map.set
  bool version = false, info = false;
  int i = 1;
  for (; i < argc; i++) {
    const char* arg = argv[i];
    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (arg[0] != '-' || arg[1] == '\0') break;  // the first non-flag (or "-") is the action
    // body = arg without one or two leading dashes (the regex /^--?/).
    std::string body(arg[1] == '-' ? arg + 2 : arg + 1);
    size_t eq = body.find('=');
    std::string name = eq == std::string::npos ? body : body.substr(0, eq);
    if (IsBoolean(name)) {
      std::string v = eq == std::string::npos ? "true" : body.substr(eq + 1);
      // Only "true"/"1" set a boolean; anything else (e.g. -debug=false) leaves it as it was.
      if (v == "true" || v == "1") {
        if (name == "v" || name == "version") version = true;
        if (name == "info") info = true;
      }
      continue;
    }
    if (eq != std::string::npos) {
      values[name] = body.substr(eq + 1);
      continue;
    }
    // A value flag takes the next argument; an unknown flag followed by a non-flag also does.
    if (IsKnown(name) || (i + 1 < argc && argv[i + 1][0] != '-')) {
      if (i + 1 < argc) values[name] = argv[++i];
    }
  }
  Flags f;
  f.namespace_ = values["namespace"];
  f.id = values["id"];
  f.address = values["address"];
  f.bundle = values["bundle"];
  f.version = version;
  f.info = info;
  if (i < argc) f.action = argv[i];
  return f;
}

}  // namespace kybfront
