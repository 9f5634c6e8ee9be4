// The test image tarball: an OCI layout that `ctr images import` reads and, beside it, Docker's manifest.json
// that `docker load` reads, both naming the same blobs; reproducible byte for byte.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { extract } from 'tar-stream';

const builder = require('./build-busybox-image.cjs') as {
  IMAGE_NAME: string; PAUSE_IMAGE_NAME: string;
  buildImage(busybox: string, opts?: { pause?: boolean }): Promise<Buffer>;
  familiar(ref: string): string;
};

const BUSYBOX = '/bin/busybox';

async function entries(archive: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => { ex.on('finish', resolve); ex.on('error', reject); });
  ex.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => { if (header.type === 'file') out.set(header.name, Buffer.concat(chunks)); next(); });
    stream.resume();
  });
  ex.end(archive);
  await done;
  return out;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const json = (b: Buffer | undefined): any => JSON.parse(b!.toString('utf8'));

describe.skipIf(!existsSync(BUSYBOX))('build-busybox-image', () => {
  it('familiar() writes Docker Hub references as docker save does', () => {
    expect(builder.familiar('docker.io/library/busybox:kybernate-test')).toBe('busybox:kybernate-test');
    expect(builder.familiar('docker.io/someone/app:1')).toBe('someone/app:1');
    expect(builder.familiar('registry.example/app:1')).toBe('registry.example/app:1');
  });

  for (const pause of [false, true]) {
    const name = pause ? builder.PAUSE_IMAGE_NAME : builder.IMAGE_NAME;
    it(`${name}: OCI layout and Docker's manifest.json name the same blobs; reproducible`, async () => {
      const archive = await builder.buildImage(BUSYBOX, { pause });
      expect(sha256(await builder.buildImage(BUSYBOX, { pause }))).toBe(sha256(archive));
      const files = await entries(archive);
      expect(json(files.get('oci-layout'))).toEqual({ imageLayoutVersion: '1.0.0' });

      const index = json(files.get('index.json'));
      expect(index.manifests).toHaveLength(1);
      expect(index.manifests[0].annotations['io.containerd.image.name']).toBe(name);
      const manifestBlob = files.get(`blobs/sha256/${index.manifests[0].digest.slice(7)}`)!;
      expect(sha256(manifestBlob)).toBe(index.manifests[0].digest.slice(7));
      const manifest = json(manifestBlob);

      const docker = json(files.get('manifest.json'));
      expect(docker).toEqual([{
        Config: `blobs/sha256/${manifest.config.digest.slice(7)}`,
        RepoTags: [builder.familiar(name)],
        Layers: manifest.layers.map((l: { digest: string }) => `blobs/sha256/${l.digest.slice(7)}`),
      }]);
      // What docker load checks: every path exists, the config's diff_ids are the uncompressed layers.
      const config = json(files.get(docker[0].Config));
      const layers = docker[0].Layers.map((p: string) => files.get(p)!);
      expect(layers.every(Boolean)).toBe(true);
      expect(config.rootfs.diff_ids).toEqual(layers.map((l: Buffer) => `sha256:${sha256(gunzipSync(l))}`));
      expect(config.os).toBe('linux');
    });
  }
});
