// A validating JSON scanner with JSON.parse's grammar (RFC 8259: whitespace is space/tab/LF/CR only,
// no control characters inside strings, the usual escapes, -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?).
// It never builds a tree: values are spans into the document, and callers look up the few members they
// need. Anything it rejects makes the front delegate to the JS shim, so rejecting too much is safe;
// accepting what JSON.parse refuses (or reading a member differently) is not.
#include <string.h>

#include "front.h"

namespace kybfront {

namespace {

// Deeper documents are refused (the front then delegates); OCI configs nest a handful of levels.
constexpr int kMaxDepth = 256;

struct Cursor {
  const char* p;
  const char* end;
  int depth;
};

void SkipWs(Cursor& c) {
  while (c.p < c.end && (*c.p == ' ' || *c.p == '\t' || *c.p == '\n' || *c.p == '\r')) c.p++;
}

bool IsHex(char ch) { return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }
bool IsDigit(char ch) { return ch >= '0' && ch <= '9'; }

bool ScanString(Cursor& c, JsonValue* v) {
  c.p++;  // the opening quote
  v->kind = JsonKind::kString;
  v->begin = c.p;
  v->escaped = false;
  while (c.p < c.end) {
    unsigned char ch = static_cast<unsigned char>(*c.p);
    if (ch == '"') {
      v->end = c.p++;
      return true;
    }
    if (ch < 0x20) return false;
    if (ch == '\\') {
      v->escaped = true;
      if (c.end - c.p < 2) return false;
      char e = c.p[1];
      if (e == 'u') {
        if (c.end - c.p < 6 || !IsHex(c.p[2]) || !IsHex(c.p[3]) || !IsHex(c.p[4]) || !IsHex(c.p[5])) return false;
        c.p += 6;
        continue;
      }
      if (!strchr("\"\\/bfnrt", e) || e == '\0') return false;
      c.p += 2;
      continue;
    }
    c.p++;  // any other byte, UTF-8 included (JSON.parse sees the decoded text; callers check UTF-8)
  }
  return false;
}

bool ScanNumber(Cursor& c) {
  if (c.p < c.end && *c.p == '-') c.p++;
  if (c.p >= c.end) return false;
  if (*c.p == '0') {
    c.p++;
  } else if (IsDigit(*c.p)) {
    while (c.p < c.end && IsDigit(*c.p)) c.p++;
  } else {
    return false;
  }
  if (c.p < c.end && *c.p == '.') {
    c.p++;
    if (c.p >= c.end || !IsDigit(*c.p)) return false;
    while (c.p < c.end && IsDigit(*c.p)) c.p++;
  }
  if (c.p < c.end && (*c.p == 'e' || *c.p == 'E')) {
    c.p++;
    if (c.p < c.end && (*c.p == '+' || *c.p == '-')) c.p++;
    if (c.p >= c.end || !IsDigit(*c.p)) return false;
    while (c.p < c.end && IsDigit(*c.p)) c.p++;
  }
  return true;
}

bool ScanWord(Cursor& c, const char* word) {
  size_t n = strlen(word);
  if (static_cast<size_t>(c.end - c.p) < n || memcmp(c.p, word, n) != 0) return false;
  c.p += n;
  return true;
}

bool ScanValue(Cursor& c, JsonValue* v);

// Objects and arrays: `open` already checked; members separated by single commas, no trailing comma.
bool ScanContainer(Cursor& c, JsonValue* v, bool object) {
  if (++c.depth > kMaxDepth) return false;
  v->kind = object ? JsonKind::kObject : JsonKind::kArray;
  v->begin = c.p++;
  const char close = object ? '}' : ']';
  SkipWs(c);
  if (c.p < c.end && *c.p == close) {
    v->end = ++c.p;
    c.depth--;
    return true;
  }
  for (;;) {
    JsonValue item;
    if (object) {
      if (c.p >= c.end || *c.p != '"' || !ScanString(c, &item)) return false;
      SkipWs(c);
      if (c.p >= c.end || *c.p != ':') return false;
      c.p++;
      SkipWs(c);
    }
    if (!ScanValue(c, &item)) return false;
    SkipWs(c);
    if (c.p >= c.end) return false;
    if (*c.p == ',') {
      c.p++;
      SkipWs(c);
      continue;
    }
    if (*c.p != close) return false;
    v->end = ++c.p;
    c.depth--;
    return true;
  }
}

bool ScanValue(Cursor& c, JsonValue* v) {
  if (c.p >= c.end) return false;
  const char* start = c.p;
  bool ok;
  switch (*c.p) {
    case '{': return ScanContainer(c, v, true);
    case '[': return ScanContainer(c, v, false);
    case '"': return ScanString(c, v);
    case 't': ok = ScanWord(c, "true"); v->kind = JsonKind::kTrue; break;
    case 'f': ok = ScanWord(c, "false"); v->kind = JsonKind::kFalse; break;
    case 'n': ok = ScanWord(c, "null"); v->kind = JsonKind::kNull; break;
    default: ok = ScanNumber(c); v->kind = JsonKind::kNumber; break;
  }
  v->begin = start;
  v->end = c.p;
  return ok;
}

int HexValue(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return ch - 'A' + 10;
}

// Compares a (validated) key with an ASCII name by its decoded value. An escape that decodes to a
// non-ASCII character can never equal an ASCII name, so it is compared as a 0xFF byte.
bool KeyEquals(const JsonValue& key, const char* name) {
  if (!key.escaped) return key.raw() == name;
  const char* p = key.begin;
  size_t i = 0, n = strlen(name);
  while (p < key.end) {
    char ch = *p;
    if (ch == '\\') {
      char e = p[1];
      if (e == 'u') {
        int code = (HexValue(p[2]) << 12) | (HexValue(p[3]) << 8) | (HexValue(p[4]) << 4) | HexValue(p[5]);
        ch = code < 0x80 ? static_cast<char>(code) : '\xff';
        p += 6;
      } else {
        static const char kFrom[] = "\"\\/bfnrt", kTo[] = "\"\\/\b\f\n\r\t";
        ch = kTo[strchr(kFrom, e) - kFrom];
        p += 2;
      }
    } else {
      p++;
    }
    if (i >= n || name[i] != ch) return false;
    i++;
  }
  return i == n;
}

}  // namespace

bool JsonParseDocument(std::string_view doc, JsonValue* root) {
  Cursor c{doc.data(), doc.data() + doc.size(), 0};
  SkipWs(c);  // a UTF-8 BOM is not whitespace for JSON.parse either
  if (!ScanValue(c, root)) return false;
  SkipWs(c);
  return c.p == c.end;
}

bool JsonFindMember(const JsonValue& obj, const char* key, JsonValue* out) {
  if (obj.kind != JsonKind::kObject) return false;
  // The object was validated by JsonParseDocument: the rescan below cannot fail, but is checked anyway.
  Cursor c{obj.begin + 1, obj.end, 0};
  bool found = false;
  for (;;) {
    SkipWs(c);
    if (c.p >= c.end || *c.p != '"') return found;
    JsonValue k, v;
    if (!ScanString(c, &k)) return false;
    SkipWs(c);
    if (c.p >= c.end || *c.p != ':') return false;
    c.p++;
    SkipWs(c);
    if (!ScanValue(c, &v)) return false;
    if (KeyEquals(k, key)) {
      *out = v;  // no early return: a later duplicate wins, as in JSON.parse
      found = true;
    }
    SkipWs(c);
    if (c.p < c.end && *c.p == ',') c.p++;
  }
}

bool Utf8Valid(std::string_view s) {
  // Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF): exactly the byte strings that Node
  // decodes and re-encodes unchanged. Anything else would be hashed differently by the JS shim.
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char* e = p + s.size();
  while (p < e) {
    unsigned char b = *p;
    if (b < 0x80) {
      p++;
      continue;
    }
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) n = 1;
    else if (b == 0xE0) { n = 2; lo = 0xA0; }
    else if (b == 0xED) { n = 2; hi = 0x9F; }
    else if (b >= 0xE1 && b <= 0xEF) n = 2;
    else if (b == 0xF0) { n = 3; lo = 0x90; }
    else if (b >= 0xF1 && b <= 0xF3) n = 3;
    else if (b == 0xF4) { n = 3; hi = 0x8F; }
    else return false;
    if (e - p <= n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int i = 2; i <= n; i++) {
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    }
    p += n + 1;
  }
  return true;
}

}  // namespace kybfront
