import type { Context } from 'hono';
import { OciError } from '../../core/errors.js';
import { parseDigest } from '../../core/oci/digest.js';
import { MediaType, isValidMediaType } from '../../core/oci/media-types.js';
import { parseReference, type Reference } from '../../core/oci/reference.js';
import type { Defer } from '../../core/mirror/fills.js';
import type { Target } from '../../core/mirror/routing.js';
import type { Registry } from '../../core/registry/registry.js';
import { methodNotAllowed } from '../errors.js';
import { jsonResponse } from '../json.js';
import { byteRange, nextLink, pageRequest } from '../request.js';
import { blobHeaders, sized } from './blobs.js';
import { gated, manifestHeaders } from './manifests.js';

/**
 * The routes of a mirrored repository: reads only. Every answer names the upstream namespace it
 * came from (OCI-Namespace); anything that would write is refused with DENIED, since the
 * upstream owns the content.
 */
type Mirrored = Extract<Target, { kind: 'mirror' }>;

export type MirrorRoute = 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload';

export async function mirrorRoute(c: Context, registry: Registry, target: Mirrored, route: MirrorRoute, arg: string): Promise<Response> {
  try {
    const response = await answer(c, registry, target, route, arg);
    response.headers.set('OCI-Namespace', target.upstream.namespace);
    return response;
  } catch (err) {
    // Errors name the namespace too (the one error mapper in http/errors.ts writes the body).
    if (err instanceof OciError) err.headers['OCI-Namespace'] = target.upstream.namespace;
    throw err;
  }
}

async function answer(c: Context, registry: Registry, target: Mirrored, route: MirrorRoute, arg: string): Promise<Response> {
  const method = c.req.method;
  if (route === 'upload' || method === 'PUT' || method === 'POST' || method === 'PATCH' || method === 'DELETE') {
    throw new OciError('DENIED', `${target.name} is mirrored from upstream "${target.upstream.name}": pushes and deletes are refused`, {
      upstream: target.upstream.name,
    });
  }
  if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed(['GET', 'HEAD']);
  return read(c, registry, target, route, arg);
}

async function read(c: Context, registry: Registry, target: Mirrored, route: MirrorRoute, arg: string): Promise<Response> {
  const { mirror } = registry;
  const head = c.req.method === 'HEAD';
  switch (route) {
    case 'manifest': {
      const read = await mirror.manifests.get(target, lookup(arg), head ? 'HEAD' : 'GET');
      await gated(c, registry.gate(target.name, read.record.digest, deferOf(c), target), read.body);
      const headers = manifestHeaders(read.record);
      if (read.warning) headers.Warning = read.warning;
      return new Response(head ? null : (read.body ?? null), { status: 200, headers });
    }
    case 'blob': {
      const digest = parseDigest(arg);
      if (head) {
        const { size } = await mirror.blobs.stat(target, digest);
        return new Response(null, { status: 200, headers: blobHeaders(digest.value, size) });
      }
      const location = await registry.blobs.redirect(target.name, digest).catch((err: unknown) => {
        // Not linked yet: it is filled below, and redirected once cached.
        if (err instanceof OciError && err.kind === 'BLOB_UNKNOWN') return undefined;
        throw err;
      });
      if (location) return new Response(null, { status: 307, headers: { Location: location, 'Docker-Content-Digest': digest.value } });
      const blob = await mirror.blobs.read(target, digest, byteRange(c), deferOf(c));
      const length = blob.range ? blob.range.length : blob.size;
      const headers = blobHeaders(digest.value, length);
      if (!blob.range) return new Response(sized(blob.body, length), { status: 200, headers });
      headers['Content-Range'] = `bytes ${blob.range.offset}-${blob.range.offset + blob.range.length - 1}/${blob.size}`;
      return new Response(sized(blob.body, length), { status: 206, headers });
    }
    case 'tags': {
      const request = pageRequest(c);
      const page = await mirror.tags(target, request);
      const headers: Record<string, string> = {};
      const name = c.req.path.slice('/v2/'.length, -'/tags/list'.length);
      if (page.next) headers.Link = nextLink(`/v2/${name}/tags/list`, { n: request.n?.toString(), last: page.next });
      return jsonResponse(200, { name: target.name, tags: page.tags }, { contentType: 'application/json', headers, head });
    }
    case 'referrers': {
      const subject = parseDigest(arg);
      const artifactType = c.req.query('artifactType') || undefined;
      if (artifactType !== undefined && !isValidMediaType(artifactType)) {
        throw new OciError('QUERY_INVALID', `artifactType "${artifactType.slice(0, 80)}" is not a media type`);
      }
      const found = await mirror.referrers(target, subject, artifactType);
      if (found) {
        const headers: Record<string, string> = { 'Content-Type': MediaType.OciIndex, 'Content-Length': String(found.bytes.byteLength) };
        if (found.filtered) headers['OCI-Filters-Applied'] = 'artifactType';
        return new Response(head ? null : (found.bytes as unknown as BodyInit), { status: 200, headers });
      }
      return jsonResponse(200, { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] }, { contentType: MediaType.OciIndex, head });
    }
    default:
      throw new OciError('ROUTE_UNKNOWN');
  }
}

/** A tag that breaks the grammar names nothing: a miss, as for hosted repositories. */
function lookup(raw: string): Reference {
  try {
    return parseReference(raw);
  } catch (err) {
    if (err instanceof OciError && err.kind === 'REFERENCE_INVALID') throw new OciError('MANIFEST_UNKNOWN', undefined, { tag: raw.slice(0, 140) });
    throw err;
  }
}

/**
 * The background seam: on Workers a fill outlives the response only through ctx.waitUntil
 * (for at most 30 s after the client is gone; the fill's lease then expires and another
 * request takes over); on Node work simply continues, detached from the request.
 */
export function deferOf(c: Context): Defer {
  const log = (err: unknown) => console.error('outpost: background work failed:', err);
  let waitUntil: ((p: Promise<unknown>) => void) | undefined;
  try {
    const ctx = c.executionCtx;
    waitUntil = (p) => ctx.waitUntil(p);
  } catch {
    waitUntil = undefined;
  }
  return (work) => {
    const settled = work.catch(log);
    waitUntil?.(settled);
  };
}
