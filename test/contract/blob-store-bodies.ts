import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import type { ByteStream } from '../../src/core/streams.js';

/** Request bodies and byte checks shared by the BlobStore contract suites. */

export function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** `size` bytes all equal to `fill`: easy to tell two values, or a mix of them, apart. */
export function bytesOf(fill: number, size: number): Uint8Array {
  return new Uint8Array(size).fill(fill);
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** A body that yields `bytes` in chunks of `chunk` bytes (copies, so the store may keep them). */
export function streamOf(bytes: Uint8Array, chunk = 64 * 1024): ByteStream {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, (at += chunk)));
    },
  });
}

/** Like streamOf, but waits a macrotask before each chunk so concurrent writers interleave. */
export function slowStream(bytes: Uint8Array, chunk: number): ByteStream {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      await new Promise((r) => setImmediate(r));
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, (at += chunk)));
    },
  });
}

/** A body that yields `chunks` chunks of `size` bytes and then errors with `err`. */
export function failingStream(chunks: number, size: number, err: Error): ByteStream {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      await new Promise((r) => setImmediate(r));
      if (sent++ < chunks) c.enqueue(randomBytes(size));
      else c.error(err);
    },
  });
}

/** A body that yields its first `split` bytes, then waits for `release()` before the rest. */
export function gatedStream(bytes: Uint8Array, split: number) {
  let release!: () => void;
  let halfway!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const reached = new Promise<void>((r) => (halfway = r));
  let at = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (at === split) {
        halfway();
        await released;
      }
      if (at >= bytes.length) return c.close();
      const end = at < split ? split : bytes.length;
      c.enqueue(bytes.slice(at, end));
      at = end;
    },
  });
  return { stream, release, halfway: reached };
}

/** Byte equality without element-wise deep-equal (slow on large arrays) or a huge diff. */
export function expectBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  expect(actual.byteLength, `${what}: length`).toBe(expected.byteLength);
  expect(equal(actual, expected), `${what}: content`).toBe(true);
}

export async function readAll(body: ByteStream): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
  return new Uint8Array(Buffer.concat(chunks));
}
