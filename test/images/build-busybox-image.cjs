#!/usr/bin/env node
// Builds the end-to-end test image: an OCI image-layout tarball holding one layer with Debian's
// static busybox, its applet symlinks and a minimal /etc. No registry is reachable from the test
// machines, so the image is made here and imported with `ctr images import` or `docker load`: beside
// the OCI layout (oci-layout, index.json, blobs/) the tar has Docker's manifest.json naming the same
// blobs, as `docker save` writes it. containerd reads the OCI layout when oci-layout is there; Docker
// Engine's graph-driver store reads only manifest.json (without it: "open .../blobs/json: no such file").
//
// Usage: node test/images/build-busybox-image.cjs [--pause] [--busybox /bin/busybox] [--out .deps/images/busybox.tar]
//
// --pause builds PAUSE_IMAGE_NAME instead: the same root filesystem, with a default command that
// sleeps, so that it can serve as CRI's pod sandbox ("pause") image (the default output is then
// .deps/images/busybox-pause.tar).
//
// The output is byte-for-byte reproducible for a given busybox binary: fixed mtimes, uid/gid 0,
// sorted entries, gzip without a timestamp.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { execFileSync } = require('node:child_process');
const tarStream = require('tar-stream');

const IMAGE_NAME = 'docker.io/library/busybox:kybernate-test';
const PAUSE_IMAGE_NAME = 'docker.io/library/busybox:kybernate-pause';
// A pod sandbox must outlive its containers; CRI stops it with SIGKILL, which needs no handler.
const PAUSE_CMD = ['sleep', '2147483647'];
// 2024-01-01T00:00:00Z: a fixed timestamp keeps digests stable across rebuilds.
const EPOCH = 1704067200;
const CREATED = new Date(EPOCH * 1000).toISOString();
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const root = path.resolve(__dirname, '..', '..');

function parseArgs(argv) {
  const pause = argv.includes('--pause');
  const rest = argv.filter((a) => a !== '--pause');
  const out = { busybox: '/bin/busybox', out: path.join(root, '.deps', 'images', pause ? 'busybox-pause.tar' : 'busybox.tar') };
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i].replace(/^--/, '');
    if (!(key in out) || rest[i + 1] === undefined) {
      throw new Error(`usage: ${path.basename(__filename)} [--pause] [--busybox F] [--out F]`);
    }
    out[key] = path.resolve(rest[i + 1]);
  }
  return { ...out, pause };
}

// --- tar archives (tar-stream), with fixed owner and mtime so that digests are reproducible ---

/** entries: {name, type: 'file'|'dir'|'symlink', mode, data?, linkname?} → tar bytes */
function tar(entries) {
  const pack = tarStream.pack();
  const chunks = [];
  pack.on('data', (c) => chunks.push(c));
  const done = new Promise((resolve, reject) => { pack.on('end', resolve); pack.on('error', reject); });
  for (const e of entries) {
    const header = { name: e.name, mode: e.type === 'symlink' ? 0o777 : e.mode, mtime: new Date(EPOCH * 1000),
      uid: 0, gid: 0, uname: 'root', gname: 'root' };
    if (e.type === 'dir') pack.entry({ ...header, type: 'directory' });
    else if (e.type === 'symlink') pack.entry({ ...header, type: 'symlink', linkname: e.linkname });
    else pack.entry({ ...header, type: 'file', size: e.data.length }, e.data);
  }
  pack.finalize();
  return done.then(() => Buffer.concat(chunks));
}

// --- image content ---

function rootfsEntries(busyboxPath) {
  const busybox = fs.readFileSync(busyboxPath);
  const applets = execFileSync(busyboxPath, ['--list'], { encoding: 'utf8' })
    .split('\n').filter((a) => a && a !== 'busybox' && !a.includes('/')).sort();
  const file = (name, text, mode = 0o644) => ({ name, type: 'file', mode, data: Buffer.from(text) });
  return [
    { name: 'bin', type: 'dir', mode: 0o755 },
    { name: 'bin/busybox', type: 'file', mode: 0o755, data: busybox },
    ...applets.map((a) => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' })),
    { name: 'dev', type: 'dir', mode: 0o755 },
    { name: 'etc', type: 'dir', mode: 0o755 },
    file('etc/group', 'root:x:0:\nnogroup:x:65534:\n'),
    file('etc/hostname', 'kybernate-test\n'),
    file('etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost\n'),
    file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'),
    { name: 'proc', type: 'dir', mode: 0o555 },
    { name: 'root', type: 'dir', mode: 0o700 },
    { name: 'run', type: 'dir', mode: 0o755 },
    { name: 'sys', type: 'dir', mode: 0o555 },
    { name: 'tmp', type: 'dir', mode: 0o1777 },
    { name: 'usr', type: 'dir', mode: 0o755 },
    { name: 'usr/bin', type: 'dir', mode: 0o755 },
    // Scripts written for other images commonly start with #!/usr/bin/env.
    { name: 'usr/bin/env', type: 'symlink', linkname: '../../bin/busybox' },
    { name: 'var', type: 'dir', mode: 0o755 },
  ];
}

/** docker.io/library/busybox:tag → busybox:tag (Docker's familiar form of a Docker Hub reference). */
function familiar(ref) {
  return ref.replace(/^docker\.io\/library\//, '').replace(/^docker\.io\//, '');
}

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

function blob(buf, mediaType) {
  return { buf, descriptor: { mediaType, digest: `sha256:${sha256(buf)}`, size: buf.length } };
}

/** opts.pause: PAUSE_IMAGE_NAME with PAUSE_CMD instead of IMAGE_NAME with `sh`. */
async function buildImage(busyboxPath, opts = {}) {
  const name = opts.pause ? PAUSE_IMAGE_NAME : IMAGE_NAME;
  const layerTar = await tar(rootfsEntries(busyboxPath));
  const layer = blob(zlib.gzipSync(layerTar, { level: 9 }), 'application/vnd.oci.image.layer.v1.tar+gzip');
  const config = blob(Buffer.from(JSON.stringify({
    created: CREATED,
    architecture: 'amd64',
    os: 'linux',
    config: { Env: [PATH_ENV], Cmd: opts.pause ? PAUSE_CMD : ['sh'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layerTar)}`] },
    history: [{ created: CREATED, created_by: `build-busybox-image.cjs from ${path.basename(busyboxPath)}` }],
  })), 'application/vnd.oci.image.config.v1+json');
  const manifest = blob(Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: config.descriptor,
    layers: [layer.descriptor],
  })), 'application/vnd.oci.image.manifest.v1+json');
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      ...manifest.descriptor,
      // containerd names the imported image after io.containerd.image.name; other tools
      // read the OCI annotation. Both carry the full reference.
      annotations: {
        'io.containerd.image.name': name,
        'org.opencontainers.image.ref.name': name,
      },
      platform: { architecture: 'amd64', os: 'linux' },
    }],
  };
  const blobs = [layer, config, manifest];
  const blobPath = (b) => `blobs/sha256/${b.descriptor.digest.slice(7)}`;
  // Docker's load: the config, the layers in order (gzip is fine) and the tags, familiar as `docker save` writes them.
  const dockerManifest = [{ Config: blobPath(config), RepoTags: [familiar(name)], Layers: [blobPath(layer)] }];
  return tar([
    { name: 'blobs', type: 'dir', mode: 0o755 },
    { name: 'blobs/sha256', type: 'dir', mode: 0o755 },
    ...blobs.map((b) => ({ name: blobPath(b), type: 'file', mode: 0o644, data: b.buf })),
    { name: 'index.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(index)) },
    { name: 'manifest.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(dockerManifest)) },
    { name: 'oci-layout', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })) },
  ]);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const archive = await buildImage(args.busybox, { pause: args.pause });
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  // Written beside the target and renamed, so a concurrent reader never sees half a file.
  const tmp = `${args.out}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, archive);
  fs.renameSync(tmp, args.out);
  console.log(`wrote ${path.relative(process.cwd(), args.out)} (${args.pause ? PAUSE_IMAGE_NAME : IMAGE_NAME}, ${archive.length} bytes)`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err.message);
    process.exit(1);
  });
}
module.exports = { IMAGE_NAME, PAUSE_IMAGE_NAME, buildImage, familiar, tar };
