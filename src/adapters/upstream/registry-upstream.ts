import { systemClock, type Clock } from '../../ports/clock.js';
import type { RateLimitInfo, Upstream, UpstreamBlob, UpstreamFailure, UpstreamManifest, UpstreamResult, UpstreamTags } from '../../ports/upstream.js';
import { Authenticator, pullScope, type Attempt, type Credentials } from './auth.js';
import { discard, readBounded, watchBody } from './bodies.js';
import { failureOf, unavailable } from './failures.js';
import { parseContentRange, parseLength, parseNextLink, parseRateLimitValue } from './headers.js';
import {
  DEFAULT_RETRIES,
  DEFAULT_TIMEOUTS,
  MAX_MANIFEST_BYTES,
  MAX_REFERRERS_BYTES,
  MAX_TAG_LIST_BYTES,
  type RetryPolicy,
  type Timeouts,
} from './limits.js';
import { Transport, type Received } from './transport.js';

/**
 * The Upstream port over the Distribution API (OCI distribution-spec v1.1) with an injected
 * WHATWG `fetch`: no node:* imports, so it runs on Node and in workerd alike. Authentication
 * is auth.ts, retries, redirects and timeouts transport.ts, bodies bodies.ts, and the mapping
 * of answers to the port's failures failures.ts; this file builds the requests and reads the
 * answers of each endpoint.
 */

export interface RegistryUpstreamOptions {
  /** Base URL, e.g. https://registry-1.docker.io; a path prefix before /v2/ is kept. */
  url: string;
  /** Sent as Basic to the upstream, or to its token realm (see auth.ts for when). */
  credentials?: Credentials;
  /** The one way out; the global fetch is never used. */
  fetch: typeof fetch;
  /** Token expiry, Retry-After dates and rate-limit stamps. Default: the system clock. */
  clock?: Clock;
  /** Backoff and Retry-After waits. Default: setTimeout. */
  sleep?: (ms: number) => Promise<void>;
  /** Jitter source in [0, 1). Default: Math.random. */
  random?: () => number;
  timeouts?: Partial<Timeouts>;
  retries?: Partial<RetryPolicy>;
  /** Structured events (retries, redirects, tokens); never carries a credential, token or signed URL. */
  log?: (event: Record<string, unknown>) => void;
}

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export class RegistryUpstream implements Upstream {
  private readonly base: URL;
  /** The base URL's path without its trailing slash ('' at the root; a URL's own pathname is never empty). */
  private readonly prefix: string;
  private readonly clock: Clock;
  private readonly timeouts: Timeouts;
  private readonly transport: Transport;
  private readonly auth: Authenticator;
  private lastRateLimit: RateLimitInfo | undefined;

  constructor(o: RegistryUpstreamOptions) {
    const base = new URL(o.url);
    if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new TypeError(`upstream URL must be http(s): ${o.url}`);
    if (base.username || base.password) throw new TypeError('upstream URL must not carry credentials; pass `credentials`');
    this.prefix = base.pathname.replace(/\/+$/, '');
    base.search = '';
    base.hash = '';
    this.base = base;
    this.clock = o.clock ?? systemClock;
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...o.timeouts };
    const log = o.log ?? (() => undefined);
    // Called as a plain function: workerd's fetch refuses to run with another object as `this`.
    const f = o.fetch;
    this.transport = new Transport({
      fetch: (input, init) => f(input, init),
      clock: this.clock,
      sleep: o.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
      random: o.random ?? Math.random,
      retries: { ...DEFAULT_RETRIES, ...o.retries },
      log,
      observe: (res, url) => this.observe(res, url),
    });
    this.auth = new Authenticator({
      upstream: base,
      credentials: o.credentials,
      transport: this.transport,
      clock: this.clock,
      tokenTimeoutMs: this.timeouts.tokenMs,
      idleMs: this.timeouts.idleMs,
      log,
      sleep: o.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    });
  }

  async manifest(repository: string, reference: string, method: 'GET' | 'HEAD', accept: string[]): Promise<UpstreamResult<UpstreamManifest>> {
    const url = this.endpoint(`${repositoryPath(repository)}/manifests/${segment(reference)}`);
    const r = await this.exchange(repository, method, url, { accept: accept.join(', ') });
    if (r.kind !== 'response') return r;
    const { res } = r;
    if (res.status !== 200) return this.failure(r, 'manifest');
    const mediaType = res.headers.get('content-type')?.trim() ?? '';
    const digest = res.headers.get('docker-content-digest')?.trim() || undefined;
    const withDigest = <T extends object>(m: T) => (digest === undefined ? m : { ...m, digest });
    if (method === 'HEAD') {
      await discard(res);
      const size = parseLength(res.headers.get('content-length'));
      if (size === undefined) return unavailable(`${r.url.host} answered a manifest HEAD without a Content-Length`);
      return withDigest({ kind: 'ok' as const, mediaType, size });
    }
    const read = await this.readWhole(r, MAX_MANIFEST_BYTES, 'manifest');
    if (read.kind !== 'ok') return read;
    return withDigest({ kind: 'ok' as const, bytes: read.bytes, mediaType, size: read.bytes.byteLength });
  }

  async blob(repository: string, digest: string, offset?: number, length?: number): Promise<UpstreamResult<UpstreamBlob>> {
    const from = offset ?? 0;
    if (!Number.isSafeInteger(from) || from < 0) throw new RangeError(`blob offset must be a non-negative integer: ${offset}`);
    if (length !== undefined && (!Number.isSafeInteger(length) || length < 1)) throw new RangeError(`blob length must be a positive integer: ${length}`);
    const headers: Record<string, string> = {};
    // Only a part of the blob is worth a Range header (RFC 9110 section 14.1.2): `bytes=0-` asks for all of it.
    if (from > 0 || length !== undefined) headers.range = `bytes=${from}-${length === undefined ? '' : from + length - 1}`;
    const url = this.endpoint(`${repositoryPath(repository)}/blobs/${segment(digest)}`);
    const r = await this.exchange(repository, 'GET', url, headers);
    if (r.kind !== 'response') return r;
    const { res } = r;
    const declared = parseLength(res.headers.get('content-length'));
    let start = 0;
    let bodyLength = declared;
    let size: number | undefined;
    if (res.status === 200) {
      // The upstream ignored our Range (or was not asked): this is the whole blob, from 0.
      size = declared;
    } else if (res.status === 206) {
      const range = parseContentRange(res.headers.get('content-range'));
      if (!range) {
        await discard(res);
        r.abort();
        return unavailable(`${r.url.host} answered 206 without a readable Content-Range`, 206);
      }
      start = range.start;
      size = range.total;
      bodyLength = range.end - range.start + 1;
      if (declared !== undefined && declared !== bodyLength) {
        await discard(res);
        r.abort();
        return unavailable(`${r.url.host} answered 206 with a Content-Length that disagrees with its Content-Range`, 206);
      }
    } else {
      return this.failure(r, 'blob');
    }
    const body = watchBody(res.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() }), { ...this.watch(r), length: bodyLength });
    const blob: UpstreamBlob = { body, offset: start };
    if (bodyLength !== undefined) blob.length = bodyLength;
    if (size !== undefined) blob.size = size;
    return { kind: 'ok', ...blob };
  }

  async blobHead(repository: string, digest: string): Promise<UpstreamResult<{ size?: number }>> {
    const url = this.endpoint(`${repositoryPath(repository)}/blobs/${segment(digest)}`);
    const r = await this.exchange(repository, 'HEAD', url, {});
    if (r.kind !== 'response') return r;
    const { res } = r;
    await discard(res);
    if (res.status === 200) {
      const size = parseLength(res.headers.get('content-length'));
      return size === undefined ? { kind: 'ok' } : { kind: 'ok', size };
    }
    // The upstream redirected us to its storage, which vouches for the blob; storage that
    // refuses a HEAD (an S3 URL signed for GET answers 403) does not undo that.
    if (r.redirected && res.status !== 429 && (res.status < 500 || res.status === 501)) return { kind: 'ok' };
    return this.failure(r, 'blob');
  }

  async tags(repository: string, n?: number, last?: string): Promise<UpstreamResult<UpstreamTags>> {
    const url = this.endpoint(`${repositoryPath(repository)}/tags/list`, { n: n === undefined ? undefined : String(n), last });
    const r = await this.exchange(repository, 'GET', url, { accept: 'application/json' });
    if (r.kind !== 'response') return r;
    const { res } = r;
    if (res.status !== 200) return this.failure(r, 'tag list');
    const read = await this.readWhole(r, MAX_TAG_LIST_BYTES, 'tag list');
    if (read.kind !== 'ok') return read;
    const tags = parseTagList(read.bytes);
    if (!tags) return unavailable(`${r.url.host} served a tag list that is not {"name", "tags": [...]}`);
    const next = parseNextLink(res.headers.get('link'), r.url)?.searchParams.get('last') ?? undefined;
    return next === undefined ? { kind: 'ok', tags } : { kind: 'ok', tags, next };
  }

  async referrers(repository: string, digest: string, artifactType?: string): Promise<UpstreamResult<{ bytes: Uint8Array; filtered: boolean }>> {
    const url = this.endpoint(`${repositoryPath(repository)}/referrers/${segment(digest)}`, { artifactType });
    const r = await this.exchange(repository, 'GET', url, { accept: OCI_INDEX });
    if (r.kind !== 'response') return r;
    const { res } = r;
    if (res.status !== 200) return this.failure(r, 'referrers');
    const read = await this.readWhole(r, MAX_REFERRERS_BYTES, 'referrers index');
    if (read.kind !== 'ok') return read;
    // spec.md#listing-referrers: OCI-Filters-Applied names the filters the registry applied.
    const applied = (res.headers.get('oci-filters-applied') ?? '').split(',').map((f) => f.trim());
    return { kind: 'ok', bytes: read.bytes, filtered: applied.includes('artifactType') };
  }

  rateLimit(): RateLimitInfo | undefined {
    return this.lastRateLimit;
  }

  /** One authenticated request: a first attempt, and after a 401 from the upstream itself one more with what its challenge asked for. */
  private async exchange(repository: string, method: 'GET' | 'HEAD', url: URL, headers: Record<string, string>): Promise<Received | UpstreamFailure> {
    const scope = pullScope(repository);
    const first = await this.auth.prepare(scope);
    if (first.kind !== 'attempt') return first;
    let sent = await this.send(method, url, headers, first);
    // A 401 from a host we were redirected to is not the upstream's challenge: we owe it no credentials.
    if (sent.kind === 'response' && sent.res.status === 401 && !sent.redirected) {
      const again = await this.auth.challenged(sent.res, scope, first);
      if (again.kind !== 'attempt') return again;
      sent = await this.send(method, url, headers, again);
    }
    return sent.kind === 'error' ? unavailable(sent.message) : sent;
  }

  private send(method: 'GET' | 'HEAD', url: URL, headers: Record<string, string>, attempt: Attempt) {
    const h = attempt.header === undefined ? headers : { ...headers, authorization: attempt.header };
    return this.transport.send({ method, url, headers: h, timeoutMs: this.timeouts.headersMs });
  }

  /** A 200's whole body, at most `max` bytes (limits.ts says why each cap). */
  private async readWhole(r: Received, max: number, what: string): Promise<{ kind: 'ok'; bytes: Uint8Array } | UpstreamFailure> {
    const read = await readBounded(r.res, max, this.watch(r));
    if (read.kind === 'too-large') return unavailable(`${r.url.host} served a ${what} larger than ${max} bytes`);
    if (read.kind === 'broken') return unavailable(read.message);
    return read;
  }

  private failure(r: Received, what: string): Promise<UpstreamFailure> {
    return failureOf(r.res, { ...this.watch(r), what, now: this.clock.now() });
  }

  private watch(r: Received) {
    return { host: r.url.host, idleMs: this.timeouts.idleMs, abort: r.abort };
  }

  private endpoint(path: string, query: Record<string, string | undefined> = {}): URL {
    const url = new URL(this.base.href);
    url.pathname = `${this.prefix}/v2/${path}`;
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
    return url;
  }

  /** Docker Hub's `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`, from the upstream's own answers. */
  private observe(res: Response, url: URL): void {
    if (url.origin !== this.base.origin) return;
    const limit = parseRateLimitValue(res.headers.get('ratelimit-limit'));
    const remaining = parseRateLimitValue(res.headers.get('ratelimit-remaining'));
    if (limit === undefined && remaining === undefined) return;
    const info: RateLimitInfo = { at: this.clock.now() };
    if (limit !== undefined) info.limit = limit;
    if (remaining !== undefined) info.remaining = remaining;
    this.lastRateLimit = info;
  }
}

/**
 * One path segment, percent-encoded (RFC 3986 section 3.3). `:` is a legal pchar and is kept,
 * so `sha256:...` digests go out as registries expect them.
 */
export function segment(s: string): string {
  // WHATWG URL parsing would fold `.` and `..` away and reach another path; core validates
  // names and references, so getting one here is a programming error.
  if (s === '' || s === '.' || s === '..') throw new RangeError(`not a path segment: ${JSON.stringify(s)}`);
  return encodeURIComponent(s).replace(/%3A/gi, ':');
}

/** A repository name's components, each escaped: `library/nginx` stays two segments. */
export function repositoryPath(repository: string): string {
  return repository.split('/').map(segment).join('/');
}

function parseTagList(bytes: Uint8Array): string[] | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return undefined;
  // Distribution answers `"tags": null` for a repository without tags.
  const tags = (doc as { tags?: unknown }).tags ?? [];
  if (!Array.isArray(tags) || !tags.every((t): t is string => typeof t === 'string')) return undefined;
  return tags;
}
