import type { Context } from 'hono';
import { OciError } from '../../core/errors.js';
import { parseDigest } from '../../core/oci/digest.js';
import { parseName } from '../../core/oci/reference.js';
import type { Registry } from '../../core/registry/registry.js';
import { uploadRange, type UploadStatus } from '../../core/registry/uploads.js';
import { discard } from '../../core/streams.js';
import { methodNotAllowed } from '../errors.js';
import { body, chunkRange, contentLength } from '../request.js';

/**
 * POST /v2/<name>/blobs/uploads/ : start an upload, upload monolithically (?digest=) or mount
 * (?mount=&from=) (spec.md#pushing-blobs).
 */
export async function startUploadRoute(c: Context, registry: Registry, name: string): Promise<Response> {
  if (c.req.method !== 'POST') throw methodNotAllowed(['POST']);
  const mount = c.req.query('mount');
  if (mount !== undefined) {
    const digest = parseDigest(mount);
    const from = c.req.query('from');
    // Without `from` the registry may mount from anywhere it chooses; Outpost does not, so
    // that content in one repository is never revealed through another. Both fall back to
    // an ordinary upload session, as the spec asks.
    // A caller who may not pull `from` gets an upload session, as if `from` lacked the blob.
    const mounted = from === undefined || c.get('mountRefused') ? undefined : await registry.blobs.mount(name, digest, parseName(from));
    if (mounted) {
      await discard(body(c));
      return created(name, mounted.digest);
    }
  }
  const rawDigest = mount === undefined ? c.req.query('digest') : undefined;
  if (rawDigest !== undefined) {
    const digest = parseDigest(rawDigest);
    const stream = body(c) ?? new ReadableStream<Uint8Array>({ start: (ctl) => ctl.close() });
    const blob = await registry.blobs.write(name, digest, stream, contentLength(c));
    return created(name, blob.digest);
  }
  await discard(body(c));
  const upload = await registry.uploads.start(name);
  const headers = uploadHeaders(upload);
  if (registry.uploads.chunkMinLength > 0) headers['OCI-Chunk-Min-Length'] = String(registry.uploads.chunkMinLength);
  return new Response(null, { status: 202, headers });
}

/** GET/PATCH/PUT/DELETE /v2/<name>/blobs/uploads/<id> (spec.md#pushing-a-blob-in-chunks). */
export async function uploadRoute(c: Context, registry: Registry, name: string, id: string): Promise<Response> {
  switch (c.req.method) {
    case 'GET': {
      const status = await registry.uploads.status(name, id);
      return new Response(null, { status: 204, headers: uploadHeaders(status) });
    }
    case 'PATCH': {
      const status = await registry.uploads.append(name, id, body(c), chunkRange(c), contentLength(c));
      return new Response(null, { status: 202, headers: uploadHeaders(status) });
    }
    case 'PUT': {
      const rawDigest = c.req.query('digest');
      if (rawDigest === undefined) {
        await discard(body(c));
        throw new OciError('DIGEST_INVALID', 'completing an upload requires ?digest=', { uploadId: id });
      }
      const digest = parseDigest(rawDigest);
      const blob = await registry.uploads.complete(name, id, digest, body(c), chunkRange(c), contentLength(c));
      return created(name, blob.digest);
    }
    case 'DELETE':
      await registry.uploads.cancel(name, id);
      return new Response(null, { status: 204 });
    default:
      throw methodNotAllowed(['GET', 'PATCH', 'PUT', 'DELETE']);
  }
}

function uploadHeaders(upload: UploadStatus): Record<string, string> {
  return {
    Location: `/v2/${upload.name}/blobs/uploads/${upload.id}`,
    Range: uploadRange(upload.size),
    'Docker-Upload-UUID': upload.id,
    'Content-Length': '0',
  };
}

function created(name: string, digest: string): Response {
  return new Response(null, {
    status: 201,
    headers: { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' },
  });
}
