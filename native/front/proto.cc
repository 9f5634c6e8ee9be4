// The few protobuf bits the front needs: recognising containerd 2.3's BootstrapParams on start's stdin
// (then the JS shim answers: it must honour socket_dir and reply with a BootstrapResult), and encoding
// containerd.task.v2.DeleteResponse.
//
// ClassifyStdin must agree with the JS shim's decision (protobufjs decode, then instance_id == -id and
// namespace == -namespace). Wherever protobufjs could frame the bytes differently from a plain
// wire-format walk (a known field sent with another wire type, a group, a non-canonical varint, a
// nested Extension that is not cleanly framed) the answer is kUnsure and the front delegates.
#include "front.h"

namespace kybfront {

namespace {

struct Span {
  const unsigned char* p;
  const unsigned char* end;
};

enum class Step { kOk, kMalformed, kUnsure };

// Reads a varint; `bytes` is how many it took. Truncation is malformed for protobufjs too.
Step Varint(Span& s, uint64_t* v, int* bytes) {
  uint64_t value = 0;
  int n = 0;
  for (;;) {
    if (s.p >= s.end) return Step::kMalformed;
    unsigned char b = *s.p++;
    if (n < 10) value |= static_cast<uint64_t>(b & 0x7f) << (7 * n);
    n++;
    if ((b & 0x80) == 0) break;
  }
  *v = value;
  *bytes = n;
  return Step::kOk;
}

// A tag or a length: protobufjs reads these with uint32(), which skips a fixed 5 bytes after the
// fifth; only varints of at most 5 bytes frame the same everywhere.
Step Uint32(Span& s, uint64_t* v) {
  int n;
  Step st = Varint(s, v, &n);
  if (st != Step::kOk) return st;
  if (n > 5 || *v > 0xffffffffu) return Step::kUnsure;
  return Step::kOk;
}

Step Field(Span& s, uint32_t* number, int* wire) {
  uint64_t tag;
  Step st = Uint32(s, &tag);
  if (st != Step::kOk) return st;
  *number = static_cast<uint32_t>(tag >> 3);
  *wire = static_cast<int>(tag & 7);
  // The wire type is judged by the caller: protobufjs decodes a KNOWN field by its number whatever
  // the wire type says, and checks the wire type only when skipping an unknown one.
  return *number == 0 ? Step::kUnsure : Step::kOk;
}

// A length-delimited field; `past_end` is the verdict for a length that runs past the end: malformed
// where protobufjs throws (skip, bytes, nested messages), unsure for strings, which Node's
// BufferReader.string() clamps to the end instead of throwing.
Step Delimited(Span& s, Span* body, Step past_end = Step::kMalformed) {
  uint64_t len;
  Step st = Uint32(s, &len);
  if (st != Step::kOk) return st;
  if (len > static_cast<uint64_t>(s.end - s.p)) return past_end;
  body->p = s.p;
  body->end = s.p + len;
  s.p += len;
  return Step::kOk;
}

Step Skip(Span& s, int wire) {
  uint64_t v;
  int n;
  Span body;
  switch (wire) {
    case 0: return Varint(s, &v, &n);
    case 1:
    case 5: {
      size_t need = wire == 1 ? 8 : 4;
      if (static_cast<size_t>(s.end - s.p) < need) return Step::kMalformed;
      s.p += need;
      return Step::kOk;
    }
    case 2: return Delimited(s, &body);
    case 3: return Step::kUnsure;     // a group: protobufjs skips it, we do not follow
    default: return Step::kMalformed;  // 4, 6, 7: "invalid wire type" in protobufjs
  }
}

// Checks that a nested message is cleanly framed: every field plain and inside its bounds, and the
// fields in `delimited` (a bit per field number) length-delimited. With `any_in_1`, field 1 holds a
// google.protobuf.Any (type_url = 1, value = 2), checked the same way. Used for Extension.
Step CleanMessage(Span s, uint32_t delimited, bool any_in_1) {
  while (s.p < s.end) {
    uint32_t number = 0;
    int wire = 0;
    Span body;
    if (Field(s, &number, &wire) != Step::kOk) return Step::kUnsure;
    bool must_delimit = number < 32 && (delimited & (1u << number)) != 0;
    if (must_delimit && wire != 2) return Step::kUnsure;
    Step st = wire == 2 ? Delimited(s, &body) : Skip(s, wire);  // malformed inside: unsure all the same
    if (st == Step::kOk && wire == 2 && number == 1 && any_in_1) st = CleanMessage(body, (1u << 1) | (1u << 2), false);
    if (st != Step::kOk) return Step::kUnsure;
  }
  return Step::kOk;
}

bool HasHighBit(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return true;
  }
  return false;
}

// Equal bytes are equal strings. Unequal bytes are unequal strings unless invalid UTF-8 could decode
// to the same replacement characters: with any non-ASCII byte involved, do not decide.
Bootstrap Compare(std::string_view a, std::string_view b, bool* equal) {
  *equal = a == b;
  if (!*equal && (HasHighBit(a) || HasHighBit(b))) return Bootstrap::kUnsure;
  return Bootstrap::kNo;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

}  // namespace

Bootstrap ClassifyStdin(std::string_view in, std::string_view id, std::string_view ns) {
  if (in.empty()) return Bootstrap::kNo;  // the JS shim: no stdin, no BootstrapParams
  Span s{reinterpret_cast<const unsigned char*>(in.data()), reinterpret_cast<const unsigned char*>(in.data()) + in.size()};
  std::string_view instance, namespace_;  // proto3 defaults: ""; the last occurrence wins
  while (s.p < s.end) {
    uint32_t number = 0;
    int wire = 0;
    Step st = Field(s, &number, &wire);
    if (st == Step::kMalformed) return Bootstrap::kNo;  // protobufjs throws: legacy options
    if (st == Step::kUnsure) return Bootstrap::kUnsure;
    // BootstrapParams: 1,2,4,5,6,7,9 strings, 8 repeated Extension, 3 the LogLevel enum (varint). A
    // known field with another wire type (even an invalid one) is read by its number by protobufjs.
    bool known = number >= 1 && number <= 9;
    int want = number == 3 ? 0 : 2;
    if (known && wire != want) return Bootstrap::kUnsure;
    Span body{s.p, s.p};
    if (number == 3) {
      uint64_t v;
      int n;
      st = Varint(s, &v, &n);
      if (st == Step::kOk && n > 5 && n != 10) st = Step::kUnsure;  // int32(): 5 bytes, then 5 skipped
    } else if (number == 8) {
      st = Delimited(s, &body);
      // Extension { Any value = 1 } and Any { string type_url = 1; bytes value = 2 }: protobufjs decodes
      // them, so they must be cleanly framed or the outcome is not ours to predict.
      if (st == Step::kOk) st = CleanMessage(body, 1u << 1, true);
    } else if (known) {
      st = Delimited(s, &body, Step::kUnsure);
    } else {
      st = Skip(s, wire);
    }
    if (st == Step::kMalformed) return Bootstrap::kNo;
    if (st == Step::kUnsure) return Bootstrap::kUnsure;
    std::string_view text(reinterpret_cast<const char*>(body.p), static_cast<size_t>(body.end - body.p));
    if (number == 1) instance = text;
    if (number == 2) namespace_ = text;
  }
  bool id_eq, ns_eq;
  Bootstrap a = Compare(instance, id, &id_eq);
  Bootstrap b = Compare(namespace_, ns, &ns_eq);
  if (id_eq && ns_eq) return Bootstrap::kMatch;
  // One side unequal for sure (ASCII) decides "no" regardless of the other.
  if ((!id_eq && a == Bootstrap::kNo) || (!ns_eq && b == Bootstrap::kNo)) return Bootstrap::kNo;
  return Bootstrap::kUnsure;
}

std::string EncodeDeleteResponse(uint32_t pid, uint32_t exit_status, int64_t seconds, int32_t nanos) {
  // DeleteResponse { uint32 pid = 1; uint32 exit_status = 2; google.protobuf.Timestamp exited_at = 3 }
  // Timestamp { int64 seconds = 1; int32 nanos = 2 }. Zero scalars are omitted, as proto3 encoders do.
  std::string ts;
  if (seconds != 0) {
    ts.push_back(0x08);
    PutVarint(&ts, static_cast<uint64_t>(seconds));  // negative int64: 10-byte two's complement
  }
  if (nanos != 0) {
    ts.push_back(0x10);
    PutVarint(&ts, static_cast<uint64_t>(static_cast<int64_t>(nanos)));
  }
  std::string out;
  if (pid != 0) {
    out.push_back(0x08);
    PutVarint(&out, pid);
  }
  if (exit_status != 0) {
    out.push_back(0x10);
    PutVarint(&out, exit_status);
  }
  out.push_back(0x1a);
  PutVarint(&out, ts.size());
  out += ts;
  return out;
}

}  // namespace kybfront
