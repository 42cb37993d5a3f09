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
    // A 5xx is ours or an upstream's, never the client's: the operator needs to see it.
    if (err.status >= 500) console.error(`outpost: ${c.req.method} ${c.req.path.slice(0, 300)} answered ${err.status}: ${err.message}`);
    return ociErrorResponse(err, c.req.method === 'HEAD');
  }
  console.error(`outpost: ${c.req.method} ${c.req.path} failed:`, err);
  return ociErrorResponse(new OciError('INTERNAL'), c.req.method === 'HEAD');
}

export function ociErrorResponse(err: OciError, head = false): Response {
  const body = { errors: [{ code: err.code, message: err.message, detail: err.detail ?? null }] };
  return jsonResponse(err.status, body, { head, headers: err.headers });
}

export function methodNotAllowed(allowed: string[]): OciError {
  return new OciError('METHOD_NOT_ALLOWED', undefined, { allowed }, { Allow: allowed.join(', ') });
}

