// SHA-256 from the system's OpenSSL 3, loaded with dlopen only when the start fast path needs a hash:
// the front links nothing but libc (and libdl), and a host without libcrypto.so.3 still works, only
// without the fast path.
#include <dlfcn.h>

#include "front.h"

namespace kybfront {

namespace {

// OpenSSL 3 ABI (openssl/evp.h, openssl/crypto.h); the opaque types are passed as void pointers.
using EvpDigestFn = int (*)(const void* data, size_t count, unsigned char* md, unsigned int* size,
                            const void* type, void* impl);
using EvpSha256Fn = const void* (*)();
using InitCryptoFn = int (*)(uint64_t opts, const void* settings);

// OPENSSL_INIT_NO_LOAD_CONFIG: the built-in default provider has SHA-256; reading openssl.cnf would
// only cost time (and a site config could name providers that fail to load).
constexpr uint64_t kNoLoadConfig = 0x00000080L;

}  // namespace

bool Sha256Hex(std::string_view data, std::string* hex) {
  void* lib = dlopen("libcrypto.so.3", RTLD_LAZY | RTLD_LOCAL);
  if (lib == nullptr) return false;
  // Never dlclose'd: the front exits right after, and OpenSSL's atexit cleanup must find it mapped.
  auto digest = reinterpret_cast<EvpDigestFn>(dlsym(lib, "EVP_Digest"));
  auto sha256 = reinterpret_cast<EvpSha256Fn>(dlsym(lib, "EVP_sha256"));
  auto init = reinterpret_cast<InitCryptoFn>(dlsym(lib, "OPENSSL_init_crypto"));
  if (digest == nullptr || sha256 == nullptr) return false;
  if (init != nullptr && init(kNoLoadConfig, nullptr) != 1) return false;
  const void* md = sha256();
  if (md == nullptr) return false;
  unsigned char out[64];
  unsigned int len = 0;
  if (digest(data.data(), data.size(), out, &len, md, nullptr) != 1 || len != 32) return false;
  static const char kHex[] = "0123456789abcdef";
  hex->clear();
  for (unsigned int i = 0; i < len; i++) {
    hex->push_back(kHex[out[i] >> 4]);
    hex->push_back(kHex[out[i] & 15]);
  }
  return true;
}

}  // namespace kybfront
