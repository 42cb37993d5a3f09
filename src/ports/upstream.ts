import type { ByteStream } from './blob-store.js';

/**
 * Upstream: one remote OCI registry that Outpost mirrors (Docker Hub, ghcr.io, a private
 * registry). The adapter speaks the Distribution API over HTTP with an injected `fetch`:
 * authentication (Bearer token flow and Basic), retries, redirects and timeouts are its
 * business; core sees only these answers. Repository names here are the upstream's own
 * (`library/nginx`, already normalised), never Outpost's qualified names.
 *
 * Every answer is a tagged value; only a programming error throws. Bodies are streams read
 * only as far as the caller reads; a stream that breaks off mid-way errors (never a clean
 * short end), so a caller can always tell a truncated body from a whole one.
 */

/** Why the upstream could not answer. Each maps to one client-facing error in core. */
export type UpstreamFailure =
  /** 404 or the registry's *_UNKNOWN codes: the thing does not exist upstream. */
  | { kind: 'not-found' }
  /** 401/403 after authenticating as configured: the upstream refuses us. */
  | { kind: 'denied'; status: number; message: string }
  /** 429: come back after `retryAfterSeconds` (from Retry-After, or a default). */
  | { kind: 'rate-limited'; retryAfterSeconds: number }
  /** Connection errors, timeouts, 5xx and anything unexpected, after the adapter's retries. */
  | { kind: 'unavailable'; status?: number; message: string };

export type UpstreamResult<T> = ({ kind: 'ok' } & T) | UpstreamFailure;

export interface UpstreamManifest {
  /** The bytes exactly as served (GET only; HEAD answers have none). */
  bytes?: Uint8Array;
  /** The Content-Type the upstream sent. */
  mediaType: string;
  /** Docker-Content-Digest as sent, when sent; core computes its own from the bytes. */
  digest?: string;
  size: number;
}

export interface UpstreamBlob {
  body: ByteStream;
  /** Length of `body` when the upstream said (Content-Length), else undefined. */
  length?: number;
  /**
   * Where `body` starts in the blob: the requested offset when the upstream honoured the
   * Range (206), 0 when it ignored it and sent the whole blob (200).
   */
  offset: number;
  /** The whole blob's size, when known (Content-Range total, or Content-Length of a 200). */
  size?: number;
}

export interface UpstreamTags {
  tags: string[];
  /** The upstream's `Link` next page, passed through as its `last` parameter when present. */
  next?: string;
}

/** The upstream's rate-limit headers as last seen (Docker Hub: ratelimit-remaining). */
export interface RateLimitInfo {
  remaining?: number;
  limit?: number;
  /** Epoch ms when it was read. */
  at: number;
}

export interface Upstream {
  /** HEAD (no body) or GET of a manifest by tag or digest, with the Accept header given. */
  manifest(repository: string, reference: string, method: 'GET' | 'HEAD', accept: string[]): Promise<UpstreamResult<UpstreamManifest>>;

  /** GET of a blob, optionally from `offset` (a Range request); redirects followed without credentials. */
  blob(repository: string, digest: string, offset?: number, length?: number): Promise<UpstreamResult<UpstreamBlob>>;

  /** HEAD of a blob: its size when it exists for this repository. */
  blobHead(repository: string, digest: string): Promise<UpstreamResult<{ size?: number }>>;

  /** GET /v2/<repository>/tags/list, one page. */
  tags(repository: string, n?: number, last?: string): Promise<UpstreamResult<UpstreamTags>>;

  /** GET /v2/<repository>/referrers/<digest>: the index bytes; not-found when the upstream has no referrers API. */
  referrers(repository: string, digest: string, artifactType?: string): Promise<UpstreamResult<{ bytes: Uint8Array; filtered: boolean }>>;

  /** The rate-limit headers last seen, when the upstream sends them. */
  rateLimit(): RateLimitInfo | undefined;
}
