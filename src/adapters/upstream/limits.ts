/**
 * Every limit of the upstream client, named with its reason. Timeouts and retries have
 * defaults here and can be tuned per upstream (RegistryUpstreamOptions); the byte caps are
 * fixed, because they protect this process's memory, not the upstream.
 */

/**
 * Manifests are read whole into memory. 4 MiB is the size the distribution spec names as the
 * minimum a registry should accept (spec.md#pushing-manifests) and the cap core puts on manifest
 * PUTs (core/oci/manifest.ts MAX_MANIFEST_BYTES; adapters may not import core, a test keeps the
 * two equal). A larger answer is refused before it is buffered: an upstream, or whoever sits
 * between us and it, cannot exhaust our memory with a manifest.
 */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/**
 * Token responses: a token travels in an Authorization header, whose size servers cap at
 * about 16 KiB, and the response may hold it twice (`token` and `access_token`); 128 KiB is
 * ample (oras-go uses the same figure).
 */
export const MAX_TOKEN_RESPONSE_BYTES = 128 * 1024;

/** Error bodies are read only for their OCI error codes; anything longer is not an error document worth reading. */
export const MAX_ERROR_BODY_BYTES = 64 * 1024;

/**
 * One page of a tag list. Registries that do not paginate (Docker Hub) answer every tag of a
 * repository at once; 4 MiB holds some 100,000 tags of 40 bytes, more than any real
 * repository, and stays small against a Worker's 128 MiB.
 */
export const MAX_TAG_LIST_BYTES = 4 * 1024 * 1024;

/** A referrers answer is an image index, held to the same cap as any manifest. */
export const MAX_REFERRERS_BYTES = MAX_MANIFEST_BYTES;

/**
 * Redirects followed for one request. A blob GET is redirected once or twice (registry ->
 * CDN -> edge); more is a loop or an attack, as for go-containerregistry and curl's defaults.
 */
export const MAX_REDIRECTS = 5;

/**
 * Tokens cached at once. One per repository pulled; the cache forgets the oldest past this,
 * so a mirror that touches very many repositories does not grow without bound.
 */
export const MAX_CACHED_TOKENS = 1024;

/** The token spec's default lifetime when a response has no `expires_in` (distribution spec/auth/token.md). */
export const DEFAULT_TOKEN_LIFETIME_SECONDS = 60;

/**
 * A token is dropped this long before it expires (at most half its lifetime), so a request
 * does not leave with a token that expires in flight or by the upstream's clock, which may be
 * ahead of ours.
 */
export const TOKEN_EXPIRY_MARGIN_MS = 10_000;

/** When a 429 names no Retry-After, callers are told to come back after this. */
export const DEFAULT_RETRY_AFTER_SECONDS = 60;

export interface Timeouts {
  /** From sending a request until its response headers arrive (connect, TLS, the upstream's think time). */
  headersMs: number;
  /** The same for a token request to the realm. */
  tokenMs: number;
  /** A body that delivers no byte for this long, while the caller is waiting for one, errors. */
  idleMs: number;
}

/**
 * 30 s for headers: Docker Hub and ghcr answer in well under a second, a slow private registry
 * in a few; past 30 s the client that waits on us has given up too. Tokens come from a
 * lighter service and get 15 s.
 */
export const DEFAULT_TIMEOUTS: Timeouts = { headersMs: 30_000, tokenMs: 15_000, idleMs: 30_000 };

export interface RetryPolicy {
  /** Attempts in all (the first one included) for a 5xx, a connection error or a timeout. */
  attempts: number;
  /** The first backoff; each further one doubles, up to `maxDelayMs`, then jitter takes 0-50 % off. */
  baseDelayMs: number;
  maxDelayMs: number;
  /**
   * A 429 whose Retry-After is at most this long is waited out and retried (it counts as an
   * attempt); a longer one is answered `rate-limited` at once, because the client waiting on
   * us would time out first.
   */
  maxRetryAfterMs: number;
}

/**
 * Four attempts with 250 ms, 500 ms, 1 s backoff: under two seconds of waiting in all, which
 * rides out a registry's rolling restart without holding a client much longer than it waits
 * for a pull anyway.
 */
export const DEFAULT_RETRIES: RetryPolicy = { attempts: 4, baseDelayMs: 250, maxDelayMs: 4_000, maxRetryAfterMs: 5_000 };
