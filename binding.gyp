{
  # The addon (build/Release/kybernate.node) and the shim's native front (build/Release/kybernate-shim-front).
  # CUDA and libcriu are dlopen'ed by the addon at run time, so no link-time dependency is added.
  'targets': [
    {
      'target_name': 'kybernate',
      'sources': [
        'native/addon.cc',
        'native/criu.cc',
        'native/cuda.cc',
        'native/cuda_driver.cc',
        'native/errors.cc',
        'native/fd.cc',
        'native/mount.cc',
        'native/oom.cc',
        'native/reaper.cc',
        'native/spawn.cc',
      ],
      'include_dirs': ["<!(node -p \"require('node-addon-api').include_dir\")"],
      'defines': [
        'NAPI_VERSION=9',
        'NODE_ADDON_API_DISABLE_DEPRECATED',
        'NAPI_CPP_EXCEPTIONS',
      ],
      'cflags!': ['-fno-exceptions'],
      'cflags_cc!': ['-fno-exceptions', '-std=gnu++17', '-std=gnu++20'],
      'cflags_cc': ['-std=c++17', '-fexceptions', '-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-missing-field-initializers'],
    },
    {
      # The native front installed as containerd-shim-kybernate-v2 (native/front/front.h says why). A
      # plain executable: it links libc (and libdl) only; node and libcrypto are found at run time.
      'target_name': 'kybernate-shim-front',
      'type': 'executable',
      'sources': [
        'native/front/conf.cc',
        'native/front/delete.cc',
        'native/front/fallback.cc',
        'native/front/flags.cc',
        'native/front/io.cc',
        'native/front/json.cc',
        'native/front/main.cc',
        'native/front/proto.cc',
        'native/front/sha256.cc',
        'native/front/spare_client.cc',
        'native/front/start.cc',
        'native/front/trace.cc',
      ],
      'cflags!': ['-fexceptions'],
      'cflags_cc!': ['-fexceptions', '-std=gnu++17', '-std=gnu++20'],
      'cflags_cc': ['-std=c++17', '-fno-exceptions', '-fno-rtti', '-Wall', '-Wextra', '-O2',
                    '-ffunction-sections', '-fdata-sections'],
      # libstdc++ and libgcc linked in statically (only the pieces used): loading them as shared
      # libraries would cost more of the front's ~1 ms than all of its own work.
      'ldflags!': ['-rdynamic'],
      'ldflags': ['-static-libstdc++', '-static-libgcc', '-Wl,--gc-sections', '-Wl,--as-needed', '-Wl,-O1', '-s'],
      'libraries': ['-ldl'],
    },
  ],
}
