// `-info`: containerd 2.x asks a shim for its RuntimeInfo (2.2+ for every non-runc shim on first use; 2.x's
// Introspection.PluginInfo and its idmap-mount check at task creation do it too). stdin holds the runtime
// options (an Any, possibly empty). Like containerd's runc shim, the answer carries runc options back as
// `options`, and `<BinaryName or runc> features` (runtime-spec features JSON) as `features`; it sets no
// annotations (neither does containerd's).
import * as fs from 'node:fs';
import { KybernateError } from '../../errors';
import { REVISION, RUNTIME_NAME, VERSION } from '../../version';

/** The type URL containerd registers for runtime-spec's specs-go/features.Features (a JSON Any). */
export const FEATURES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/features/Features';
const RUNC_OPTIONS = 'containerd.runc.v1.Options';
const FEATURES_TIMEOUT_MS = 10_000;

interface AnyMsg { type_url: string; value: Uint8Array }

function readStdin(): Buffer {
  try {
    return fs.readFileSync(0);
  } catch {
    return Buffer.alloc(0);
  }
}

/** The runc options among stdin's Any (other option types name no binary), else undefined. */
async function runcOptions(stdin: Uint8Array): Promise<{ any: AnyMsg; binary: string } | undefined> {
  if (stdin.length === 0) return undefined;
  const { google } = await import('../../gen/actions');
  let any;
  try {
    any = google.protobuf.Any.decode(stdin);
  } catch (err) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid runtime options on stdin: ${(err as Error).message}`, { cause: err });
  }
  const typeUrl = any.type_url ?? '';
  if (typeUrl.slice(typeUrl.lastIndexOf('/') + 1) !== RUNC_OPTIONS) return undefined;
  const { parseRuntimeOptions } = await import('../options');
  const value = any.value ?? new Uint8Array();
  return { any: { type_url: typeUrl, value }, binary: parseRuntimeOptions({ type_url: typeUrl, value }, 'default').runcBinary };
}

/**
 * `<binary> features` as compact JSON, or undefined where the binary has no such command (runc < 1.1,
 * youki): containerd's runc shim then leaves `features` out too. A binary that cannot be run fails -info,
 * as containerd's shim fails when it cannot find it.
 */
async function features(binary: string): Promise<string | undefined> {
  const { run } = await import('../../native/run');
  let res;
  try {
    res = await run(binary, ['features'], { timeoutMs: FEATURES_TIMEOUT_MS });
  } catch (err) {
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `cannot run OCI runtime ${JSON.stringify(binary)}: ${(err as Error).message}`, { cause: err });
  }
  if (res.status !== 0) return undefined;
  try {
    return JSON.stringify(JSON.parse(res.stdout.toString('utf8')));
  } catch {
    return undefined;
  }
}

export async function infoAction(): Promise<void> {
  const opts = await runcOptions(readStdin());
  const feat = await features(opts?.binary ?? 'runc');
  const { containerd } = await import('../../gen/actions');
  const msg = containerd.types.RuntimeInfo.encode({
    name: RUNTIME_NAME,
    version: { version: VERSION, revision: REVISION },
    ...(opts ? { options: opts.any } : {}),
    ...(feat !== undefined ? { features: { type_url: FEATURES_TYPE_URL, value: Buffer.from(feat) } } : {}),
  }).finish();
  process.stdout.write(msg);
}

export function versionText(): string {
  return `containerd-shim-kybernate-v2:\n  Runtime: ${RUNTIME_NAME}\n  Version: ${VERSION}\n  Revision: ${REVISION}\n  Node.js: ${process.version}\n`;
}
