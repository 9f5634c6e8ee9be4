// Build identity, shared by `-v`, `-info`, Connect and the CLI.
export const RUNTIME_NAME = 'io.containerd.kybernate.v2';
export const VERSION = '0.1.0';
export const REVISION = process.env.KYBERNATE_REVISION ?? 'dev';
