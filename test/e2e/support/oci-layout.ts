import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { gzipSync } from 'node:zlib';
import { blob, descriptor, index, sha256, type Blob, type Image } from '../../support/images.js';

/**
 * Images a real client can read: layers are gzip-compressed tar archives with correct diff_ids
 * (skopeo sniffs compression and would re-compress bytes that are not gzip), written as an OCI
 * image layout directory (image-spec image-layout.md) for `skopeo copy oci:<dir>:<tag>`, or
 * in skopeo's own `dir:` format.
 */

const REF_NAME = 'org.opencontainers.image.ref.name';

export interface LayerOptions {
  /** Uncompressed payload size of each layer; random bytes, so the gzip is about as large. */
  layers: number[];
  arch?: string;
  /** Docker schema 2 media types instead of OCI ones. */
  docker?: boolean;
  /**
   * An image to build on, as `FROM base` does: its layers come first and are shared (same
   * digests, same diff_ids), then the new ones. Use the same `docker` setting for both.
   */
  base?: Image;
}

/** A multi-platform image: an index (or Docker manifest list) and the images it lists, in order. */
export interface ImageIndex {
  index: Blob;
  images: Image[];
}

/** An image whose layers are real .tar.gz archives, each holding one file of random bytes. */
export function tarImage(options: LayerOptions): Image {
  const docker = options.docker ?? false;
  const layerType = docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+gzip';
  const base = options.base;
  const first = base?.layers.length ?? 0;
  const tars = options.layers.map((size, i) => tar([{ name: `layer${first + i}/random.bin`, bytes: randomBytes(size) }]));
  const baseDiffIds = base ? (JSON.parse(base.config.bytes.toString('utf8')) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids : [];
  const layers = [...(base?.layers ?? []), ...tars.map((t) => blob(gzipSync(t, { level: 1 }), layerType))];
  const config = blob(
    JSON.stringify({
      architecture: options.arch ?? 'amd64',
      os: 'linux',
      config: { Entrypoint: ['/bin/true'] },
      rootfs: { type: 'layers', diff_ids: [...baseDiffIds, ...tars.map((t) => sha256(t))] },
      created: new Date(0).toISOString(),
    }),
    docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json',
  );
  const mediaType = docker ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json';
  const manifest = { schemaVersion: 2, mediaType, config: descriptor(config), layers: layers.map((l) => descriptor(l)) };
  return { config, layers, manifest: blob(JSON.stringify(manifest), mediaType) };
}

export function imageBlobs(image: Image): Blob[] {
  return [image.manifest, image.config, ...image.layers];
}

/** One tarImage per platform (each may have a `base` of its own) under an index of them. */
export function tarIndex(platforms: Array<LayerOptions & { arch: string }>, docker = false): ImageIndex {
  const images = platforms.map((p) => tarImage({ ...p, docker }));
  return { index: index(images.map((img, i) => ({ manifest: img.manifest, arch: platforms[i]!.arch })), docker), images };
}

/** The index, then every image's manifest, config and layers (a shared layer once). */
export function indexBlobs(multi: ImageIndex): Blob[] {
  const all = [multi.index, ...multi.images.flatMap(imageBlobs)];
  return all.filter((b, i) => all.findIndex((o) => o.digest === b.digest) === i);
}

/** Writes an OCI image layout: `refs` become tagged entries of index.json, `blobs` go under blobs/. */
export async function writeLayout(dir: string, refs: Record<string, Blob>, blobs: Blob[]): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: Object.entries(refs).map(([ref, m]) => descriptor(m, { annotations: { [REF_NAME]: ref } })),
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  for (const b of [...blobs, ...Object.values(refs)]) {
    await writeFile(join(dir, 'blobs', 'sha256', b.digest.slice('sha256:'.length)), b.bytes);
  }
}

export interface Layout {
  /** The descriptor that index.json tags with `ref`. */
  ref(name: string): { mediaType: string; digest: string; size: number };
  /** Every file under blobs/sha256, by digest; each file's name is checked against its content. */
  blobs: Map<string, Buffer>;
}

/** The pulled blobs are exactly `expected` (nothing missing, nothing extra), byte for byte. */
export function expectSameBlobs(pulled: Map<string, Buffer>, expected: Blob[]): void {
  expect([...pulled.keys()].sort()).toEqual([...new Set(expected.map((b) => b.digest))].sort());
  for (const b of expected) expect(pulled.get(b.digest)?.equals(b.bytes), `blob ${b.digest}`).toBe(true);
}

/** Reads back a layout a client wrote. */
export async function readLayout(dir: string): Promise<Layout> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
    manifests: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }>;
  };
  const blobs = new Map<string, Buffer>();
  for (const file of await readdir(join(dir, 'blobs', 'sha256'))) {
    const bytes = await readFile(join(dir, 'blobs', 'sha256', file));
    const digest = `sha256:${file}`;
    if (sha256(bytes) !== digest) throw new Error(`${dir}: blob ${digest} does not match its content`);
    blobs.set(digest, bytes);
  }
  return {
    blobs,
    ref(name) {
      const entry = index.manifests.find((m) => m.annotations?.[REF_NAME] === name);
      if (!entry) throw new Error(`${dir}: index.json has no entry tagged ${name}`);
      return { mediaType: entry.mediaType, digest: entry.digest, size: entry.size };
    },
  };
}

/**
 * Writes an image in skopeo's `dir:` format (manifest.json, blobs named by hex digest). Unlike an
 * OCI layout, which skopeo only reads OCI manifests from, it keeps Docker schema 2 manifests as is.
 */
export async function writeDirImage(dir: string, image: Image): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
  await writeFile(join(dir, 'manifest.json'), image.manifest.bytes);
  for (const b of [image.config, ...image.layers]) await writeFile(join(dir, b.digest.slice('sha256:'.length)), b.bytes);
}

/** A minimal ustar archive of regular files (enough for a layer a runtime could unpack). */
function tar(files: Array<{ name: string; bytes: Buffer }>): Buffer {
  const chunks: Buffer[] = [];
  for (const file of files) {
    const header = Buffer.alloc(512);
    header.write(file.name, 0, 100, 'utf8');
    header.write('0000644\0', 100);
    header.write('0000000\0', 108); // uid
    header.write('0000000\0', 116); // gid
    header.write(`${file.bytes.length.toString(8).padStart(11, '0')}\0`, 124);
    header.write('00000000000\0', 136); // mtime
    header.write('        ', 148); // checksum field counts as spaces while summing
    header.write('0', 156); // regular file
    header.write('ustar\0', 257);
    header.write('00', 263);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    chunks.push(header, file.bytes, Buffer.alloc((512 - (file.bytes.length % 512)) % 512));
  }
  chunks.push(Buffer.alloc(1024));
  return Buffer.concat(chunks);
}
