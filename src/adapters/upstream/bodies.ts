import type { ByteStream } from '../../ports/blob-store.js';
import { parseLength } from './headers.js';

/**
 * Response bodies from the upstream. Two rules hold for every body:
 *
 * - It is watched: a read that waits longer than the idle timeout, or a body that ends short of
 *   (or runs past) its declared Content-Length, errors the stream. A caller never sees a
 *   truncated body end cleanly, so it cannot store a short blob as a whole one.
 * - What is read into memory is capped, and buffers grow with the bytes that arrived, never
 *   from a declared Content-Length (which the sender chooses).
 */

/** Why an upstream body failed; the stream errors with it. */
export class UpstreamBodyError extends Error {
  override readonly name = 'UpstreamBodyError';
}

export interface WatchOptions {
  /** For messages: the host the body comes from. */
  host: string;
  idleMs: number;
  /** The body must have exactly this many bytes (the response's Content-Length). */
  length?: number;
  /** Called once when the body fails or is cancelled, to tear the connection down. */
  abort: () => void;
}

/**
 * Wraps `body` so that it errors when it stalls or breaks off. The idle timer runs only while a
 * read is pending (highWaterMark 0: nothing is pulled ahead of the caller), so a slow consumer
 * is not mistaken for a stalled upstream.
 */
export function watchBody(body: ByteStream, o: WatchOptions): ByteStream {
  const reader = body.getReader();
  let received = 0;
  let aborted = false;
  const abortOnce = () => {
    if (aborted) return;
    aborted = true;
    o.abort();
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const idle = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new UpstreamBodyError(`${o.host}: no bytes for ${o.idleMs} ms`)), o.idleMs);
        });
        try {
          for (;;) {
            const next = await Promise.race([reader.read(), idle]);
            if (next.done) {
              if (o.length !== undefined && received < o.length) {
                throw new UpstreamBodyError(`${o.host}: body ended after ${received} of ${o.length} bytes`);
              }
              controller.close();
              return;
            }
            const chunk = next.value;
            if (chunk.byteLength === 0) continue;
            received += chunk.byteLength;
            if (o.length !== undefined && received > o.length) {
              throw new UpstreamBodyError(`${o.host}: body runs past its Content-Length of ${o.length} bytes`);
            }
            controller.enqueue(chunk);
            return;
          }
        } catch (err) {
          const failure = err instanceof UpstreamBodyError ? err : new UpstreamBodyError(`${o.host}: body broke off after ${received} bytes`, { cause: err });
          controller.error(failure);
          reader.cancel(failure).catch(() => undefined);
          abortOnce();
        } finally {
          clearTimeout(timer);
        }
      },
      async cancel(reason) {
        await reader.cancel(reason).catch(() => undefined);
        abortOnce();
      },
    },
    { highWaterMark: 0 },
  );
}

export type BoundedRead = { kind: 'ok'; bytes: Uint8Array } | { kind: 'too-large' } | { kind: 'broken'; message: string };

/**
 * Reads a whole response body, at most `max` bytes. A declared Content-Length above `max` is
 * refused before any byte is read; an undeclared body is refused as soon as it passes `max`.
 */
export async function readBounded(res: Response, max: number, o: Omit<WatchOptions, 'length'>): Promise<BoundedRead> {
  const declared = parseLength(res.headers.get('content-length'));
  if (!res.body) return declared ? { kind: 'broken', message: `${o.host}: no body where ${declared} bytes were declared` } : { kind: 'ok', bytes: new Uint8Array(0) };
  if (declared !== undefined && declared > max) {
    await discard(res);
    o.abort();
    return { kind: 'too-large' };
  }
  const reader = watchBody(res.body, { ...o, length: declared }).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > max) {
        await reader.cancel();
        return { kind: 'too-large' };
      }
      chunks.push(value);
    }
  } catch (err) {
    return { kind: 'broken', message: err instanceof Error ? err.message : `${o.host}: body broke off` };
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return { kind: 'ok', bytes };
}

/** Lets go of a body we will not read, so the connection is freed (workerd holds it otherwise). */
export async function discard(res: Response): Promise<void> {
  if (res.body && !res.bodyUsed) await res.body.cancel().catch(() => undefined);
}
