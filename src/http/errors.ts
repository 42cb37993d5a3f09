import type { Context } from 'hono';
import { OciError, isOciError } from '../core/errors.js';
import { jsonResponse } from './json.js';

/**
 * The one place that writes OCI error bodies (spec.md#error-codes):
 *   {"errors":[{"code":"...","message":"...","detail":...}]}
 * Anything that is not an OciError is a bug or an outage, never the client's fault: it is
 * logged and answered 500 without internals.
 */
export function errorResponse(err: unknown, c: Context): Response {
  if (isOciError(err)) {
    c.set('errorCode', err.code);
    c.set('errorKind', err.kind);
    // A 5xx is ours or an upstream's, never the client's: the operator needs to see it.
    if (err.status >= 500) console.error(`outpost: ${c.req.method} ${c.req.path.slice(0, 300)} answered ${err.status}${requestOf(c)}: ${err.message}`);
    return ociErrorResponse(err, c.req.method === 'HEAD');
  }
  console.error(`outpost: ${c.req.method} ${c.req.path.slice(0, 300)} failed${requestOf(c)}:`, err);
  return ociErrorResponse(new OciError('INTERNAL'), c.req.method === 'HEAD');
}

/**
 * What one error body may carry. Messages and details are written to name client data only in
 * slices, and this is the backstop: a detail that cannot be serialised, or is larger than this,
 * is dropped rather than answered with a 500 or echoed at length.
 */
const MAX_MESSAGE_CHARS = 1024;
const MAX_DETAIL_CHARS = 4096;

/** The request id (src/http/access-log.ts) that ties an error line to its access record and the client's X-Request-Id. */
function requestOf(c: Context): string {
  const id = c.get('requestId');
  return id ? ` (request ${id})` : '';
}

export function ociErrorResponse(err: OciError, head = false): Response {
  const message = err.message.length > MAX_MESSAGE_CHARS ? `${err.message.slice(0, MAX_MESSAGE_CHARS)}...` : err.message;
  const body = { errors: [{ code: err.code, message, detail: boundedDetail(err.detail) }] };
  return jsonResponse(err.status, body, { head, headers: err.headers });
}

function boundedDetail(detail: unknown): unknown {
  if (detail === undefined || detail === null) return null;
  try {
    const text = JSON.stringify(detail);
    return text !== undefined && text.length <= MAX_DETAIL_CHARS ? detail : null;
  } catch {
    return null;
  }
}

export function methodNotAllowed(allowed: string[]): OciError {
  return new OciError('METHOD_NOT_ALLOWED', undefined, { allowed }, { Allow: allowed.join(', ') });
}

