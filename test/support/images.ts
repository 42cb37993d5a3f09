import { createHash, randomBytes } from 'node:crypto';

/** Test content made in code: random blobs, image configs, manifests and indexes. */

export interface Blob {
  digest: string;
  size: number;
  bytes: Buffer;
  mediaType: string;
}

export function sha256(bytes: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function blob(bytes: Buffer | string, mediaType = 'application/vnd.oci.image.layer.v1.tar+gzip'): Blob {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  return { digest: sha256(buf), size: buf.byteLength, bytes: buf, mediaType };
}

export function randomBlob(size: number, mediaType?: string): Blob {
  // In pieces of 64 KiB: workerd's node:crypto refuses more in one call (test/workerd uses this).
  const pieces: Buffer[] = [];
  for (let at = 0; at < size; at += 65_536) pieces.push(randomBytes(Math.min(65_536, size - at)));
  return blob(Buffer.concat(pieces, size), mediaType);
}

export const EMPTY_CONFIG = blob('{}', 'application/vnd.oci.empty.v1+json');

export function descriptor(b: Blob, extra: Record<string, unknown> = {}) {
  return { mediaType: b.mediaType, digest: b.digest, size: b.size, ...extra };
}

export interface Image {
  config: Blob;
  layers: Blob[];
  manifest: Blob;
}

/** An OCI image (or Docker schema 2 with `docker: true`) with random layers. */
export function image(
  options: { layers?: number[]; docker?: boolean; arch?: string; subject?: Blob; artifactType?: string; annotations?: Record<string, string> } = {},
): Image {
  const docker = options.docker ?? false;
  const layerType = docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+gzip';
  const layers = (options.layers ?? [1024, 2048]).map((n) => randomBlob(n, layerType));
  const config = blob(
    JSON.stringify({
      architecture: options.arch ?? 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
      config: {},
      created: new Date(0).toISOString(),
    }),
    docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json',
  );
  const mediaType = docker ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json';
  const doc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType,
    config: descriptor(config),
    layers: layers.map((l) => descriptor(l)),
  };
  if (options.artifactType) doc.artifactType = options.artifactType;
  if (options.subject) doc.subject = descriptor(options.subject);
  if (options.annotations) doc.annotations = options.annotations;
  return { config, layers, manifest: blob(JSON.stringify(doc), mediaType) };
}

/** An artifact manifest (empty config) referring to `subject`. */
export function artifact(subject: Blob, artifactType: string, annotations?: Record<string, string>): Image {
  const layer = randomBlob(64, 'application/octet-stream');
  const doc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType,
    config: descriptor(EMPTY_CONFIG),
    layers: [descriptor(layer)],
    subject: descriptor(subject),
  };
  if (annotations) doc.annotations = annotations;
  return { config: EMPTY_CONFIG, layers: [layer], manifest: blob(JSON.stringify(doc), 'application/vnd.oci.image.manifest.v1+json') };
}

/** An index over `manifests` (OCI, or a Docker manifest list with `docker: true`). */
export function index(manifests: Array<{ manifest: Blob; arch: string }>, docker = false): Blob {
  const mediaType = docker ? 'application/vnd.docker.distribution.manifest.list.v2+json' : 'application/vnd.oci.image.index.v1+json';
  const doc = {
    schemaVersion: 2,
    mediaType,
    manifests: manifests.map((m) => descriptor(m.manifest, { platform: { architecture: m.arch, os: 'linux' } })),
  };
  return blob(JSON.stringify(doc), mediaType);
}
