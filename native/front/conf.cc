// The front's conf file, <realpath(/proc/self/exe)>.conf, written at build time by scripts/bundle.cjs:
//   build=<id>     node=<abs path>     script=<abs path>     arg=<node option> (zero or more, in order)
// `#` starts a comment at the beginning of a line or after whitespace; blank lines are ignored;
// unknown keys are ignored so that a newer bundler can add keys without breaking an older front.
#include <limits.h>
#include <stdlib.h>

#include "front.h"

namespace kybfront {

namespace {

constexpr size_t kConfLimit = 64 << 10;

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r')) b++;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) e--;
  return std::string(s.substr(b, e - b));
}

// Drops a trailing comment: '#' at the start or after a blank. A '#' inside a word is kept.
std::string_view StripComment(std::string_view line) {
  for (size_t i = 0; i < line.size(); i++) {
    if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) return line.substr(0, i);
  }
  return line;
}

// The build id names a file (<dir>/<build>.sock): no '/', no "..", nothing a shell would mangle.
bool SafeBuildId(const std::string& b) {
  if (b.empty() || b.size() > 64 || b[0] == '.') return false;
  for (char c : b) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
              c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

bool LoadConf(Conf* conf, std::string* err) {
  char exe[PATH_MAX];
  if (realpath("/proc/self/exe", exe) == nullptr) {
    *err = "cannot resolve /proc/self/exe";
    return false;
  }
  std::string path = std::string(exe) + ".conf";
  std::string text;
  if (!ReadFile(path.c_str(), &text, kConfLimit)) {
    *err = "cannot read " + path + " (written by the build next to the binary)";
    return false;
  }
  size_t pos = 0;
  int lineno = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    lineno++;
    std::string body = Trim(StripComment(line));
    if (body.empty()) continue;
    size_t eq = body.find('=');
    if (eq == std::string::npos) {
      *err = path + ":" + std::to_string(lineno) + ": expected key=value";
      return false;
    }
    std::string key = Trim(std::string_view(body).substr(0, eq));
    std::string value = Trim(std::string_view(body).substr(eq + 1));
    if (key == "build") conf->build = value;
    else if (key == "node") conf->node = value;
    else if (key == "script") conf->script = value;
    else if (key == "arg") conf->args.push_back(value);
  }
  // Relative paths would resolve against the bundle (start's cwd): refuse them.
  if (conf->node.empty() || conf->node[0] != '/') {
    *err = path + ": no absolute node= path";
    return false;
  }
  if (conf->script.empty() || conf->script[0] != '/') {
    *err = path + ": no absolute script= path";
    return false;
  }
  if (!conf->build.empty() && !SafeBuildId(conf->build)) {
    *err = path + ": build= must be letters, digits, '-', '_' or '.'";
    return false;
  }
  return true;
}

}  // namespace kybfront
