import { createHash } from 'node:crypto';

/**
 * Large test content that never exists whole in memory: bytes come from a seeded generator in
 * 64 KiB blocks, each block derived from (seed, block number) alone, so the same content can
 * be streamed once to learn its digest, again to upload it, and in slices to check a Range
 * response. Runs in workerd and Node alike (node:crypto through nodejs_compat).
 */

const BLOCK = 64 * 1024;
const CHUNK = 256 * 1024;

export interface Generated {
  size: number;
  digest: string;
  /** A fresh stream of bytes [from, to) (default: all), in pieces of 256 KiB. */
  stream(from?: number, to?: number): ReadableStream<Uint8Array>;
  /** Bytes [offset, offset + length). */
  slice(offset: number, length: number): Uint8Array;
}

export function generated(size: number, seed: number): Generated {
  const hash = createHash('sha256');
  for (let at = 0; at < size; at += BLOCK) hash.update(piece(seed, at, Math.min(BLOCK, size - at)));
  const slice = (offset: number, length: number) => piece(seed, offset, length);
  return {
    size,
    digest: `sha256:${hash.digest('hex')}`,
    slice,
    stream(from = 0, to = size) {
      let at = from;
      return new ReadableStream<Uint8Array>({
        pull(controller) {
          if (at >= to) return controller.close();
          const n = Math.min(CHUNK, to - at);
          controller.enqueue(slice(at, n));
          at += n;
        },
      });
    },
  };
}

/** Bytes [offset, offset + length) of the content `seed` names. */
function piece(seed: number, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  while (at < length) {
    const block = Math.floor((offset + at) / BLOCK);
    const bytes = blockBytes(seed, block);
    const from = offset + at - block * BLOCK;
    const n = Math.min(BLOCK - from, length - at);
    out.set(bytes.subarray(from, from + n), at);
    at += n;
  }
  return out;
}

/** One block: xorshift32 seeded by the seed and the block number. */
function blockBytes(seed: number, block: number): Uint8Array {
  const words = new Uint32Array(BLOCK / 4);
  let x = (seed ^ Math.imul(block + 1, 0x9e3779b9)) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return new Uint8Array(words.buffer);
}

/** sha256 of a stream, read chunk by chunk, and its length. */
export async function digestStream(stream: ReadableStream<Uint8Array>): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    hash.update(value);
    size += value.byteLength;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}
