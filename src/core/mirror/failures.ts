import { OciError } from '../errors.js';
import type { UpstreamFailure } from '../../ports/upstream.js';

/**
 * The one mapping from an upstream's failure to what the client sees when nothing cached can
 * answer: every message names the upstream (by its configured alias), never a 500.
 */
export function upstreamError(upstream: string, failure: UpstreamFailure, notFound: () => OciError): OciError {
  switch (failure.kind) {
    case 'not-found':
      return notFound();
    case 'denied':
      return new OciError('UPSTREAM_DENIED', `upstream "${upstream}" refused access (HTTP ${failure.status}): the repository may not exist there or may need credentials`, {
        upstream,
        status: failure.status,
      });
    case 'rate-limited':
      return new OciError(
        'UPSTREAM_RATE_LIMITED',
        `upstream "${upstream}" is rate-limiting this mirror; retry after ${failure.retryAfterSeconds} s`,
        { upstream, retryAfterSeconds: failure.retryAfterSeconds },
        { 'Retry-After': String(failure.retryAfterSeconds) },
      );
    case 'unavailable':
      return new OciError('UPSTREAM_UNAVAILABLE', `upstream "${upstream}" is unavailable: ${failure.message.slice(0, 200)}`, {
        upstream,
        ...(failure.status !== undefined ? { status: failure.status } : {}),
      });
  }
}

/** A failure as it is kept in the index (a fill's or fetch's state), so followers answer with the same error. */
export interface FailureRecord {
  kind: string;
  message: string;
  status: number;
  retryAfterSeconds?: number;
}

export function recordOf(err: OciError): FailureRecord {
  const record: FailureRecord = { kind: err.kind, message: err.message.slice(0, 300), status: err.status };
  const retry = err.headers['Retry-After'];
  if (retry !== undefined) record.retryAfterSeconds = Number(retry);
  return record;
}

export function errorOf(record: FailureRecord): OciError {
  const kind = (['UPSTREAM_UNAVAILABLE', 'UPSTREAM_RATE_LIMITED', 'UPSTREAM_DENIED', 'UPSTREAM_INVALID', 'BLOB_UNKNOWN', 'MANIFEST_UNKNOWN'] as const).find(
    (k) => k === record.kind,
  ) ?? 'UPSTREAM_UNAVAILABLE';
  const headers: Record<string, string> = record.retryAfterSeconds !== undefined ? { 'Retry-After': String(record.retryAfterSeconds) } : {};
  return new OciError(kind, record.message, undefined, headers);
}
