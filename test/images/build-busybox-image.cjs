#!/usr/bin/env node
// Builds the end-to-end test image: an OCI image-layout tarball holding one layer with Debian's
// static busybox, its applet symlinks and a minimal /etc. No registry is reachable from the test
// machines, so the image is made here and imported with `ctr images import`.
//
// Usage: node test/images/build-busybox-image.cjs [--busybox /bin/busybox] [--out .deps/images/busybox.tar]
//
// The output is byte-for-byte reproducible for a given busybox binary: fixed mtimes, uid/gid 0,
// sorted entries, gzip without a timestamp.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { execFileSync } = require('node:child_process');

const IMAGE_NAME = 'docker.io/library/busybox:kybernate-test';
// 2024-01-01T00:00:00Z: a fixed timestamp keeps digests stable across rebuilds.
const EPOCH = 1704067200;
const CREATED = new Date(EPOCH * 1000).toISOString();
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const root = path.resolve(__dirname, '..', '..');

function parseArgs(argv) {
  const out = { busybox: '/bin/busybox', out: path.join(root, '.deps', 'images', 'busybox.tar') };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in out) || argv[i + 1] === undefined) throw new Error(`usage: ${path.basename(__filename)} [--busybox F] [--out F]`);
    out[key] = path.resolve(argv[i + 1]);
  }
  return out;
}

// --- a minimal ustar writer (regular files, directories, symlinks; names < 100 bytes) ---

function octal(n, width) {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function tarHeader({ name, type, mode, size = 0, linkname = '' }) {
  if (Buffer.byteLength(name) >= 100 || Buffer.byteLength(linkname) >= 100) {
    throw new Error(`tar name too long for ustar: ${name}`);
  }
  const h = Buffer.alloc(512, 0);
  h.write(name, 0, 'utf8');
  h.write(octal(mode, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(EPOCH, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii'); // checksum is computed with this field as spaces
  h.write(type, 156, 'ascii');
  h.write(linkname, 157, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

/** entries: {name, type: 'file'|'dir'|'symlink', mode, data?, linkname?} → tar bytes */
function tar(entries) {
  const parts = [];
  for (const e of entries) {
    if (e.type === 'dir') {
      parts.push(tarHeader({ name: e.name.endsWith('/') ? e.name : `${e.name}/`, type: '5', mode: e.mode }));
    } else if (e.type === 'symlink') {
      parts.push(tarHeader({ name: e.name, type: '2', mode: 0o777, linkname: e.linkname }));
    } else {
      parts.push(tarHeader({ name: e.name, type: '0', mode: e.mode, size: e.data.length }));
      parts.push(e.data);
      const pad = (512 - (e.data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad, 0));
    }
  }
  parts.push(Buffer.alloc(1024, 0));
  return Buffer.concat(parts);
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

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

function blob(buf, mediaType) {
  return { buf, descriptor: { mediaType, digest: `sha256:${sha256(buf)}`, size: buf.length } };
}

function buildImage(busyboxPath) {
  const layerTar = tar(rootfsEntries(busyboxPath));
  const layer = blob(zlib.gzipSync(layerTar, { level: 9 }), 'application/vnd.oci.image.layer.v1.tar+gzip');
  const config = blob(Buffer.from(JSON.stringify({
    created: CREATED,
    architecture: 'amd64',
    os: 'linux',
    config: { Env: [PATH_ENV], Cmd: ['sh'], WorkingDir: '/' },
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
        'io.containerd.image.name': IMAGE_NAME,
        'org.opencontainers.image.ref.name': IMAGE_NAME,
      },
      platform: { architecture: 'amd64', os: 'linux' },
    }],
  };
  const blobs = [layer, config, manifest];
  return tar([
    { name: 'blobs', type: 'dir', mode: 0o755 },
    { name: 'blobs/sha256', type: 'dir', mode: 0o755 },
    ...blobs.map((b) => ({ name: `blobs/sha256/${b.descriptor.digest.slice(7)}`, type: 'file', mode: 0o644, data: b.buf })),
    { name: 'index.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(index)) },
    { name: 'oci-layout', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })) },
  ]);
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const archive = buildImage(args.busybox);
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  // Written beside the target and renamed, so a concurrent reader never sees half a file.
  const tmp = `${args.out}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, archive);
  fs.renameSync(tmp, args.out);
  console.log(`wrote ${path.relative(process.cwd(), args.out)} (${IMAGE_NAME}, ${archive.length} bytes)`);
}

if (require.main === module) main();
module.exports = { IMAGE_NAME, buildImage, tar };
