// `-info`: containerd 2.2+ asks every non-runc shim for its RuntimeInfo on first use.
import { REVISION, RUNTIME_NAME, VERSION } from '../version';

export async function infoAction(): Promise<void> {
  const { containerd } = await import('../../gen/actions');
  const msg = containerd.types.RuntimeInfo.encode({
    name: RUNTIME_NAME,
    version: { version: VERSION, revision: REVISION },
  }).finish();
  process.stdout.write(msg);
}

export function versionText(): string {
  return `containerd-shim-kybernate-v2:\n  Runtime: ${RUNTIME_NAME}\n  Version: ${VERSION}\n  Revision: ${REVISION}\n  Node.js: ${process.version}\n`;
}
