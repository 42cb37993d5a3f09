import { createCipheriv } from 'node:crypto';
import { blob, descriptor, index, type Blob, type Image } from '../../support/images.js';

/**
 * Content for the GC stress test (gc-stress.test.ts), made from a seed: images that share base
 * layers, indexes over them, and fresh images made while the test runs.
 */

const KiB = 1024;

/** What a push sends: one image, or an index with its images (pushed first, by digest). */
export interface Pushable {
  top: Blob;
  images: Image[];
}

/** Bytes from the seed (AES-CTR over zeros), so a seed names its content too. */
function seededBytes(random: () => number, size: number): Buffer {
  const key = Buffer.from(Array.from({ length: 32 }, () => Math.floor(random() * 256)));
  return createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16)).update(Buffer.alloc(size));
}

function seededImage(random: () => number, layers: Blob[], arch = 'amd64'): Image {
  const config = blob(
    JSON.stringify({ architecture: arch, os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }, config: {}, nonce: random() }),
    'application/vnd.oci.image.config.v1+json',
  );
  const doc = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: descriptor(config), layers: layers.map((l) => descriptor(l)) };
  return { config, layers, manifest: blob(JSON.stringify(doc), 'application/vnd.oci.image.manifest.v1+json') };
}

/**
 * The content of a run: a few images sharing base layers (two of them large), two indexes, and
 * fresh images made during the mix (most pushes), so that digests often lose their last
 * reference and the collector has work; operations pick mostly among the newest.
 */
export class Pool {
  readonly pushables: Pushable[] = [];
  readonly byDigest = new Map<string, Blob>();
  /** Each image manifest as a pushable of its own (an index's children too), and each index. */
  readonly pushableOf = new Map<string, Pushable>();
  readonly bases: Blob[];
  readonly mirror: Image[];

  constructor(random: () => number) {
    this.bases = [layerOf(random, 200 * KiB), layerOf(random, 64 * KiB)];
    const images: Image[] = [];
    for (let i = 0; i < 6; i++) images.push(this.fresh(random, i % 3 === 2 ? 1536 * KiB : undefined));
    for (const amd64 of [images[0]!, images[4]!]) {
      const children = [amd64, seededImage(random, [this.bases[0]!, layerOf(random, 32 * KiB)], 'arm64')];
      this.add({ top: index(children.map((c, k) => ({ manifest: c.manifest, arch: k === 0 ? 'amd64' : 'arm64' }))), images: children });
    }
    this.mirror = Array.from({ length: 4 }, (_, i) => seededImage(random, [this.bases[0]!, layerOf(random, 8 * KiB + i * 100 * KiB)]));
  }

  /** A new image of one or two layers of its own, on a shared base or not; added to the pool. */
  fresh(random: () => number, large?: number): Image {
    const own = Array.from({ length: 1 + Math.floor(random() * 2) }, () => layerOf(random, large ?? 1 * KiB + Math.floor(random() * 96 * KiB)));
    const base = random() < 0.5 ? [this.bases[Math.floor(random() * 2)]!] : [];
    const img = seededImage(random, [...base, ...own]);
    this.add({ top: img.manifest, images: [img] });
    return img;
  }

  /** Mostly one of the newest eight, sometimes any. */
  pick(random: () => number): Pushable {
    const from = random() < 0.7 ? Math.max(0, this.pushables.length - 8) : 0;
    return this.pushables[from + Math.floor(random() * (this.pushables.length - from))]!;
  }

  private add(p: Pushable): void {
    this.pushables.push(p);
    this.byDigest.set(p.top.digest, p.top);
    this.pushableOf.set(p.top.digest, p);
    for (const img of p.images) {
      for (const b of [img.manifest, img.config, ...img.layers]) this.byDigest.set(b.digest, b);
      if (!this.pushableOf.has(img.manifest.digest)) this.pushableOf.set(img.manifest.digest, { top: img.manifest, images: [img] });
    }
  }
}

function layerOf(random: () => number, size: number): Blob {
  return blob(seededBytes(random, size));
}

export function namedOf(p: Pushable, manifest: string): string[] {
  if (manifest === p.top.digest && p.images.length > 1) return p.images.map((i) => i.manifest.digest);
  const img = p.images.find((i) => i.manifest.digest === manifest)!;
  return [img.config.digest, ...img.layers.map((l) => l.digest)];
}
