// Kubernetes' container checkpoint (KEP-2008) through containerd's CRI plugin, driven over CRI's gRPC
// API the way the kubelet drives it, for the runtime handler `kybernate` and for the stock `runc` as
// the reference: RunPodSandbox (host network) → CreateContainer → StartContainer → CheckpointContainer
// → the archive → restore through CreateContainer with the archive as image (containerd 2.1 – 2.3).
// containerd 1.6 and 1.7 implement no CheckpointContainer and answer UNIMPLEMENTED for any handler.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, expect, it } from 'vitest';
import { describeMatrix } from './support/matrix';
import { CRI_NAMESPACE, RUNC_RUNTIME, SHIM_RUNTIME, type ContainerdVersion } from './support/harness';
import { alive } from './support/ctr';
import {
  CRIU_DAEMON_ENV, ContainerState, CriClient, LocalRegistry, counterContainer, counterPast, criFailure, criuMissing,
  hostNetworkPod, publishTestImage, readTar, tarEntries, unpublishTestImage, waitRunning, type PodSandboxConfig, type PublishedImage,
} from './support/cri';

const GRPC_UNIMPLEMENTED = 12;
const KYBERNATE_MANIFEST = 'kybernate-manifest.json';
/** criu/include/magic.h: the first two words of CRIU's stats-dump image. */
const CRIU_SERVICE_MAGIC = 0x55105940;
const CRIU_STATS_MAGIC = 0x57093306;

// containerd makes its temporary checkpoint directories in XDG_RUNTIME_DIR (default /tmp) and leaves them
// behind when a checkpoint fails: this file's daemons get a directory of their own.
const runtimeDir = mkdtempSync(join(tmpdir(), 'kyb-cri-xdg-'));
afterAll(() => rmSync(runtimeDir, { recursive: true, force: true }));

/** containerd versions whose CRI implements CheckpointContainer (2.0 on) and restore via CreateContainer (2.1 – 2.3). */
const checkpoints = (v: ContainerdVersion): boolean => v.startsWith('2.');

describeMatrix('cri', (ctx) => {
  let client: CriClient | undefined;
  const pods: string[] = [];
  const dirs: string[] = [];
  const registries: LocalRegistry[] = [];
  const published: PublishedImage[] = [];
  const cri = (): CriClient => {
    client ??= new CriClient(ctx.cd.address);
    return client;
  };
  afterEach(async () => {
    // Stopping and removing a pod stops and removes its containers, as the kubelet relies on.
    for (const id of pods.splice(0).reverse()) {
      await cri().stopPodSandbox(id).catch(() => undefined);
      await cri().removePodSandbox(id).catch(() => undefined);
    }
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    for (const p of published.splice(0)) await unpublishTestImage(ctx.cd, p);
    for (const r of registries.splice(0)) await r.close();
  });
  afterAll(() => {
    client?.close();
    client = undefined;
  });

  const tmp = (prefix: string): string => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };

  /** A host-network pod of this suite's handler, removed after the test. */
  async function pod(name: string, logs: string): Promise<{ id: string; config: PodSandboxConfig }> {
    const config = hostNetworkPod(`${name}-${ctx.rt.kind}`, `${name}-${ctx.rt.kind}-${process.pid}-${Date.now()}`, logs);
    const id = await cri().runPodSandbox(config, ctx.rt.kind);
    pods.push(id);
    return { id, config };
  }

  /** A running counter container in a new pod; resolves once the counter has passed 2. */
  async function runningCounter(name: string, image?: string) {
    const logs = tmp('kyb-cri-logs-');
    const p = await pod(name, logs);
    const id = await cri().createContainer(p.id, counterContainer('counter', 0, image), p.config);
    await cri().startContainer(id);
    const pid = await waitRunning(cri(), id);
    const seen = await counterPast(pid, 2);
    return { pod: p, id, pid, seen };
  }

  if (!checkpoints(ctx.version)) {
    it('CheckpointContainer of a running container answers UNIMPLEMENTED', async () => {
      const version = await cri().version();
      expect(version.runtimeName).toBe('containerd');
      expect(version.runtimeVersion).toMatch(new RegExp(`^v?${ctx.version.replace('.', '\\.')}\\.`));
      const c = await runningCounter('unimpl');
      const failure = await criFailure(cri().checkpointContainer(c.id, join(tmp('kyb-cri-cp-'), 'checkpoint.tar')));
      expect(failure.code, failure.message).toBe(GRPC_UNIMPLEMENTED);
      // Nothing was done to the container.
      const { status, pid } = await cri().containerStatus(c.id);
      expect(status.state).toBe(ContainerState.CONTAINER_RUNNING);
      expect(pid).toBe(c.pid);
      await counterPast(pid, c.seen.n);
    });
    return;
  }

  it('CheckpointContainer writes the archive (CRIU images, spec.dump, config.dump) and leaves the container running', async () => {
    const c = await runningCounter('cp');
    const archive = join(tmp('kyb-cri-cp-'), 'checkpoint.tar');
    await cri().checkpointContainer(c.id, archive);

    expect(statSync(archive).size).toBeGreaterThan(0);
    const entries = tarEntries(archive);
    // CRIU's images of the process tree, in checkpoint/ as the kubelet's archive format has them.
    expect(entries).toContain('checkpoint/inventory.img');
    expect(entries).toContain('checkpoint/pstree.img');
    if (ctx.rt.kind === 'kybernate') expect(entries).toContain(`checkpoint/${KYBERNATE_MANIFEST}`);
    // What CRI's restore reads: the container's spec and config, its CRI status and its rw layer.
    expect(entries).toEqual(expect.arrayContaining(['spec.dump', 'config.dump', 'status.dump', 'rootfs-diff.tar']));

    // The kubelet's checkpoint is forensic: the container goes on in the same process.
    const { status, pid } = await cri().containerStatus(c.id);
    expect(status.state).toBe(ContainerState.CONTAINER_RUNNING);
    expect(pid).toBe(c.pid);
    const after = await counterPast(pid, c.seen.n);
    expect(after.token).toBe(c.seen.token);
  });

  it('the archive holds CRIU\'s dump.log and stats-dump, as checkpointctl reads them', async () => {
    // containerd 2.1 points CRIU's work directory into the archived directory only for io.containerd.runc.v2
    // (other runtimes get no checkpoint options); kybernate puts both files there itself.
    const c = await runningCounter('cpfiles');
    const archive = join(tmp('kyb-cri-cp-'), 'checkpoint.tar');
    await cri().checkpointContainer(c.id, archive);
    const files = readTar(archive);
    expect([...files.keys()]).toEqual(expect.arrayContaining(['stats-dump', 'dump.log']));
    // CRIU's log of this dump, and its statistics image (CRIU's image magic, then the stats entry's).
    expect(files.get('dump.log')!.toString('utf8')).toContain('Dumping finished successfully');
    const stats = files.get('stats-dump')!;
    expect(stats.length).toBeGreaterThan(8);
    expect([stats.readUInt32LE(0), stats.readUInt32LE(4)]).toEqual([CRIU_SERVICE_MAGIC, CRIU_STATS_MAGIC]);
  });

  it('a container created with the checkpoint archive as its image resumes the counter', async () => {
    // containerd 2.1 pulls the checkpoint's base image again to restore, so the container's image must
    // come from a registry; no public one is reachable here, hence one on localhost.
    const registry = await LocalRegistry.start();
    registries.push(registry);
    const image = await publishTestImage(ctx.cd, cri(), registry);
    published.push(image);
    const c = await runningCounter('rs', image.image);
    const archive = join(tmp('kyb-cri-cp-'), 'checkpoint.tar');
    // c.seen was read before the checkpoint; the original went on counting after it, the restore starts from it.
    await cri().checkpointContainer(c.id, archive);

    // The original pod and its process are gone before the restore, as after a node loss or migration.
    const original = pods.pop()!;
    await cri().stopPodSandbox(original);
    await cri().removePodSandbox(original);
    expect(alive(c.pid)).toBe(false);

    const p = await pod('rs2', tmp('kyb-cri-logs-'));
    const id = await cri().createContainer(p.id, counterContainer('counter', 0, archive), p.config);
    await cri().startContainer(id);
    const pid = await waitRunning(cri(), id);
    expect(pid).not.toBe(c.pid);
    const restored = await counterPast(pid, 0, 'restored counter');
    // Same token: the shell's memory came back; a process started afresh would have drawn another.
    expect(restored.token).toBe(c.seen.token);
    expect(restored.n).toBeGreaterThanOrEqual(c.seen.n);
    await counterPast(pid, restored.n, 'restored counter');
  });
}, {
  start: () => ({
    env: { ...CRIU_DAEMON_ENV, XDG_RUNTIME_DIR: runtimeDir },
    namespace: CRI_NAMESPACE,
    cri: { runtimes: { runc: RUNC_RUNTIME, kybernate: SHIM_RUNTIME } },
  }),
  skip: (v) => (checkpoints(v) ? criuMissing() : undefined),
});
