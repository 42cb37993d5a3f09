import type { Context } from 'hono';
import { OciError } from '../core/errors.js';
import type { RangeRequest } from '../core/registry/blobs.js';
import type { ChunkRange } from '../core/registry/uploads.js';
import type { PageRequest } from '../core/registry/pages.js';
import type { ByteStream } from '../core/streams.js';

/** Parsing of request headers and query parameters shared by the routes. */

/**
 * Whether a path has a "." or ".." segment, in any of the spellings URL parsing resolves:
 * percent-encoded dots (%2e), and backslashes, which are separators in http URLs.
 */
export function hasDotSegment(target: string): boolean {
  const path = target.split(/[?#]/, 1)[0]!;
  return path.split(/[/\\]/).some((segment) => /^(?:\.|%2e){1,2}$/i.test(segment));
}

declare module 'hono' {
  interface ContextVariableMap {
    /** The runtime's own reading of the request body (ConnectionInfo.requestBody), set by createApp. */
    requestBody: (() => ByteStream | undefined) | undefined;
  }
}

/** The request body, or null when the request has none. */
export function body(c: Context): ByteStream | null {
  return c.get('requestBody')?.() ?? c.req.raw.body;
}

/** Content-Length as a number; undefined when absent (chunked transfer). */
export function contentLength(c: Context): number | undefined {
  const raw = c.req.header('content-length');
  if (raw === undefined) return undefined;
  if (!/^\d{1,15}$/.test(raw)) throw new OciError('SIZE_INVALID', `invalid Content-Length "${raw.slice(0, 40)}"`);
  return Number(raw);
}

/** Content-Range of an upload chunk: "<start>-<end>" (spec.md#pushing-a-blob-in-chunks); "bytes " prefix tolerated. */
export function chunkRange(c: Context): ChunkRange | undefined {
  const raw = c.req.header('content-range');
  if (raw === undefined) return undefined;
  const m = /^(?:bytes[ =])?(\d{1,15})-(\d{1,15})(?:\/(?:\d{1,15}|\*))?$/.exec(raw.trim());
  if (!m) throw new OciError('CONTENT_RANGE_INVALID', `invalid Content-Range "${raw.slice(0, 60)}": expected "<start>-<end>"`);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw new OciError('CONTENT_RANGE_INVALID', `invalid Content-Range "${raw.slice(0, 60)}": end before start`);
  return { start, end };
}

/** A single RFC 9110 byte range; anything else (absent, multiple ranges, malformed) is ignored. */
export function byteRange(c: Context): RangeRequest | undefined {
  const raw = c.req.header('range');
  if (!raw) return undefined;
  const m = /^bytes=(\d{0,15})-(\d{0,15})$/.exec(raw.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') return { suffix: Number(m[2]) };
  const start = Number(m[1]);
  if (m[2] === '') return { start };
  const end = Number(m[2]);
  return end < start ? undefined : { start, end };
}

/** `n` and `last` of the list endpoints. */
export function pageRequest(c: Context): PageRequest {
  const n = c.req.query('n');
  const last = c.req.query('last');
  const request: PageRequest = {};
  if (n !== undefined && n !== '') {
    if (!/^\d{1,9}$/.test(n)) throw new OciError('QUERY_INVALID', `n must be a non-negative integer, got "${n.slice(0, 20)}"`);
    request.n = Number(n);
  }
  if (last !== undefined && last !== '') request.last = last;
  return request;
}

/** A Link header for the next page (RFC 8288), as Distribution sends it. */
export function nextLink(path: string, params: Record<string, string | undefined>): string {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) query.set(k, v);
  return `<${path}?${query.toString()}>; rel="next"`;
}
