import { describe, expect, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { OciError } from '../../src/core/errors.js';
import { concatStreams, inLargerChunks, readCapped, streamOf, verify } from '../../src/core/streams.js';
import { sha256 } from '../support/images.js';

function chunked(parts: string[], failAfter?: number): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (failAfter !== undefined && i === failAfter) return c.error(new Error('connection reset'));
      const p = parts[i++];
      if (p === undefined) c.close();
      else c.enqueue(new TextEncoder().encode(p));
    },
  });
}

/** Reads a stream, recording what arrived before it ended or failed. */
async function drain(s: ReadableStream<Uint8Array>): Promise<{ text: string; error?: unknown }> {
  const reader = s.getReader();
  let text = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { text };
      text += new TextDecoder().decode(value);
    }
  } catch (error) {
    return { text, error };
  }
}

const hex = (s: string) => sha256(s).slice('sha256:'.length);

describe('verify', () => {
  it('passes matching content through whole', async () => {
    const v = verify(nodeHash, chunked(['ab', 'cd', 'ef']), { algorithm: 'sha256', encoded: hex('abcdef'), size: 6 });
    expect(await drain(v.stream)).toEqual({ text: 'abcdef' });
    expect(v.result).toEqual({ size: 6, encoded: hex('abcdef') });
    expect(v.failure).toBeUndefined();
  });

  it('withholds the last chunk when the digest does not match', async () => {
    const v = verify(nodeHash, chunked(['ab', 'cd', 'ef']), { algorithm: 'sha256', encoded: hex('abcdeX') });
    const out = await drain(v.stream);
    // A sink that commits only after every byte arrived never gets the last one.
    expect(out.text).toBe('abcd');
    expect(v.failure?.kind).toBe('DIGEST_INVALID');
    expect(out.error).toBe(v.failure);
  });

  it('refuses content larger than declared as soon as it passes the size', async () => {
    const v = verify(nodeHash, chunked(['abc', 'def', 'ghi']), { algorithm: 'sha256', size: 4 });
    const out = await drain(v.stream);
    expect(v.failure?.kind).toBe('SIZE_INVALID');
    expect(out.text.length).toBeLessThan(4);
  });

  it('refuses content shorter than declared', async () => {
    const v = verify(nodeHash, chunked(['ab']), { algorithm: 'sha256', size: 3 });
    await drain(v.stream);
    expect(v.failure?.kind).toBe('SIZE_INVALID');
  });

  it('turns a body that breaks off into BLOB_UPLOAD_INVALID', async () => {
    const v = verify(nodeHash, chunked(['ab', 'cd', 'ef'], 2), { algorithm: 'sha256' });
    const out = await drain(v.stream);
    expect(out.error).toBeInstanceOf(OciError);
    expect(v.failure?.kind).toBe('BLOB_UPLOAD_INVALID');
  });

  it('measures when no digest is expected, including empty content', async () => {
    const v = verify(nodeHash, chunked([]), { algorithm: 'sha256' });
    expect(await drain(v.stream)).toEqual({ text: '' });
    expect(v.result).toEqual({ size: 0, encoded: hex('') });
  });

  it('supports sha512', async () => {
    const v = verify(nodeHash, streamOf(new TextEncoder().encode('x')), { algorithm: 'sha512' });
    await drain(v.stream);
    expect(v.result.encoded).toHaveLength(128);
  });
});

describe('readCapped', () => {
  it('reads up to the limit and refuses past it', async () => {
    const tooLarge = () => new OciError('MANIFEST_TOO_LARGE');
    expect(new TextDecoder().decode(await readCapped(chunked(['abc', 'de']), 5, tooLarge))).toBe('abcde');
    await expect(readCapped(chunked(['abc', 'def']), 5, tooLarge)).rejects.toMatchObject({ kind: 'MANIFEST_TOO_LARGE' });
    expect((await readCapped(null, 5, tooLarge)).byteLength).toBe(0);
  });
});

describe('concatStreams', () => {
  it('opens streams one after another, lazily', async () => {
    const opened: number[] = [];
    const s = concatStreams(
      ['a', 'bc', 'def'].map((t, i) => async () => {
        opened.push(i);
        return chunked([t]);
      }),
    );
    expect(opened).toEqual([]);
    expect((await drain(s)).text).toBe('abcdef');
    expect(opened).toEqual([0, 1, 2]);
  });
});

describe('inLargerChunks', () => {
  /** A byte stream (as runtimes make request and fetched bodies) of the given chunk sizes, counting its pulls. */
  function byteStream(sizes: number[], o: { failAfter?: number; onCancel?: (reason: unknown) => void } = {}) {
    let i = 0;
    let value = 0;
    const stats = { pulls: 0 };
    const stream = new ReadableStream({
      type: 'bytes',
      pull(c) {
        stats.pulls++;
        if (o.failAfter !== undefined && i === o.failAfter) return c.error(new Error('connection reset'));
        const size = sizes[i++];
        if (size === undefined) {
          c.close();
          c.byobRequest?.respond(0);
          return;
        }
        const chunk = new Uint8Array(size).map(() => value++ & 0xff);
        const request = c.byobRequest;
        if (request?.view && request.view.byteLength >= size) {
          new Uint8Array(request.view.buffer, request.view.byteOffset, size).set(chunk);
          request.respond(size);
        } else {
          c.enqueue(chunk);
        }
      },
      cancel: o.onCancel,
    });
    return { stream, stats };
  }
  const collect = async (s: ReadableStream<Uint8Array>) => {
    const chunks: Uint8Array[] = [];
    const reader = s.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return chunks;
      chunks.push(value);
    }
  };
  const expected = (n: number) => new Uint8Array(n).map((_, i) => i & 0xff);

  it('passes every byte in order, each read into a buffer of the given size, small reads copied out', async () => {
    const sizes = [4096, 4096, 60_000, 100, 70_000, 1];
    const chunks = await collect(inLargerChunks(byteStream(sizes).stream, 64 * 1024));
    const total = sizes.reduce((a, b) => a + b, 0);
    const joined = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) joined.set(c, (at += c.byteLength) - c.byteLength);
    expect(joined).toEqual(expected(total));
    expect(chunks.every((c) => c.byteLength <= 64 * 1024)).toBe(true);
    // Under half of the buffer: a buffer of its own size, so no chunk holds more than twice its bytes.
    for (const c of chunks) if (c.byteLength < 32 * 1024) expect(c.buffer.byteLength).toBe(c.byteLength);
    for (const c of chunks) expect(c.buffer.byteLength).toBeLessThanOrEqual(2 * c.byteLength);
    expect(chunks.some((c) => c.buffer.byteLength === 64 * 1024)).toBe(true);
  });

  it('reads nothing ahead of its reader', async () => {
    const { stream, stats } = byteStream([1000, 1000, 1000]);
    const reader = inLargerChunks(stream, 1024).getReader();
    await new Promise((r) => setTimeout(r, 10));
    expect(stats.pulls).toBe(0);
    await reader.read();
    await new Promise((r) => setTimeout(r, 10));
    expect(stats.pulls).toBe(1);
  });

  it('passes a cancel to the source and an error to the reader', async () => {
    const reasons: unknown[] = [];
    const cancelled = byteStream([10, 10], { onCancel: (r) => reasons.push(r) });
    const reader = inLargerChunks(cancelled.stream, 1024).getReader();
    await reader.read();
    await reader.cancel('client went away');
    expect(reasons).toEqual(['client went away']);
    const failing = inLargerChunks(byteStream([10, 10, 10], { failAfter: 1 }).stream, 1024).getReader();
    expect((await failing.read()).value?.byteLength).toBe(10);
    await expect(failing.read()).rejects.toThrow('connection reset');
  });

  it('leaves the body unlocked until the first read; a cancel before any read cancels the body itself', async () => {
    const reasons: unknown[] = [];
    const { stream } = byteStream([10], { onCancel: (r) => reasons.push(r) });
    const wrapped = inLargerChunks(stream, 1024);
    expect(stream.locked).toBe(false);
    await wrapped.cancel('answered without reading');
    expect(reasons).toEqual(['answered without reading']);
    const read = byteStream([10]);
    const reader = inLargerChunks(read.stream, 1024).getReader();
    expect(read.stream.locked).toBe(false);
    await reader.read();
    expect(read.stream.locked).toBe(true);
  });

  it('returns a stream that is not a byte stream as it is', () => {
    const plain = chunked(['a', 'b']);
    expect(inLargerChunks(plain, 1024)).toBe(plain);
  });
});
