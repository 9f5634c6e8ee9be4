import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    // End-to-end suites share containerd daemons and the machine's 2 cores.
    fileParallelism: false,
    reporters: ['default'],
  },
});
