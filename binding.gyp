{
  # One addon, one target: build/Release/kybernate.node. Later issues add CUDA and libcriu sources
  # here (both dlopen'ed at run time, so no link-time dependency is added).
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
  ],
}
