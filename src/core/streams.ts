import type { ByteStream } from '../ports/blob-store.js';
import type { DigestAlgorithm, HashFactory } from '../ports/hash.js';
import { OciError } from './errors.js';

/**
 * Stream helpers over WHATWG streams, the one stream type both Node 20 and workerd have.
 * Nothing here holds a whole blob: every helper works chunk by chunk with backpressure.
 */

export type { ByteStream };

export interface VerifyExpectation {
  algorithm: DigestAlgorithm;
  /** Lower-case hex the content must hash to; undefined to only measure. */
  encoded?: string;
  /** Exact size the content must have, when known up front. */
  size?: number;
  /**
   * Where the bytes come from. A request body that breaks off is the client's fault
   * (BLOB_UPLOAD_INVALID); a stored source that fails is the server's, and its error passes
   * through unchanged. Default: the client.
   */
  source?: 'client' | 'store';
}

export interface Verified {
  /** The content, passed through; errors when it does not match the expectation. */
  stream: ByteStream;
  /** Why the content was refused (mismatch, or a body that broke off), once the stream has errored. */
  readonly failure: OciError | undefined;
  /** Bytes seen so far, and once finished the digest of all of them. */
  readonly result: { size: number; encoded?: string };
}

/**
 * Reads `source` through a hash and a byte count and errors the returned stream when the
 * content does not match the expectation, or when `source` itself breaks off (a client that
 * disconnects mid-upload), recording why in `failure` so callers can answer with it.
 *
 * It holds back the most recent chunk until the next one arrives, and releases the last
 * chunk only once the digest and size have been checked. A sink that needs every byte to
 * commit (a file renamed into place after close, an object store PUT with Content-Length)
 * therefore never commits content that fails verification: the error arrives before the
 * final byte does. Memory held is one chunk; reads are pulled, so backpressure holds.
 */
export function verify(hash: HashFactory, source: ByteStream, expect: VerifyExpectation): Verified {
  const h = hash(expect.algorithm);
  const reader = source.getReader();
  let held: Uint8Array | undefined;
  const state: { failure: OciError | undefined; result: { size: number; encoded?: string } } = {
    failure: undefined,
    result: { size: 0 },
  };
  const fail = (controller: ReadableStreamDefaultController<Uint8Array>, err: OciError) => {
    state.failure = err;
    controller.error(err);
    reader.cancel(err).catch(() => undefined);
  };
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (err) {
          if (expect.source === 'store') {
            controller.error(err);
            return;
          }
          fail(controller, new OciError('BLOB_UPLOAD_INVALID', 'the request body broke off before its end', { received: state.result.size }));
          return;
        }
        if (next.done) {
          finish(controller);
          return;
        }
        const chunk = next.value;
        if (chunk.byteLength === 0) continue;
        state.result.size += chunk.byteLength;
        if (expect.size !== undefined && state.result.size > expect.size) {
          fail(controller, new OciError('SIZE_INVALID', `content is larger than the declared ${expect.size} bytes`, { declared: expect.size }));
          return;
        }
        h.update(chunk);
        const previous = held;
        held = chunk;
        if (previous) {
          controller.enqueue(previous);
          return;
        }
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  function finish(controller: ReadableStreamDefaultController<Uint8Array>) {
    const encoded = h.digest();
    state.result.encoded = encoded;
    if (expect.size !== undefined && state.result.size !== expect.size) {
      fail(
        controller,
        new OciError('SIZE_INVALID', `content is ${state.result.size} bytes, declared ${expect.size}`, {
          declared: expect.size,
          received: state.result.size,
        }),
      );
      return;
    }
    if (expect.encoded !== undefined && encoded !== expect.encoded) {
      fail(
        controller,
        new OciError('DIGEST_INVALID', 'provided digest did not match uploaded content', {
          expected: `${expect.algorithm}:${expect.encoded}`,
          computed: `${expect.algorithm}:${encoded}`,
        }),
      );
      return;
    }
    if (held) controller.enqueue(held);
    held = undefined;
    controller.close();
  }
  return {
    stream,
    get failure() {
      return state.failure;
    },
    result: state.result,
  };
}

/**
 * Reads a stream into memory, refusing once it passes `limit` bytes. Only for things that
 * are capped by design (manifests); never for blobs.
 */
export async function readCapped(body: ByteStream | null, limit: number, tooLarge: () => OciError): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      let next: ReadableStreamReadResult<Uint8Array>;
      try {
        next = await reader.read();
      } catch {
        throw new OciError('MANIFEST_BODY_INCOMPLETE', undefined, { received: total });
      }
      const { done, value } = next;
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        await reader.cancel().catch(() => undefined);
        throw tooLarge();
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** A stream of one in-memory buffer. */
export function streamOf(bytes: Uint8Array): ByteStream {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (bytes.byteLength > 0) controller.enqueue(bytes);
      controller.close();
    },
  });
}

/** Concatenates streams opened lazily, one after another, so only one is open at a time. */
export function concatStreams(open: Array<() => Promise<ByteStream>>): ByteStream {
  let index = 0;
  let current: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        if (!current) {
          const next = open[index++];
          if (!next) {
            controller.close();
            return;
          }
          current = (await next()).getReader();
        }
        const { done, value } = await current.read();
        if (done) {
          current.releaseLock();
          current = undefined;
          continue;
        }
        controller.enqueue(value);
        return;
      }
    },
    async cancel(reason) {
      await current?.cancel(reason);
    },
  });
}

/** Drains and discards a request body so the connection can be reused. */
export async function discard(body: ByteStream | null): Promise<void> {
  if (!body) return;
  await body.cancel().catch(() => undefined);
}

/**
 * `body` read through a BYOB reader, each read into a fresh buffer of `bytes`: a byte stream of
 * the runtime (a request or fetched body in workerd) hands its default reader 4 KiB at a time,
 * and every chunk then costs a promise in each stream it passes through. A BYOB read takes what
 * has arrived, up to the buffer, and never waits for more, so a slow sender is seen exactly as
 * before (idle timeouts keep their meaning). bench:cloud measures what it buys (entry/workers.ts
 * gives its figures). Larger buffers are not free: the ones already read are garbage
 * until V8 next collects, and the isolate's memory counts them (see the size chosen in
 * entry/workers.ts). A read that filled less than half of its buffer is copied out, so that
 * chunks held somewhere (a fill's window counts their lengths) never hold more than twice their
 * bytes. A stream that is not a byte stream is returned as it is. Pull-driven (nothing is read
 * ahead, and the body is not even locked before the first read); cancel passes through.
 */
export function inLargerChunks(body: ByteStream, bytes: number): ByteStream {
  // A probe only: the body stays unlocked until the first read, so a request answered without
  // reading its body leaves the runtime free to drain it (a body locked by a reader nobody reads
  // held the response back under wrangler dev's proxy).
  try {
    body.getReader({ mode: 'byob' }).releaseLock();
  } catch {
    return body;
  }
  let reader: ReadableStreamBYOBReader | undefined;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        reader ??= body.getReader({ mode: 'byob' });
        for (;;) {
          const { done, value } = await reader.read(new Uint8Array(bytes));
          if (done) return controller.close();
          // An empty read: read again (a pull that enqueues nothing is not called again).
          if (value.byteLength === 0) continue;
          return controller.enqueue(value.byteLength < bytes / 2 ? value.slice() : value);
        }
      },
      cancel(reason) {
        return reader ? reader.cancel(reason) : body.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
