import { describe, expect, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { OciError } from '../../src/core/errors.js';
import { concatStreams, readCapped, streamOf, verify } from '../../src/core/streams.js';
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
