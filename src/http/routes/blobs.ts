import type { Context } from 'hono';
import { OciError } from '../../core/errors.js';
import { parseDigest } from '../../core/oci/digest.js';
import type { Registry } from '../../core/registry/registry.js';
import { methodNotAllowed } from '../errors.js';
import { byteRange } from '../request.js';

/** GET/HEAD/DELETE /v2/<name>/blobs/<digest> (spec.md#pulling-blobs, #deleting-blobs). */
export async function blobRoute(c: Context, registry: Registry, name: string, rawDigest: string): Promise<Response> {
  const digest = parseDigest(rawDigest);
  switch (c.req.method) {
    case 'HEAD': {
      const info = await registry.blobs.stat(name, digest);
      if (!info) throw new OciError('BLOB_UNKNOWN', undefined, { digest: digest.value });
      return new Response(null, { status: 200, headers: blobHeaders(digest.value, info.size) });
    }
    case 'GET': {
      const location = await registry.blobs.redirect(name, digest);
      if (location) {
        // 307 keeps the method; clients send their Range header again to the store.
        return new Response(null, { status: 307, headers: { Location: location, 'Docker-Content-Digest': digest.value } });
      }
      const range = byteRange(c);
      const blob = await registry.blobs.read(name, digest, range);
      const length = blob.range ? blob.range.length : blob.size;
      const headers = blobHeaders(digest.value, length);
      if (!blob.range) return new Response(sized(blob.body, length), { status: 200, headers });
      const end = blob.range.offset + blob.range.length - 1;
      headers['Content-Range'] = `bytes ${blob.range.offset}-${end}/${blob.size}`;
      return new Response(sized(blob.body, length), { status: 206, headers });
    }
    case 'DELETE':
      await registry.blobs.delete(name, digest);
      return new Response(null, { status: 202, headers: { 'Content-Length': '0' } });
    default:
      throw methodNotAllowed(['GET', 'HEAD', 'DELETE']);
  }
}

/**
 * A body that the runtime sends with its Content-Length, so that a body which breaks off
 * aborts the response instead of ending it cleanly. Node sends the Content-Length header we
 * set; workerd streams a plain ReadableStream chunked whatever the header says, and keeps a
 * declared length only for a FixedLengthStream, which errors when fewer bytes arrive.
 */
export function sized(body: ReadableStream<Uint8Array>, length: number): ReadableStream<Uint8Array> {
  const Fixed = (globalThis as { FixedLengthStream?: new (length: number) => TransformStream<Uint8Array, Uint8Array> }).FixedLengthStream;
  if (!Fixed) return body;
  const fixed = new Fixed(length);
  body.pipeTo(fixed.writable).catch(() => undefined);
  return fixed.readable;
}

export function blobHeaders(digest: string, length: number): Record<string, string> {
  return {
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(length),
    'Docker-Content-Digest': digest,
    'Accept-Ranges': 'bytes',
    ETag: `"${digest}"`,
    // Content-addressed: the bytes at this URL never change.
    'Cache-Control': 'public, max-age=31536000, immutable',
  };
}
