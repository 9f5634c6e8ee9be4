// Kubernetes' CRI (runtime.v1) spoken to containerd's CRI plugin over its gRPC socket, as the kubelet
// would: pod sandboxes on the host network (no CNI here), one counter container each, its status and
// CheckpointContainer; what CRIU needs here, the checkpoint archive's entries, and a local registry for
// the restore. Messages are the generated protobufjs codecs of proto/k8s/cri/v1/api.proto.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { runtime } from '../../../src/gen/cri';
import { COUNTER } from './checkpoint';
import { waitFor } from './ctr';
import { TEST_IMAGE, TEST_IMAGE_TAR, type Containerd } from './harness';

// The daemon environment, the CRIU check and the counter are the checkpoint suite's own.
export { COUNTER, CRIU_DAEMON_ENV, counterOf, counterPast, criuMissing, type Count } from './checkpoint';

const cri = runtime.v1;
export const NamespaceMode = cri.NamespaceMode;
export const ContainerState = cri.ContainerState;
export type PodSandboxConfig = runtime.v1.IPodSandboxConfig;
export type ContainerConfig = runtime.v1.IContainerConfig;

/** Long enough for a CRIU dump or restore on a loaded two-core machine, short enough to fail with the method's name. */
const CALL_TIMEOUT_MS = 90_000;

interface Codec<T> { encode(m: T): { finish(): Uint8Array }; decode(b: Uint8Array): T }

const Empty: Codec<Record<string, never>> = {
  encode: () => ({ finish: () => new Uint8Array(0) }),
  decode: () => ({}),
};

/** A rejected CRI call: gRPC status code and details, and the method that answered them. */
export class CriError extends Error {
  constructor(readonly method: string, readonly code: number, readonly details: string) {
    super(`${method}: ${grpc.status[code] ?? code}: ${details}`);
  }
}

/** The CRI error of `p`; throws if `p` succeeds or fails otherwise. */
export async function criFailure(p: Promise<unknown>): Promise<CriError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CriError) return err;
    throw err;
  }
  throw new Error('the CRI call succeeded');
}

export class CriClient {
  private readonly client: grpc.Client;

  constructor(address: string) {
    this.client = new grpc.Client(`unix://${address}`, grpc.credentials.createInsecure());
  }

  private call<Req, Res>(service: string, method: string, req: Req, reqType: Codec<Req>, resType: Codec<Res>): Promise<Res> {
    const path = `/runtime.v1.${service}/${method}`;
    const serialize = (m: Req): Buffer => {
      const b = reqType.encode(m).finish();
      return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    };
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(path, serialize, (b: Buffer) => resType.decode(b), req, new grpc.Metadata(),
        { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, res) => {
          if (err) reject(new CriError(method, err.code, err.details));
          else resolve(res as Res);
        });
    });
  }

  private runtime<Req, Res>(method: string, req: Req, reqType: Codec<Req>, resType: Codec<Res>): Promise<Res> {
    return this.call('RuntimeService', method, req, reqType, resType);
  }

  version(): Promise<runtime.v1.IVersionResponse> {
    return this.runtime('Version', { version: 'v1' }, cri.VersionRequest, cri.VersionResponse);
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler: string): Promise<string> {
    const res = await this.runtime('RunPodSandbox', { config, runtimeHandler }, cri.RunPodSandboxRequest, cri.RunPodSandboxResponse);
    return res.podSandboxId ?? '';
  }

  async stopPodSandbox(podSandboxId: string): Promise<void> {
    await this.runtime('StopPodSandbox', { podSandboxId }, cri.StopPodSandboxRequest, Empty);
  }

  async removePodSandbox(podSandboxId: string): Promise<void> {
    await this.runtime('RemovePodSandbox', { podSandboxId }, cri.RemovePodSandboxRequest, Empty);
  }

  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    const res = await this.runtime('CreateContainer', { podSandboxId, config, sandboxConfig }, cri.CreateContainerRequest,
      cri.CreateContainerResponse);
    return res.containerId ?? '';
  }

  async startContainer(containerId: string): Promise<void> {
    await this.runtime('StartContainer', { containerId }, cri.StartContainerRequest, Empty);
  }

  async stopContainer(containerId: string, timeoutSeconds = 0): Promise<void> {
    await this.runtime('StopContainer', { containerId, timeout: Long.fromNumber(timeoutSeconds) }, cri.StopContainerRequest, Empty);
  }

  async removeContainer(containerId: string): Promise<void> {
    await this.runtime('RemoveContainer', { containerId }, cri.RemoveContainerRequest, Empty);
  }

  /** The container's status and, from the verbose info CRI adds, its init pid (0 when it has none). */
  async containerStatus(containerId: string): Promise<{ status: runtime.v1.IContainerStatus; pid: number }> {
    const res = await this.runtime('ContainerStatus', { containerId, verbose: true }, cri.ContainerStatusRequest,
      cri.ContainerStatusResponse);
    if (!res.status) throw new Error(`ContainerStatus of ${containerId}: no status in the answer`);
    let pid = 0;
    const info = res.info?.info;
    if (info) pid = Number((JSON.parse(info) as { pid?: number }).pid ?? 0);
    return { status: res.status, pid };
  }

  async checkpointContainer(containerId: string, location: string, timeoutSeconds = 0): Promise<void> {
    await this.runtime('CheckpointContainer', { containerId, location, timeout: Long.fromNumber(timeoutSeconds) },
      cri.CheckpointContainerRequest, Empty);
  }

  /** ImageService.ImageStatus: undefined when CRI does not know the image. */
  async imageStatus(image: string): Promise<runtime.v1.IImage | undefined> {
    const res = await this.call('ImageService', 'ImageStatus', { image: { image } }, cri.ImageStatusRequest,
      cri.ImageStatusResponse);
    return res.image ?? undefined;
  }

  close(): void {
    this.client.close();
  }
}

/**
 * A pod on the host network (CRI then needs no CNI), with its own PID namespace as the kubelet asks
 * for by default. Logs go to `logDirectory`.
 */
export function hostNetworkPod(name: string, uid: string, logDirectory: string): PodSandboxConfig {
  return {
    metadata: { name, uid, namespace: 'kybernate-e2e', attempt: 0 },
    logDirectory,
    labels: { 'kybernate.test/e2e': 'cri' },
    linux: {
      securityContext: {
        namespaceOptions: { network: NamespaceMode.NODE, pid: NamespaceMode.CONTAINER, ipc: NamespaceMode.POD },
      },
    },
  };
}

/** COUNTER as a CRI container of `image` (TEST_IMAGE, or a checkpoint archive to restore). */
export function counterContainer(name: string, attempt: number, image: string = TEST_IMAGE): ContainerConfig {
  return {
    metadata: { name, attempt },
    image: { image },
    command: COUNTER,
    logPath: `${name}-${attempt}.log`,
    linux: {
      securityContext: {
        namespaceOptions: { network: NamespaceMode.NODE, pid: NamespaceMode.CONTAINER, ipc: NamespaceMode.POD },
      },
    },
  };
}

/** Waits until the container is RUNNING with a pid; resolves to the pid. */
export function waitRunning(client: CriClient, containerId: string): Promise<number> {
  return waitFor(`container ${containerId} to be running`, async () => {
    const { status, pid } = await client.containerStatus(containerId);
    return status.state === ContainerState.CONTAINER_RUNNING && pid > 0 ? pid : undefined;
  });
}

/**
 * The regular files of an uncompressed tar archive (ustar, with PAX or GNU long names, as Go's
 * archive/tar writes them) by name, without leading "./" or "/"; directories are listed with a
 * trailing "/" and an empty body.
 */
export function readTar(file: string): Map<string, Buffer> {
  const buf = readFileSync(file);
  const field = (h: Buffer, at: number, len: number): string => h.subarray(at, at + len).toString('utf8').replace(/\0.*$/s, '');
  const out = new Map<string, Buffer>();
  let longName: string | undefined;
  for (let off = 0; off + 512 <= buf.length;) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const size = parseInt(field(h, 124, 12).trim() || '0', 8);
    const type = String.fromCharCode(h[156] ?? 0);
    const body = buf.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      longName = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString('utf8'))?.[1];
      continue;
    }
    if (type === 'L') {
      longName = body.toString('utf8').replace(/\0.*$/s, '');
      continue;
    }
    const prefix = field(h, 345, 155);
    let name = longName ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
    longName = undefined;
    name = name.replace(/^(\.\/|\/)+/, '');
    if (type === '5') out.set(name.endsWith('/') ? name : `${name}/`, Buffer.alloc(0));
    else if (type === '0' || type === '\0') out.set(name, Buffer.from(body));
  }
  return out;
}

/** The entry names of readTar(file). */
export function tarEntries(file: string): string[] {
  return [...readTar(file).keys()];
}

/**
 * A read-only OCI distribution registry on 127.0.0.1 serving TEST_IMAGE from its image-layout
 * tarball, in plain HTTP (containerd's default resolver uses plain HTTP for localhost).
 */
export class LocalRegistry {
  private constructor(private readonly server: Server, readonly host: string) {}

  static async start(): Promise<LocalRegistry> {
    const files = readTar(TEST_IMAGE_TAR);
    const index = JSON.parse(files.get('index.json')!.toString('utf8')) as { manifests: Array<{ digest: string; mediaType: string }> };
    const manifest = index.manifests[0]!;
    const blob = (digest: string): Buffer | undefined => files.get(`blobs/${digest.replace(':', '/')}`);
    const server = createServer((req, res) => {
      const m = /^\/v2\/(?:(.+)\/(manifests|blobs)\/([^/]+))?$/.exec(req.url ?? '');
      let body: Buffer | undefined;
      let type = 'application/json';
      let digest = '';
      if (m && m[2] === undefined) body = Buffer.from('{}');
      else if (m?.[2] === 'manifests' && (m[3] === manifest.digest || !m[3]!.includes(':'))) {
        body = blob(manifest.digest);
        type = manifest.mediaType;
        digest = manifest.digest;
      } else if (m?.[2] === 'blobs') {
        body = blob(m[3]!);
        type = 'application/octet-stream';
        digest = m[3]!;
      }
      if (!body || (req.method !== 'GET' && req.method !== 'HEAD')) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"NAME_UNKNOWN"}]}');
        return;
      }
      res.writeHead(200, {
        'content-type': type, 'content-length': body.length, 'docker-distribution-api-version': 'registry/2.0',
        ...(digest ? { 'docker-content-digest': digest } : {}),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
    return new LocalRegistry(server, `localhost:${(server.address() as AddressInfo).port}`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Names TEST_IMAGE as if CRI had pulled it from `registry`: `<repo>:<tag>` and `<repo>@<manifest
 * digest>`, and waits until CRI lists the latter among the image's repo digests. CRI reports it as the
 * container's image_ref and records it in the checkpoint's config.dump as the base image, which
 * containerd 2.1 pulls again to restore (CRImportCheckpoint calls client.Pull even when the image is
 * there); an image that only has a tag, as `ctr images import` leaves it, is reported by its config
 * digest, which names nothing that could be pulled. unpublishTestImage() must remove the names again:
 * CRI reports the first of an image's repo digests, which could be one of a registry already gone.
 */
export async function publishTestImage(cd: Containerd, client: CriClient, registry: LocalRegistry): Promise<PublishedImage> {
  const listing = await cd.ctrOk(['images', 'ls']);
  const row = listing.split('\n').map((l) => l.trim().split(/\s+/)).find((cols) => cols[0] === TEST_IMAGE);
  const digest = row?.find((c) => /^sha256:[0-9a-f]{64}$/.test(c));
  if (!digest) throw new Error(`no digest for ${TEST_IMAGE} in \`ctr images ls\`:\n${listing}`);
  const repo = `${registry.host}/kybernate/busybox`;
  const published = { image: `${repo}:kybernate-test`, repoDigest: `${repo}@${digest}` };
  await cd.ctrOk(['images', 'tag', TEST_IMAGE, published.image]);
  await cd.ctrOk(['images', 'tag', TEST_IMAGE, published.repoDigest]);
  await waitFor(`CRI to list ${published.repoDigest}`, async () => {
    const image = await client.imageStatus(published.image);
    return image?.repoDigests?.includes(published.repoDigest) ?? false;
  });
  return published;
}

export interface PublishedImage { image: string; repoDigest: string }

/** Removes the names publishTestImage() gave TEST_IMAGE (the image itself stays, under its own name). */
export async function unpublishTestImage(cd: Containerd, p: PublishedImage): Promise<void> {
  await cd.ctr(['images', 'rm', p.image, p.repoDigest]);
}
