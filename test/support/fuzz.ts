import type { BlobStore, ListedObject } from '../../src/ports/blob-store.js';
import type { ItemKey, Json, MetaIndex } from '../../src/ports/meta-index.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { sha256 } from './images.js';

/**
 * The pieces of the HTTP fuzz test (test/http/fuzz.test.ts): a seeded generator of hostile
 * requests, and a journal that tells whether a request changed anything stored.
 */

/** mulberry32: small, fast and seedable, so a failing run is replayed from its seed. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  int(below: number): number {
    return Math.floor(this.next() * below);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** Characters that break quoting, parsing or decoding somewhere: quotes, separators, controls, non-ASCII. */
const HOSTILE = ['"', "'", '\\', ',', ';', '=', ':', ' ', '\t', '\u0000', '\u0001', '\u001f', '\u007f', '\r\n', '%', '%zz', '%00', '%0d%0a', '%22', '+', '&', '#', '?', '/', '..', 'é', '\u{1F600}', '\ud800', '\u00ff'];
/** Keys that mean something to a JavaScript object. */
export const PROTO_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf'];

/** A random string of `n` pieces from printable ASCII and the hostile characters. */
export function text(rng: Rng, n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += rng.chance(0.2) ? rng.pick(HOSTILE) : String.fromCharCode(33 + rng.int(94));
  return out;
}

/** What the fuzzer knows of the registry's contents, to aim requests at real things. */
export interface Known {
  names: string[];
  tags: string[];
  digests: string[];
  manifests: Uint8Array[];
  uploads: string[];
}

export interface FuzzRequest {
  method: string;
  /** The request target as a client would send it: not resolved, possibly malformed. */
  target: string;
  headers: Record<string, string>;
  body?: Uint8Array;
}

const METHODS = ['GET', 'GET', 'HEAD', 'PUT', 'PUT', 'POST', 'POST', 'PATCH', 'PATCH', 'DELETE', 'OPTIONS', 'FOO', 'PROPFIND'];
const BAD_NAMES = ['A', 'a//b', '_a', 'a-', '..', '.', 'a/..', 'é', 'a%2fb', '%2e%2e', 'x'.repeat(300), 'a'.repeat(64) + '/' + 'b'.repeat(200), 'a b', 'a\u0000b'];
const BAD_REFERENCES = [
  'sha256:abc',
  `sha256:${'A'.repeat(64)}`,
  `sha512:${'0'.repeat(64)}`,
  `md5:${'0'.repeat(32)}`,
  'x'.repeat(200),
  '%zz',
  '%',
  '..',
  '.INVALID',
  '-tag',
  'sha256%3A',
  `sha256:${'0'.repeat(64)}%00`,
  '',
];
const CONTENT_TYPES = [
  MediaType.OciManifest,
  MediaType.OciIndex,
  MediaType.DockerManifest,
  MediaType.DockerManifestList,
  MediaType.DockerSchema1,
  'application/json',
  'application/octet-stream',
  'text/plain',
  'application/vnd.oci.image.manifest.v1+json; charset=utf-8',
  ';;;',
  'x/'.repeat(2000),
];
const RANGES = ['bytes=0-0', 'bytes=0-', 'bytes=5-2', 'bytes=-3', 'bytes=-0', 'bytes=999999999-', 'bytes=0-1,3-4', 'bytes=', 'items=0-1', 'bytes=99999999999999999-'];
const CONTENT_RANGES = ['0-0', '0-9', '5-2', '0-999999999999999', 'bytes 0-9/10', 'bytes=0-9', '-1-5', '0-', 'x', '10-19'];
const MUTATION_CHARS = ['%', '%2', '%zz', '/', '//', '.', '..', '\\', '?', '#', '&', '=', ';', ':', '@', 'é', '\u{1F600}', '%00', '%2e', '%2f', 'A', '~', ' ', '+'];

/**
 * Half the requests are near misses of real operations on known content (one thing wrong: a
 * mutated manifest, a wrong digest or range on a live upload, a dot-segment in a push), half are
 * random requests aimed at the routes and mutated at random.
 */
export function fuzzRequest(rng: Rng, known: Known): FuzzRequest {
  return rng.chance(0.5) ? nearMiss(rng, known) : randomRequest(rng, known);
}

function nearMiss(rng: Rng, known: Known): FuzzRequest {
  const name = known.names[0]!;
  const upload = known.uploads.length > 0 ? known.uploads[known.uploads.length - 1]! : crypto.randomUUID();
  const digest = () => (rng.chance(0.5) ? rng.pick(known.digests) : sha256(rng.bytes(8)));
  const manifestType = () => rng.pick([MediaType.OciManifest, MediaType.OciIndex, MediaType.DockerManifest, 'application/json']);
  const headers: Record<string, string> = {};
  const r = rng.int(9);
  if (r === 0 || r === 1) {
    headers['Content-Type'] = manifestType();
    const ref = rng.pick([...known.tags, ...known.digests, sha256(rng.bytes(4))]);
    return { method: 'PUT', target: `/v2/${name}/manifests/${ref}`, headers, body: rng.chance(0.3) ? deepJson(rng) : bodyFor(rng, known, true) };
  }
  if (r === 2) {
    if (rng.chance(0.5)) headers['Content-Range'] = rng.pick(CONTENT_RANGES);
    const query = rng.chance(0.8) ? `?digest=${digest()}` : '';
    return { method: 'PUT', target: `/v2/${name}/blobs/uploads/${upload}${query}`, headers, body: rng.chance(0.5) ? rng.bytes(rng.int(64)) : undefined };
  }
  if (r === 3) {
    if (rng.chance(0.7)) headers['Content-Range'] = rng.pick(CONTENT_RANGES);
    if (rng.chance(0.3)) headers['Content-Length'] = rng.pick(['0', '5', '1000000000000000', 'x']);
    return { method: 'PATCH', target: `/v2/${name}/blobs/uploads/${upload}`, headers, body: rng.bytes(rng.int(32)) };
  }
  if (r === 4) {
    return { method: 'POST', target: `/v2/${name}/blobs/uploads/?digest=${digest()}`, headers, body: rng.bytes(rng.int(64)) };
  }
  if (r === 5) {
    headers.Range = rng.pick(RANGES);
    return { method: rng.pick(['GET', 'HEAD']), target: `/v2/${name}/blobs/${rng.pick(known.digests)}`, headers };
  }
  if (r === 6) {
    const from = rng.pick([...known.names, ...BAD_NAMES]);
    return { method: 'POST', target: `/v2/new/repo/blobs/uploads/?mount=${digest()}&from=${from}`, headers };
  }
  if (r === 7) {
    const dots = rng.pick(['/../', '/%2e%2e/', '/.%2e/', '/./', '/%2E/']);
    headers['Content-Type'] = MediaType.OciManifest;
    return { method: rng.pick(['PUT', 'DELETE', 'POST']), target: `/v2/other${dots}${name}/manifests/v1`, headers, body: rng.pick(known.manifests) };
  }
  return { method: 'GET', target: `/v2/${name}/referrers/${rng.pick(known.digests)}?artifactType=${rng.pick(['application/vnd.example.sig', 'x', '%zz'])}`, headers };
}

function randomRequest(rng: Rng, known: Known): FuzzRequest {
  const name = rng.chance(0.75) ? rng.pick(known.names) : rng.pick(BAD_NAMES);
  const reference = (): string => {
    const r = rng.int(10);
    if (r < 3) return rng.pick(known.tags);
    if (r < 6) return rng.pick(known.digests);
    if (r < 7) return sha256(rng.bytes(8));
    return rng.pick(BAD_REFERENCES);
  };
  const digest = () => (rng.chance(0.7) ? rng.pick(known.digests) : rng.chance(0.5) ? sha256(rng.bytes(8)) : rng.pick(BAD_REFERENCES));
  const upload = () => (known.uploads.length > 0 && rng.chance(0.7) ? rng.pick(known.uploads) : rng.pick([crypto.randomUUID(), '..', 'x'.repeat(100), '%zz']));
  const routes = [
    () => `/v2/${name}/manifests/${reference()}`,
    () => `/v2/${name}/manifests/${reference()}`,
    () => `/v2/${name}/blobs/${digest()}`,
    () => `/v2/${name}/blobs/${digest()}`,
    () => `/v2/${name}/blobs/uploads/`,
    () => `/v2/${name}/blobs/uploads/${upload()}`,
    () => `/v2/${name}/blobs/uploads/${upload()}`,
    () => `/v2/${name}/tags/list`,
    () => `/v2/${name}/referrers/${digest()}`,
    () => rng.pick(['/v2/', '/v2', '/v2/_catalog', '/', '/v2/_catalog/x', '/v3/', '/v2/blobs/uploads/']),
  ];
  let path = rng.pick(routes)();
  if (rng.chance(0.3)) path = mutate(rng, path);
  const query = rng.chance(0.5) ? queryFor(rng, known, digest) : '';

  const headers: Record<string, string> = {};
  if (rng.chance(0.5)) headers['Content-Type'] = rng.pick(CONTENT_TYPES);
  if (rng.chance(0.2)) headers.Range = rng.pick(RANGES);
  if (rng.chance(0.2)) headers['Content-Range'] = rng.pick(CONTENT_RANGES);
  if (rng.chance(0.1)) headers.Accept = rng.pick([MediaType.OciManifest, '*/*', 'x'.repeat(5000), '']);
  if (rng.chance(0.1)) headers.Authorization = rng.pick(['Bearer x', 'Basic !!!', 'x'.repeat(1000)]);

  const method = path.includes('/manifests/') && rng.chance(0.3) ? 'PUT' : rng.pick(METHODS);
  const body = method === 'GET' || method === 'HEAD' ? undefined : bodyFor(rng, known);
  return { method, target: path + query, headers, body };
}

function queryFor(rng: Rng, known: Known, digest: () => string): string {
  const params: string[] = [];
  for (let i = 0, n = 1 + rng.int(3); i < n; i++) {
    params.push(
      rng.pick([
        () => `digest=${encodeURIComponent(digest())}`,
        () => `digest=${digest()}`,
        () => `mount=${digest()}&from=${rng.pick([...known.names, ...BAD_NAMES])}`,
        () => `n=${rng.pick(['0', '1', '-1', 'x', '99999999999', ''])}`,
        () => `last=${rng.pick([...known.tags, 'x'.repeat(500), '%zz'])}`,
        () => `artifactType=${rng.pick(['application/vnd.x', 'bad', 'x'.repeat(500), '%zz'])}`,
        () => `ns=${rng.pick(['docker.io', 'x', '..', ''])}`,
        () => rng.pick(['%zz=%', '=', '&&', 'digest', 'digest=&digest=x']),
      ])(),
    );
  }
  return `?${params.join('&')}`;
}

function mutate(rng: Rng, path: string): string {
  let out = path;
  for (let i = 0, n = 1 + rng.int(3); i < n; i++) {
    const at = 1 + rng.int(Math.max(1, out.length - 1));
    const op = rng.int(3);
    if (op === 0) out = out.slice(0, at) + rng.pick(MUTATION_CHARS) + out.slice(at);
    else if (op === 1) out = out.slice(0, at) + out.slice(at + 1 + rng.int(4));
    else out = out.slice(0, at) + rng.pick(MUTATION_CHARS) + out.slice(at + 1);
  }
  return out;
}

function bodyFor(rng: Rng, known: Known, manifest = false): Uint8Array | undefined {
  const r = manifest ? 5 : rng.int(10);
  if (r === 0) return undefined;
  if (r === 1) return new Uint8Array(0);
  if (r === 2) return rng.bytes(rng.int(2000));
  if (r === 3) return rng.pick(known.manifests);
  if (r === 4) return deepJson(rng);
  return new TextEncoder().encode(JSON.stringify(mutateJson(rng, JSON.parse(new TextDecoder().decode(rng.pick(known.manifests))))));
}

function deepJson(rng: Rng): Uint8Array {
  const depth = rng.pick([63, 64, 65, 1000, 10_000]);
  const open = rng.pick(['[', '{"a":']);
  const close = open === '[' ? ']' : '}';
  const deep = `${open.repeat(depth)}1${close.repeat(depth)}`;
  const key = rng.pick(['schemaVersion', 'mediaType', 'config', 'layers', 'annotations', 'x']);
  return new TextEncoder().encode(key === 'schemaVersion' ? `{"schemaVersion":${deep}}` : `{"schemaVersion":2,"${key}":${deep}}`);
}

/** A manifest with one to three values replaced by something of another kind. */
function mutateJson(rng: Rng, doc: unknown): unknown {
  const replacements: Array<() => unknown> = [
    () => null,
    () => -1,
    () => 1e308,
    () => 2 ** 53 + 1,
    () => 'x',
    () => 'x'.repeat(rng.int(100_000)),
    () => [],
    () => ({}),
    () => true,
    () => sha256(rng.bytes(4)),
    () => 'sha256:zz',
    () => Array.from({ length: rng.pick([2, 1001]) }, () => ({ mediaType: MediaType.OciManifest, digest: sha256('x'), size: 1 })),
    () => ({ a: { b: { c: [1, [2, [3]]] } } }),
    () => ['file:///etc/passwd', 'ftp://x'],
  ];
  for (let i = 0, n = 1 + rng.int(3); i < n; i++) doc = replaceRandom(rng, doc, rng.pick(replacements));
  return doc;
}

function replaceRandom(rng: Rng, node: unknown, make: () => unknown): unknown {
  if (node === null || typeof node !== 'object' || rng.chance(0.25)) return make();
  if (Array.isArray(node)) {
    if (node.length === 0) return make();
    const copy = [...node];
    const i = rng.int(copy.length);
    copy[i] = replaceRandom(rng, copy[i], make);
    return copy;
  }
  const entries = Object.entries(node as Record<string, unknown>);
  if (entries.length === 0) return make();
  const [k, v] = rng.pick(entries);
  return { ...(node as Record<string, unknown>), [rng.chance(0.1) ? `${k}_` : k]: replaceRandom(rng, v, make) };
}

/**
 * A refused write that got as far as holding its digest's content key (core/registry/content.ts)
 * leaves the digest's collection state, a GC candidate in its bucket and the note of when it was
 * last unreferenced, which the next collecting run settles: bookkeeping, not content. References
 * must still be as they were.
 */
const GC_BOOKKEEPING = /^(content|gc#candidates#\d+|gc#buckets)$/;
/** The note of when a digest's last reference went, beside its references (bookkeeping too). */
const UNREFERENCED_SK = '~unreferenced';

/**
 * Records, per request, what stored state looked like before the request first wrote it: the
 * value of each index item it wrote (any write method), and the store's listing. `changes()`
 * then says what differs now, which for a refused request must be nothing.
 */
export class Journal {
  private before = new Map<string, Json | undefined>();
  private listing: ListedObject[] = [];

  constructor(
    readonly index: MetaIndex,
    readonly store: BlobStore,
    /** Partitions whose items are not compared (coordination state, not content). */
    private readonly ignored: RegExp = /$^/,
  ) {}

  /** The index wrapped so that every write is journalled first. */
  journalled(): MetaIndex {
    const journal = this;
    const inner = this.index;
    const keyOf = (name: string, args: unknown[]): ItemKey | undefined => {
      if (['put', 'putIfAbsent', 'compareAndSet', 'delete', 'add', 'acquireLease'].includes(name)) return args[0] as ItemKey;
      if (['renewLease', 'updateLease', 'releaseLease'].includes(name)) return (args[0] as { key: ItemKey }).key;
      return undefined;
    };
    return new Proxy(inner, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        return async (...args: unknown[]) => {
          const key = keyOf(String(prop), args);
          if (key) await journal.note(key);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  }

  async start(): Promise<void> {
    this.before.clear();
    this.listing = await this.list();
  }

  async changes(): Promise<string[]> {
    const out: string[] = [];
    for (const [id, was] of this.before) {
      const [pk, sk] = JSON.parse(id) as [string, string];
      const now = (await this.index.get({ pk, sk }))?.value;
      if (JSON.stringify(now) !== JSON.stringify(was)) out.push(`index ${pk} / ${sk.slice(0, 80)}: ${JSON.stringify(was)?.slice(0, 80)} -> ${JSON.stringify(now)?.slice(0, 80)}`);
    }
    const now = await this.list();
    const describe = (objects: ListedObject[]) => objects.map((o) => `${o.key} ${o.size}`);
    const was = new Set(describe(this.listing));
    const is = new Set(describe(now));
    for (const o of is) if (!was.has(o)) out.push(`store: new ${o}`);
    for (const o of was) if (!is.has(o)) out.push(`store: gone ${o}`);
    return out;
  }

  private async note(key: ItemKey): Promise<void> {
    const id = JSON.stringify([key.pk, key.sk]);
    if (this.before.has(id) || this.ignored.test(key.pk) || GC_BOOKKEEPING.test(key.pk) || key.sk === UNREFERENCED_SK) return;
    this.before.set(id, undefined);
    this.before.set(id, (await this.index.get(key))?.value);
  }

  private async list(): Promise<ListedObject[]> {
    const all: ListedObject[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.store.list('', { after, limit: 1000 });
      all.push(...page.keys);
      if (!page.next) return all;
      after = page.next;
    }
  }
}
