import type { Context } from 'hono';
import { parseDigest } from '../../core/oci/digest.js';
import { MediaType, isValidMediaType } from '../../core/oci/media-types.js';
import { OciError } from '../../core/errors.js';
import type { Registry } from '../../core/registry/registry.js';
import { methodNotAllowed } from '../errors.js';
import { jsonResponse } from '../json.js';
import { nextLink, pageRequest } from '../request.js';

/** GET /v2/<name>/tags/list (spec.md#listing-tags). */
export async function tagsRoute(c: Context, registry: Registry, name: string): Promise<Response> {
  onlyGet(c);
  const request = pageRequest(c);
  const page = await registry.tags.list(name, request);
  const headers: Record<string, string> = {};
  if (page.next) headers.Link = nextLink(`/v2/${name}/tags/list`, { n: request.n?.toString(), last: page.next });
  return jsonResponse(200, { name, tags: page.tags }, { contentType: 'application/json', headers, head: c.req.method === 'HEAD' });
}

/** GET /v2/_catalog (Distribution's catalog API, paged like tags). */
export async function catalogRoute(c: Context, registry: Registry, visible?: (name: string) => boolean): Promise<Response> {
  onlyGet(c);
  const request = pageRequest(c);
  const page = await registry.catalog.list(request, visible);
  const headers: Record<string, string> = {};
  if (page.next) headers.Link = nextLink('/v2/_catalog', { n: request.n?.toString(), last: page.next });
  return jsonResponse(200, { repositories: page.repositories }, { contentType: 'application/json', headers, head: c.req.method === 'HEAD' });
}

/** GET /v2/<name>/referrers/<digest>[?artifactType=] (spec.md#listing-referrers). */
export async function referrersRoute(c: Context, registry: Registry, name: string, rawDigest: string): Promise<Response> {
  onlyGet(c);
  const subject = parseDigest(rawDigest);
  const artifactType = c.req.query('artifactType') || undefined;
  if (artifactType !== undefined && !isValidMediaType(artifactType)) {
    throw new OciError('QUERY_INVALID', `artifactType "${artifactType.slice(0, 80)}" is not a media type`);
  }
  const last = c.req.query('last') || undefined;
  const page = await registry.referrers.list(name, subject, artifactType, last);
  const headers: Record<string, string> = {};
  if (page.filtered) headers['OCI-Filters-Applied'] = 'artifactType';
  if (page.next) headers.Link = nextLink(`/v2/${name}/referrers/${subject.value}`, { artifactType, last: page.next });
  const index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: page.manifests };
  return jsonResponse(200, index, { contentType: MediaType.OciIndex, headers, head: c.req.method === 'HEAD' });
}

function onlyGet(c: Context): void {
  if (c.req.method !== 'GET' && c.req.method !== 'HEAD') throw methodNotAllowed(['GET', 'HEAD']);
}
