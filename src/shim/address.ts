// Socket naming compatible with containerd's Go shims: unix://<socketDir>/<sha256(grpcAddress/ns/group)>.
import { createHash } from 'node:crypto';
import * as path from 'node:path';

export const DEFAULT_SOCKET_DIR = '/run/containerd/s';
/** Unix socket paths longer than this are refused by the kernel's sockaddr_un (Go shims use the same bound). */
export const SOCKET_PATH_LIMIT = 106;

/** Group annotations in precedence order: ours, runc's, then the CRI sandbox (one shim per pod). */
export const GROUP_ANNOTATIONS = ['io.kybernate.group', 'io.containerd.runc.v2.group', 'io.kubernetes.cri.sandbox-id'];

export function groupOf(id: string, annotations: Record<string, string> | undefined): string {
  for (const key of GROUP_ANNOTATIONS) {
    const v = annotations?.[key];
    if (v) return v;
  }
  return id;
}

export function socketAddress(grpcAddress: string, namespace: string, group: string, socketDir = DEFAULT_SOCKET_DIR): string {
  const hash = createHash('sha256').update(path.join(grpcAddress, namespace, group)).digest('hex');
  return `unix://${path.join(socketDir, hash)}`;
}

/** Strips the unix:// scheme; refuses anything else so that no other scheme is dialled by mistake. */
export function socketPath(address: string): string {
  if (address.startsWith('unix://')) return address.slice('unix://'.length);
  if (address.startsWith('/')) return address;
  throw new Error(`unsupported socket address ${JSON.stringify(address)}`);
}
