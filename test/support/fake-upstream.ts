import type { Clock } from '../../src/ports/clock.js';
import type { UpstreamResult } from '../../src/ports/upstream.js';
import { sha256, type Image } from './images.js';

/**
 * A scripted fake OCI registry, used as an injected `fetch` (no sockets), after regclient's
 * reqresp: it serves manifests, blobs, tag lists and referrers from memory, runs a token
 * service and a blob CDN on hosts of its own, and takes scripted faults that replace or spoil
 * the answers to matching requests. Every request, to any of its hosts, is recorded.
 *
 *   const up = new FakeUpstream({ host: 'registry.test', auth: { scheme: 'bearer' }, blobHost: 'cdn.test', clock });
 *   up.addImage('library/nginx', 'latest', image());   // or addBlob / addManifest
 *   up.fault({ kind: 'status', status: 503, times: 2, match: { path: '/manifests/' } });
 *   const client = new RegistryUpstream({ url: up.url, fetch: up.fetch, ... });
 *   expect(up.requestsTo('cdn.test').every((r) => !r.headers.authorization)).toBe(true);
 *
 * Hosts: `host` is the registry (`/v2/...`); with bearer auth the token service answers at
 * the realm (default https://auth.<host>/token); with `blobHost`, blob GET and HEAD answer
 * 307 to `https://<blobHost>/blobs/<digest>?sig=...`, which refuses a request that carries
 * Authorization (as S3 refuses a presigned URL with a second auth mechanism). Any other host
 * fails like a DNS error.
 *
 * Faults are taken in the order added; each applies to `times` matching requests (default 1,
 * Infinity for all). A match defaults to every request to the registry host; `path` is a
 * substring of the path, or a RegExp over it. Replacing faults answer instead of the registry;
 * body faults (slow, stall, wrong-bytes, truncate, disconnect) spoil the next 2xx GET body that
 * matches; ignore-range makes the next matching ranged request answer 200 with everything.
 */

export interface FakeUser {
  username: string;
  password: string;
}

export type FakeAuth =
  | {
      scheme: 'bearer';
      /** Default https://auth.<host>/token. */
      realm?: string;
      /** Default the registry host. */
      service?: string;
      /** Accounts the token service knows; wrong credentials answer 401. */
      users?: FakeUser[];
      /** Whether an anonymous token grants pulls (default true); without, it grants nothing, as Docker Hub for a private repository. */
      anonymous?: boolean;
      /** Token lifetime in seconds (default 300); null leaves `expires_in` out of the response. */
      expiresIn?: number | null;
      /** Which field carries the token (default `token`). */
      tokenField?: 'token' | 'access_token' | 'both';
    }
  | { scheme: 'basic'; users: FakeUser[] };

export interface FakeUpstreamOptions {
  /** Registry host, default `registry.test`. */
  host?: string;
  /** Default https. */
  scheme?: 'https' | 'http';
  auth?: FakeAuth;
  /** Blob GET/HEAD redirect to this host, which serves them. */
  blobHost?: string;
  /** false: /referrers/ answers 404, as a registry without the referrers API. Default true. */
  referrersApi?: boolean;
  /** Docker Hub's headers on manifest answers; `remaining` counts down per manifest GET, 429 at 0. */
  rateLimit?: { limit: number; remaining: number; windowSeconds?: number };
  /** Token expiry. Default Date.now. */
  clock?: Clock;
  /** The waits of `slow` bodies. Default setTimeout (looked up at call time, so fake timers apply). */
  sleep?: (ms: number) => Promise<void>;
  /** Bytes per body chunk, default 16 KiB. */
  chunkBytes?: number;
}

export interface FakeRequest {
  method: string;
  url: string;
  host: string;
  path: string;
  /** Lower-case names. */
  headers: Record<string, string>;
}

export interface FaultMatch {
  method?: string;
  /** Default the registry host. */
  host?: string;
  /** A substring of the path, or a RegExp over it. */
  path?: string | RegExp;
}

export type FaultKind =
  /** Answer this status (and headers, body) instead. */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** 401 with this registry's challenge, even to a valid token. */
  | { kind: 'unauthorized' }
  /** fetch rejects, as on a refused or reset connection. */
  | { kind: 'connection-error' }
  /** No response until the request is aborted. */
  | { kind: 'hang' }
  /** Anything else. */
  | { kind: 'respond'; respond: (req: FakeRequest) => Response | Promise<Response> }
  /** A ranged request answers 200 with the whole content. */
  | { kind: 'ignore-range' }
  /** The body trickles: `chunkBytes` every `delayMs`. */
  | { kind: 'slow'; chunkBytes: number; delayMs: number }
  /** The body sends `afterBytes`, then nothing, ever (until cancelled). */
  | { kind: 'stall'; afterBytes: number }
  /** Same length, other bytes. */
  | { kind: 'wrong-bytes' }
  /** Content-Length of the whole, but the body ends cleanly after `afterBytes`. */
  | { kind: 'truncate'; afterBytes: number }
  /** The body errors after `afterBytes`, as a dropped connection. */
  | { kind: 'disconnect'; afterBytes: number };

export type Fault = FaultKind & { match?: FaultMatch; times?: number };

interface Repo {
  blobs: Map<string, Uint8Array>;
  manifests: Map<string, { bytes: Uint8Array; mediaType: string }>;
  tags: Map<string, string>;
}

const REPLACING = new Set(['status', 'unauthorized', 'connection-error', 'hang', 'respond']);
const BODY = new Set(['slow', 'stall', 'wrong-bytes', 'truncate', 'disconnect']);

export class FakeUpstream {
  readonly host: string;
  /** The registry's base URL, for RegistryUpstream's `url`. */
  readonly url: string;
  readonly requests: FakeRequest[] = [];
  private readonly repos = new Map<string, Repo>();
  private readonly faults: Array<Fault & { left: number }> = [];
  private readonly tokens = new Map<string, { scopes: Set<string>; expiresAt: number }>();
  private tokenSerial = 0;
  private readonly realm: URL | undefined;
  private readonly rate: { limit: number; remaining: number; windowSeconds: number } | undefined;

  constructor(private readonly o: FakeUpstreamOptions = {}) {
    this.host = o.host ?? 'registry.test';
    this.url = `${o.scheme ?? 'https'}://${this.host}`;
    if (o.auth?.scheme === 'bearer') this.realm = new URL(o.auth.realm ?? `https://auth.${this.host}/token`);
    if (o.rateLimit) this.rate = { windowSeconds: 21_600, ...o.rateLimit };
  }

  /** The token service's host, when bearer auth is on. */
  get authHost(): string | undefined {
    return this.realm?.host;
  }

  /** The `fetch` to inject. */
  readonly fetch: typeof fetch = (input, init) => this.handle(new Request(input, init), init?.signal ?? undefined);

  /** Requests recorded, optionally only those to `host` (and whose path contains `path`). */
  requestsTo(host: string = this.host, path?: string): FakeRequest[] {
    return this.requests.filter((r) => r.host === host && (path === undefined || r.path.includes(path)));
  }

  addBlob(repository: string, bytes: Uint8Array | string): string {
    const b = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : new Uint8Array(bytes);
    const digest = sha256(b);
    this.repo(repository).blobs.set(digest, b);
    return digest;
  }

  /** Stores a manifest by digest, and under `tag` when given. */
  addManifest(repository: string, tag: string | undefined, bytes: Uint8Array | string, mediaType: string): string {
    const b = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : new Uint8Array(bytes);
    const digest = sha256(b);
    const r = this.repo(repository);
    r.manifests.set(digest, { bytes: b, mediaType });
    if (tag !== undefined) r.tags.set(tag, digest);
    return digest;
  }

  /** An image from test/support/images.ts: its config and layers as blobs, its manifest under `tag`. */
  addImage(repository: string, tag: string | undefined, img: Image): string {
    for (const b of [img.config, ...img.layers]) this.addBlob(repository, b.bytes);
    return this.addManifest(repository, tag, img.manifest.bytes, img.manifest.mediaType);
  }

  fault(f: Fault): void {
    this.faults.push({ ...f, left: f.times ?? 1 });
  }

  private repo(name: string): Repo {
    let r = this.repos.get(name);
    if (!r) this.repos.set(name, (r = { blobs: new Map(), manifests: new Map(), tags: new Map() }));
    return r;
  }

  private now(): number {
    return this.o.clock?.now() ?? Date.now();
  }

  private take(req: FakeRequest, kinds: Set<string>): Fault | undefined {
    const i = this.faults.findIndex((f) => f.left > 0 && kinds.has(f.kind) && matches(f.match, req, this.host));
    if (i < 0) return undefined;
    const f = this.faults[i]!;
    if (--f.left === 0) this.faults.splice(i, 1);
    return f;
  }

  private async handle(request: Request, signal: AbortSignal | undefined): Promise<Response> {
    const u = new URL(request.url);
    const headers: Record<string, string> = {};
    request.headers.forEach((v, k) => (headers[k] = v));
    const req: FakeRequest = { method: request.method, url: request.url, host: u.host, path: u.pathname, headers };
    this.requests.push(req);

    const f = this.take(req, REPLACING);
    if (f?.kind === 'connection-error') throw new TypeError('fetch failed');
    if (f?.kind === 'hang') {
      return new Promise<Response>((_, reject) => signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));
    }
    if (f?.kind === 'status') return new Response(f.body ?? null, { status: f.status, headers: f.headers });
    if (f?.kind === 'respond') return f.respond(req);
    if (f?.kind === 'unauthorized') return this.challenge(req, undefined);

    let res: Response;
    if (u.host === this.host) res = this.registry(req, u);
    else if (this.realm && u.host === this.realm.host && u.pathname === this.realm.pathname) res = this.token(req, u);
    else if (this.o.blobHost && u.host === this.o.blobHost) res = this.cdn(req, u);
    else throw new TypeError('fetch failed: getaddrinfo ENOTFOUND');
    return res;
  }

  private registry(req: FakeRequest, u: URL): Response {
    if (u.pathname === '/v2/' || u.pathname === '/v2') return this.authorized(req, undefined) ?? json(200, {});
    const m = /^\/v2\/(.+?)\/(manifests|blobs|referrers)\/([^/]+)$/.exec(u.pathname) ?? /^\/v2\/(.+?)\/(tags)\/list$/.exec(u.pathname);
    if (!m) return new Response('404 page not found', { status: 404 });
    const repository = decodeURIComponent(m[1]!);
    const what = m[2]!;
    const ref = m[3] === undefined ? '' : decodeURIComponent(m[3]);
    const denied = this.authorized(req, `repository:${repository}:pull`);
    if (denied) return denied;
    if (what === 'referrers' && this.o.referrersApi === false) return new Response('404 page not found', { status: 404 });
    const repo = this.repos.get(repository);
    if (!repo) return ociError(404, 'NAME_UNKNOWN', 'repository name not known to registry', req.method);
    switch (what) {
      case 'manifests':
        return this.manifest(req, repo, ref);
      case 'blobs': {
        const bytes = repo.blobs.get(ref);
        if (!bytes) return ociError(404, 'BLOB_UNKNOWN', 'blob unknown to registry', req.method);
        if (this.o.blobHost) return new Response(null, { status: 307, headers: { location: `https://${this.o.blobHost}/blobs/${ref}?X-Amz-Signature=fake-signature` } });
        return this.content(req, bytes, { 'content-type': 'application/octet-stream', 'docker-content-digest': ref });
      }
      case 'tags':
        return this.tagList(repository, repo, u);
      default:
        return this.referrers(repo, ref, u.searchParams.get('artifactType'));
    }
  }

  private manifest(req: FakeRequest, repo: Repo, ref: string): Response {
    const digest = ref.includes(':') ? ref : repo.tags.get(ref);
    const m = digest === undefined ? undefined : repo.manifests.get(digest);
    const rate: Record<string, string> = {};
    if (this.rate) {
      if (req.method === 'GET' && this.rate.remaining > 0) this.rate.remaining--;
      else if (req.method === 'GET') return ociError(429, 'TOOMANYREQUESTS', 'You have reached your pull rate limit.', req.method, this.rateHeaders());
      Object.assign(rate, this.rateHeaders());
    }
    if (!m || digest === undefined) return ociError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', req.method, rate);
    return this.content(req, m.bytes, { 'content-type': m.mediaType, 'docker-content-digest': digest, ...rate });
  }

  private rateHeaders(): Record<string, string> {
    const r = this.rate!;
    return { 'ratelimit-limit': `${r.limit};w=${r.windowSeconds}`, 'ratelimit-remaining': `${r.remaining};w=${r.windowSeconds}` };
  }

  private tagList(repository: string, repo: Repo, u: URL): Response {
    const all = [...repo.tags.keys()].sort();
    const last = u.searchParams.get('last');
    const nParam = u.searchParams.get('n');
    const after = last === null ? all : all.filter((t) => t > last);
    const n = nParam === null ? after.length : Number(nParam);
    const page = after.slice(0, n);
    const headers: Record<string, string> = {};
    if (page.length < after.length) {
      headers.link = `</v2/${repository}/tags/list?n=${n}&last=${encodeURIComponent(page[page.length - 1]!)}>; rel="next"`;
    }
    return json(200, { name: repository, tags: page }, headers);
  }

  private referrers(repo: Repo, digest: string, artifactType: string | null): Response {
    const manifests: Array<Record<string, unknown>> = [];
    for (const [d, m] of repo.manifests) {
      const doc = JSON.parse(new TextDecoder().decode(m.bytes)) as Record<string, any>;
      if (doc.subject?.digest !== digest) continue;
      const type = doc.artifactType ?? doc.config?.mediaType;
      if (artifactType !== null && type !== artifactType) continue;
      manifests.push({ mediaType: m.mediaType, digest: d, size: m.bytes.byteLength, artifactType: type, ...(doc.annotations ? { annotations: doc.annotations } : {}) });
    }
    const headers: Record<string, string> = { 'content-type': 'application/vnd.oci.image.index.v1+json' };
    if (artifactType !== null) headers['oci-filters-applied'] = 'artifactType';
    return json(200, { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }, headers);
  }

  private cdn(req: FakeRequest, u: URL): Response {
    if (req.headers.authorization) return new Response('<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>', { status: 400 });
    const digest = /^\/blobs\/([^/]+)$/.exec(u.pathname)?.[1];
    const bytes = [...this.repos.values()].map((r) => r.blobs.get(digest ?? '')).find((b) => b !== undefined);
    if (!bytes) return new Response('<Error><Code>NoSuchKey</Code></Error>', { status: 404 });
    return this.content(req, bytes, { 'content-type': 'application/octet-stream' });
  }

  /** 200 or 206 (Range: bytes=a-b, bytes=a-) with the body faults applied. */
  private content(req: FakeRequest, bytes: Uint8Array, headers: Record<string, string>): Response {
    let status = 200;
    let part = bytes;
    const h: Record<string, string> = { ...headers, 'accept-ranges': 'bytes' };
    const range = req.headers.range && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range);
    if (req.headers.range && !range) return new Response(null, { status: 416, headers: { 'content-range': `bytes */${bytes.byteLength}` } });
    if (range && !this.take(req, new Set(['ignore-range']))) {
      const start = Number(range[1]);
      const end = range[2] === '' ? bytes.byteLength - 1 : Math.min(Number(range[2]), bytes.byteLength - 1);
      if (start >= bytes.byteLength || end < start) return new Response(null, { status: 416, headers: { 'content-range': `bytes */${bytes.byteLength}` } });
      status = 206;
      part = bytes.subarray(start, end + 1);
      h['content-range'] = `bytes ${start}-${end}/${bytes.byteLength}`;
    }
    h['content-length'] = String(part.byteLength);
    if (req.method === 'HEAD') return new Response(null, { status, headers: h });
    const fault = this.take(req, BODY);
    return new Response(this.body(part, fault), { status, headers: h });
  }

  private body(bytes: Uint8Array, fault: Fault | undefined): ReadableStream<Uint8Array> {
    const chunk = fault?.kind === 'slow' ? fault.chunkBytes : (this.o.chunkBytes ?? 16 * 1024);
    const data = fault?.kind === 'wrong-bytes' ? bytes.map((b) => b ^ 0xff) : bytes;
    const stopAt = fault?.kind === 'stall' || fault?.kind === 'truncate' || fault?.kind === 'disconnect' ? Math.min(fault.afterBytes, data.byteLength) : data.byteLength;
    const sleep = this.o.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
    let at = 0;
    return new ReadableStream<Uint8Array>(
      {
        async pull(c) {
          if (at >= stopAt) {
            if (fault?.kind === 'stall') return new Promise<void>(() => undefined);
            if (fault?.kind === 'disconnect') return c.error(new TypeError('terminated: other side closed'));
            return c.close();
          }
          if (fault?.kind === 'slow') await sleep(fault.delayMs);
          const end = Math.min(at + chunk, stopAt);
          c.enqueue(data.slice(at, end));
          at = end;
        },
      },
      { highWaterMark: 0 },
    );
  }

  /** undefined when `req` may read `scope` (undefined: any valid credentials), else the 401 to answer. */
  private authorized(req: FakeRequest, scope: string | undefined): Response | undefined {
    const auth = this.o.auth;
    if (!auth) return undefined;
    const header = req.headers.authorization ?? '';
    if (auth.scheme === 'basic') return auth.users.some((u) => header === basic(u)) ? undefined : this.challenge(req, scope);
    const t = header.startsWith('Bearer ') ? this.tokens.get(header.slice(7)) : undefined;
    if (!t) return this.challenge(req, scope, header ? 'invalid_token' : undefined);
    if (t.expiresAt <= this.now()) return this.challenge(req, scope, 'invalid_token');
    if (scope !== undefined && !t.scopes.has(scope)) return this.challenge(req, scope, 'insufficient_scope');
    return undefined;
  }

  private challenge(req: FakeRequest, scope: string | undefined, error?: string): Response {
    const auth = this.o.auth;
    const m = /^\/v2\/(.+?)\/(?:manifests|blobs|referrers|tags)\//.exec(req.path);
    scope ??= m ? `repository:${decodeURIComponent(m[1]!)}:pull` : undefined;
    let value = `Basic realm="${this.host}"`;
    if (auth?.scheme === 'bearer') {
      value = `Bearer realm="${this.realm!.href}",service="${auth.service ?? this.host}"`;
      if (scope) value += `,scope="${scope}"`;
      if (error) value += `,error="${error}"`;
    }
    return ociError(401, 'UNAUTHORIZED', 'authentication required', req.method, { 'www-authenticate': value });
  }

  /** The token service: GET realm?service=..&scope=.. with Basic credentials or none. */
  private token(req: FakeRequest, u: URL): Response {
    const auth = this.o.auth as Extract<FakeAuth, { scheme: 'bearer' }>;
    const header = req.headers.authorization;
    let user = false;
    if (header) {
      if (!(auth.users ?? []).some((x) => header === basic(x))) return json(401, { details: 'incorrect username or password' });
      user = true;
    }
    const granted = user || auth.anonymous !== false ? u.searchParams.getAll('scope').flatMap((s) => s.split(' ')) : [];
    const token = `fake-token-${++this.tokenSerial}`;
    const lifetime = auth.expiresIn === null ? 60 : (auth.expiresIn ?? 300);
    this.tokens.set(token, { scopes: new Set(granted), expiresAt: this.now() + lifetime * 1000 });
    const field = auth.tokenField ?? 'token';
    const doc: Record<string, unknown> = {};
    if (field !== 'access_token') doc.token = token;
    if (field !== 'token') doc.access_token = token;
    if (auth.expiresIn !== null) doc.expires_in = lifetime;
    doc.issued_at = new Date(this.now()).toISOString();
    return json(200, doc);
  }
}

function matches(m: FaultMatch | undefined, req: FakeRequest, registryHost: string): boolean {
  if (req.host !== (m?.host ?? registryHost)) return false;
  if (m?.method && m.method !== req.method) return false;
  if (m?.path === undefined) return true;
  return typeof m.path === 'string' ? req.path.includes(m.path) : m.path.test(req.path);
}

function basic(u: FakeUser): string {
  return `Basic ${Buffer.from(`${u.username}:${u.password}`).toString('base64')}`;
}

function json(status: number, doc: unknown, headers: Record<string, string> = {}): Response {
  const body = JSON.stringify(doc);
  return new Response(body, { status, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers } });
}

function ociError(status: number, code: string, message: string, method: string, headers: Record<string, string> = {}): Response {
  if (method === 'HEAD') return new Response(null, { status, headers });
  return json(status, { errors: [{ code, message }] }, headers);
}

/** A `sleep` that returns at once and records what it was asked to wait, for backoff assertions without waiting. */
export function recordingSleep(): { sleep: (ms: number) => Promise<void>; waits: number[] } {
  const waits: number[] = [];
  return { waits, sleep: async (ms: number) => void waits.push(ms) };
}

/** Narrows an upstream answer to its `ok` case, failing the test with the answer otherwise. */
export function expectOk<T>(r: UpstreamResult<T>): T {
  if (r.kind !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(r)}`);
  return r;
}

/** Reads a body to its end, or to its error: what arrived, and the error if it broke off. */
export async function readBody(s: ReadableStream<Uint8Array>): Promise<{ bytes: Buffer; error?: unknown }> {
  const chunks: Uint8Array[] = [];
  const reader = s.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { bytes: Buffer.concat(chunks) };
      chunks.push(value);
    }
  } catch (error) {
    return { bytes: Buffer.concat(chunks), error };
  }
}
