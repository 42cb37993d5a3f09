import { describe, expect, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { Auth } from '../../src/core/auth/auth.js';
import type { AuthConfig } from '../../src/core/auth/config.js';
import type { GatePolicy } from '../../src/core/gate/gate.js';
import { compileGlob } from '../../src/core/glob.js';
import { createRegistry } from '../../src/core/registry/registry.js';
import { createApp } from '../../src/http/app.js';
import { authConfig, basic, bearer, CLIENT_HEADER, expectChallenge, pushImageAs, rule, testConnection, token, user } from '../support/auth.js';
import { testApp, TestClock } from '../support/app.js';
import { generateSigner } from '../support/cosign-sign.js';
import { artifact, image } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';
import { expectOciError } from '../support/oci-errors.js';

/**
 * What authorisation protects beyond single routes: the catalog, referrers, cross-repository
 * mounts, shared caches (Cache-Control), presigned redirects, the mirror's cold fills and other
 * upstream requests for anonymous callers, and the paths that could name one repository as
 * another. Catalog paging under the rules: auth-catalog.test.ts.
 */

const USERS = await Promise.all([user('reader', 'reader-pw'), user('writer', 'writer-pw'), user('admin', 'admin-pw')]);
const READER = basic('reader', 'reader-pw');
const WRITER = basic('writer', 'writer-pw');
const ADMIN = basic('admin', 'admin-pw');

/** public/** for everyone; team/** read by reader, written by writer; other/** only admin; registry.test/library/pub/** public. */
function config(overrides: Partial<AuthConfig> = {}): AuthConfig {
  return authConfig({
    users: USERS,
    rules: [
      // anonymous alone: signed-in callers may do what anonymous ones may.
      rule(['public/**', 'registry.test/library/pub'], { anonymous: true }, ['pull']),
      rule(['team/**'], { users: ['reader', 'writer'] }, ['pull']),
      rule(['team/**'], { users: ['writer'] }, ['push']),
      rule(['**'], { users: ['admin'] }, ['pull', 'push', 'delete']),
    ],
    ...overrides,
  });
}

const auth = Auth.create(config());

function app() {
  return testApp({}, { auth, connection: testConnection });
}

describe('catalog', () => {
  async function seeded() {
    const t = app();
    for (const name of ['other/private', 'public/lib', 'team/app', 'team/base']) await pushImageAs(t.request, name, image(), 'latest', ADMIN);
    return t;
  }
  const list = async (res: Response) => {
    expect(res.status, await res.clone().text()).toBe(200);
    return ((await res.json()) as { repositories: string[] }).repositories;
  };

  it('lists to each caller only the repositories it may pull', async () => {
    const t = await seeded();
    expect(await list(await t.request('/v2/_catalog'))).toEqual(['public/lib']);
    expect(await list(await t.request('/v2/_catalog', { headers: READER }))).toEqual(['public/lib', 'team/app', 'team/base']);
    expect(await list(await t.request('/v2/_catalog', { headers: ADMIN }))).toEqual(['other/private', 'public/lib', 'team/app', 'team/base']);
  });

  it('with a token: only with registry:catalog:*, and still filtered by the rules', async () => {
    const t = await seeded();
    const without = await t.request('/v2/_catalog', { headers: bearer(await token(t.request, ['repository:team/app:pull'], READER)) });
    await expectOciError(without, { status: 401, code: 'UNAUTHORIZED' });
    expectChallenge(without, { scope: 'registry:catalog:*', error: 'insufficient_scope' });
    const withScope = bearer(await token(t.request, ['registry:catalog:*'], READER));
    expect(await list(await t.request('/v2/_catalog', { headers: withScope }))).toEqual(['public/lib', 'team/app', 'team/base']);
  });

  it('asks an anonymous caller to sign in when no rule lets anonymous callers pull anything', async () => {
    const t = testApp({}, { auth: Auth.create(config({ rules: [rule(['**'], { users: ['admin'] }, ['pull', 'push'])] })) });
    await pushImageAs(t.request, 'team/app', image(), 'latest', ADMIN);
    const res = await t.request('/v2/_catalog');
    await expectOciError(res, { status: 401, code: 'UNAUTHORIZED' });
    expectChallenge(res, { scope: 'registry:catalog:*' });
    expect(await list(await t.request('/v2/_catalog', { headers: ADMIN }))).toEqual(['team/app']);
  });
});

describe('referrers', () => {
  it('need pull on the repository: no caller without it sees the referrer list', async () => {
    const t = app();
    const img = image();
    await pushImageAs(t.request, 'other/private', img, 'latest', ADMIN);
    const sig = artifact(img.manifest, 'application/vnd.example.sig');
    await pushImageAs(t.request, 'other/private', sig, sig.manifest.digest, ADMIN);
    const path = `/v2/other/private/referrers/${img.manifest.digest}`;
    const anonymous = await t.request(path);
    await expectOciError(anonymous, { status: 401, code: 'UNAUTHORIZED' });
    expectChallenge(anonymous, { scope: 'repository:other/private:pull' });
    await expectOciError(await t.request(path, { headers: READER }), { status: 403, code: 'DENIED' });
    const listed = await t.request(path, { headers: ADMIN });
    expect(listed.status).toBe(200);
    expect(((await listed.json()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest)).toEqual([sig.manifest.digest]);
  });
});

describe('cross-repository mount', () => {
  async function withBlob(source: string) {
    const t = app();
    const img = image();
    await pushImageAs(t.request, source, img, 'latest', ADMIN);
    return { t, digest: img.layers[0]!.digest };
  }
  const mount = (t: ReturnType<typeof app>, digest: string, from: string) =>
    t.request(`/v2/team/app/blobs/uploads/?mount=${digest}&from=${from}`, { method: 'POST', headers: { ...WRITER, 'Content-Length': '0' } });

  it('mounts with push on the target and pull on the source', async () => {
    const { t, digest } = await withBlob('team/base');
    const res = await mount(t, digest, 'team/base');
    expect(res.status).toBe(201);
    expect(res.headers.get('docker-content-digest')).toBe(digest);
    expect(res.headers.get('location')).toBe(`/v2/team/app/blobs/${digest}`);
    expect((await t.request(`/v2/team/app/blobs/${digest}`, { method: 'HEAD', headers: WRITER })).status).toBe(200);
  });

  it('from a repository the caller may not pull: a 202 upload session, as for a source without the blob, and the blob stays hidden', async () => {
    const { t, digest } = await withBlob('other/private');
    const refused = await mount(t, digest, 'other/private');
    const absent = await mount(t, 'sha256:' + 'a'.repeat(64), 'team/base');
    for (const res of [refused, absent]) {
      expect(res.status).toBe(202);
      expect(res.headers.get('location')).toMatch(/^\/v2\/team\/app\/blobs\/uploads\/[^/]+$/);
      expect(res.headers.get('docker-content-digest')).toBeNull();
    }
    // The two answers carry the same headers (nothing tells a refused source from an empty one).
    const names = (res: Response) => [...res.headers.keys()].filter((k) => k !== 'location' && k !== 'docker-upload-uuid').sort();
    expect(names(refused)).toEqual(names(absent));
    await expectOciError(await t.request(`/v2/team/app/blobs/${digest}`, { method: 'HEAD', headers: WRITER }), { status: 404, code: 'BLOB_UNKNOWN', head: true });
    await expectOciError(await t.request(`/v2/team/app/blobs/${digest}`, { headers: ADMIN }), { status: 404, code: 'BLOB_UNKNOWN' });
  });

  it('needs push on the target whatever the source allows', async () => {
    const { t, digest } = await withBlob('team/base');
    const res = await t.request(`/v2/team/app/blobs/uploads/?mount=${digest}&from=team/base`, { method: 'POST', headers: { ...READER, 'Content-Length': '0' } });
    await expectOciError(res, { status: 403, code: 'DENIED' });
    await expectOciError(await t.request(`/v2/team/app/blobs/${digest}`, { headers: ADMIN }), { status: 404, code: 'BLOB_UNKNOWN' });
  });
});

describe('Cache-Control of blobs', () => {
  it('is public only where anonymous callers may pull, private elsewhere', async () => {
    const t = app();
    const pub = image();
    const priv = image();
    await pushImageAs(t.request, 'public/lib', pub, 'latest', ADMIN);
    await pushImageAs(t.request, 'team/app', priv, 'latest', ADMIN);
    for (const method of ['GET', 'HEAD']) {
      const open = await t.request(`/v2/public/lib/blobs/${pub.layers[0]!.digest}`, { method, headers: READER });
      expect(open.status).toBe(200);
      expect(open.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      const closed = await t.request(`/v2/team/app/blobs/${priv.layers[0]!.digest}`, { method, headers: READER });
      expect(closed.status).toBe(200);
      expect(closed.headers.get('cache-control')).toBe('private, max-age=31536000, immutable');
    }
  });

  it('the same on a mirrored repository', async () => {
    const m = mirrorTest({ auth, connection: testConnection });
    const pub = image();
    const other = image();
    m.up.addImage('library/pub', 'latest', pub);
    m.up.addImage('library/other', 'latest', other);
    const open = await m.request(`/v2/up/library/pub/blobs/${pub.layers[0]!.digest}`);
    expect(open.status).toBe(200);
    expect(open.headers.get('cache-control')).toMatch(/^public, /);
    const closed = await m.request(`/v2/up/library/other/blobs/${other.layers[0]!.digest}`, { headers: ADMIN });
    expect(closed.status).toBe(200);
    expect(closed.headers.get('cache-control')).toMatch(/^private, /);
  });
});

describe('presigned redirects', () => {
  class PresigningStore extends MemoryBlobStore {
    readonly signed: string[] = [];
    async presignGet(key: string, expiresInSeconds: number): Promise<string> {
      this.signed.push(key);
      return `https://store.test/${key}?expires=${expiresInSeconds}&sig=secret`;
    }
  }

  it('are made only after authorisation', async () => {
    const clock = new TestClock();
    const store = new PresigningStore(clock);
    const registry = createRegistry({ store, index: new MemoryMetaIndex(clock), hash: nodeHash, clock, options: { redirectSeconds: 60 } });
    const a = createApp({ registry, auth, connection: testConnection });
    const request = (path: string, init?: RequestInit) => a.request(path, init);
    const img = image();
    await pushImageAs(request, 'team/app', img, 'latest', ADMIN);
    const path = `/v2/team/app/blobs/${img.layers[0]!.digest}`;
    const signedBefore = store.signed.length;
    for (const headers of [{}, basic('reader', 'wrong'), basic('nobody', 'x')]) {
      const res = await request(path, { headers });
      await expectOciError(res, { status: 401, code: 'UNAUTHORIZED' });
      expect(res.headers.get('location')).toBeNull();
    }
    const otherPath = `/v2/other/private/blobs/${img.layers[0]!.digest}`;
    await pushImageAs(request, 'other/private', img, 'latest', ADMIN);
    const denied = await request(otherPath, { headers: READER });
    await expectOciError(denied, { status: 403, code: 'DENIED' });
    expect(denied.headers.get('location')).toBeNull();
    expect(store.signed.length, 'no URL was presigned for a refused request').toBe(signedBefore);

    const allowed = await request(path, { headers: READER });
    expect(allowed.status).toBe(307);
    expect(allowed.headers.get('location')).toMatch(/^https:\/\/store\.test\/.+\?expires=60&sig=secret$/);
    expect(store.signed.length).toBe(signedBefore + 1);
  });
});

describe('cold fills of anonymous callers', () => {
  it('are limited per client address (429 with Retry-After) while cached content still flows', async () => {
    let now = 1_700_000_000_000;
    const limited = Auth.create(config({ anonymousFills: { limit: 2, windowMs: 60_000 } }), () => now);
    const m = mirrorTest({ auth: limited, connection: testConnection });
    const img = image({ layers: [100, 200, 300, 400] });
    m.up.addImage('library/pub', 'latest', img);
    const get = (path: string, client = '198.51.100.7', headers: Record<string, string> = {}) => m.request(path, { headers: { [CLIENT_HEADER]: client, ...headers } });
    const blob = (i: number) => `/v2/up/library/pub/blobs/${img.layers[i]!.digest}`;

    expect((await get('/v2/up/library/pub/manifests/latest')).status).toBe(200); // fill 1
    const first = await get(blob(0)); // fill 2
    expect(first.status).toBe(200);
    expect(Buffer.from(await first.arrayBuffer()).equals(img.layers[0]!.bytes)).toBe(true);

    const refused = await get(blob(1));
    await expectOciError(refused, { status: 429, code: 'TOOMANYREQUESTS' });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(refused.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    expectChallenge(refused, { scope: 'repository:up/library/pub:pull' });
    expect(m.blobGets(img.layers[1]!.digest)).toEqual([]);

    // What is cached is served to the same address.
    expect((await get('/v2/up/library/pub/manifests/latest')).status).toBe(200);
    const again = await get(blob(0));
    expect(again.status).toBe(200);
    expect(Buffer.from(await again.arrayBuffer()).equals(img.layers[0]!.bytes)).toBe(true);
    // Another address, and a signed-in caller at the same address, are not limited.
    expect((await get(blob(1), '198.51.100.8')).status).toBe(200);
    expect((await get(blob(2), '198.51.100.7', READER)).status).toBe(200);
    // The window passes.
    await expectOciError(await get(blob(3)), { status: 429, code: 'TOOMANYREQUESTS' });
    now += 60_001;
    const later = await get(blob(3));
    expect(later.status).toBe(200);
    expect(Buffer.from(await later.arrayBuffer()).equals(img.layers[3]!.bytes)).toBe(true);
  });
});

describe('upstream requests of anonymous callers', () => {
  // Not only blob fills and manifests: every listing or check the mirror would ask the upstream
  // for counts against anonymousFills. With a limit of 0, an anonymous caller makes none.
  it('with anonymousFills.limit 0: a HEAD of an uncached blob, tags/list and referrers are 401 (sign in to fetch) and ask the upstream nothing', async () => {
    const m = mirrorTest({ auth: Auth.create(config({ anonymousFills: { limit: 0, windowMs: 60_000 } })), connection: testConnection });
    const img = image({ layers: [100] });
    m.up.addImage('library/pub', 'latest', img);
    const sig = artifact(img.manifest, 'application/vnd.example.sig');
    m.up.addImage('library/pub', undefined, sig);
    const paths: Array<[string, string]> = [
      ['HEAD', `/v2/up/library/pub/blobs/${img.layers[0]!.digest}`],
      ['GET', '/v2/up/library/pub/tags/list'],
      ['GET', `/v2/up/library/pub/referrers/${img.manifest.digest}`],
      ['GET', `/v2/up/library/pub/blobs/${img.config.digest}`],
      ['GET', '/v2/up/library/pub/manifests/latest'],
    ];
    for (const [method, path] of paths) {
      const res = await m.request(path, { method });
      await expectOciError(res, { status: 401, code: 'UNAUTHORIZED', head: method === 'HEAD' });
      expectChallenge(res, { scope: 'repository:up/library/pub:pull' });
    }
    expect(m.up.requests, 'no upstream request for an anonymous caller').toEqual([]);
    // A signed-in caller is not limited; once it has filled the caches, anonymous callers read them.
    for (const [method, path] of paths.slice(0, 3)) expect((await m.request(path, { method, headers: READER })).status, path).toBe(200);
    const asked = m.up.requests.length;
    expect(asked).toBeGreaterThan(0);
    for (const [method, path] of paths.slice(0, 3)) expect((await m.request(path, { method })).status, path).toBe(200);
    expect(m.up.requests.length, 'cached answers ask the upstream nothing').toBe(asked);
  });

  it("the signature gate's upstream reads for an anonymous caller count too (a .sig not cached is not fetched with limit 0)", async () => {
    const signer = await generateSigner('ecdsa-p256');
    const policy: GatePolicy = {
      name: 'signed',
      repositories: [compileGlob('registry.test/library/pub')],
      mode: 'enforce',
      keys: [{ label: 'k', pem: signer.pem }],
      requireTransparencyLog: false,
      children: true,
      verdictTtlMs: 60_000,
    };
    const m = mirrorTest({ auth: Auth.create(config({ anonymousFills: { limit: 0, windowMs: 60_000 } })), connection: testConnection, gate: { policies: [policy] } });
    const img = image({ layers: [100] });
    m.up.addImage('library/pub', 'latest', img);
    // A reader caches the manifest by digest without its gate ever being met (no signature upstream).
    expect((await m.request(`/v2/up/library/pub/manifests/latest`, { headers: READER })).status).toBe(403);
    const asked = m.up.requests.length;
    // Past the refusal's cache, by digest (cached for good): only the gate would ask the upstream.
    m.clock.advance(31_000);
    const res = await m.request(`/v2/up/library/pub/manifests/${img.manifest.digest}`);
    await expectOciError(res, { status: 401, code: 'UNAUTHORIZED' });
    expect(m.up.requests.length, 'the anonymous caller made the gate ask the upstream nothing').toBe(asked);
  });

  it('a cold blob GET counts once, with the HEAD that asks the upstream its size first', async () => {
    const m = mirrorTest({ auth: Auth.create(config({ anonymousFills: { limit: 1, windowMs: 60_000 } })), connection: testConnection });
    const img = image({ layers: [100, 200] });
    m.up.addImage('library/pub', 'latest', img);
    // No manifest read first, so no size vouched for: the fill asks the upstream with a HEAD.
    const first = await m.request(`/v2/up/library/pub/blobs/${img.layers[0]!.digest}`);
    expect(first.status).toBe(200);
    expect(Buffer.from(await first.arrayBuffer()).equals(img.layers[0]!.bytes)).toBe(true);
    expect(m.up.requestsTo(m.up.host, img.layers[0]!.digest).map((r) => r.method)).toContain('HEAD');
    await expectOciError(await m.request(`/v2/up/library/pub/blobs/${img.layers[1]!.digest}`), { status: 429, code: 'TOOMANYREQUESTS' });
  });
});

describe('paths that could name one repository as another', () => {
  async function seeded() {
    const t = app();
    const img = image();
    await pushImageAs(t.request, 'other/private', img, 'latest', ADMIN);
    await pushImageAs(t.request, 'team/app', img, 'latest', ADMIN);
    return { t, img };
  }

  it('dot-segments sent by the client are refused before authorisation (404 NAME_INVALID)', async () => {
    const { t } = await seeded();
    for (const target of ['/v2/team/../other/private/manifests/latest', '/v2/team/%2e%2e/other/private/manifests/latest']) {
      const resolved = new URL(target, 'http://outpost').pathname;
      const res = await t.app.request(resolved, { headers: READER }, { incoming: { url: target } });
      await expectOciError(res, { status: 404, code: 'NAME_INVALID' });
    }
  });

  it('a path resolved by the URL parser is judged by the repository it resolves to', async () => {
    const { t } = await seeded();
    await expectOciError(await t.request('/v2/team/../other/private/manifests/latest', { headers: READER }), { status: 403, code: 'DENIED', message: 'other/private' });
  });

  it('percent-encoded names are judged as decoded, or refused as names', async () => {
    const { t } = await seeded();
    await expectOciError(await t.request('/v2/%6fther/private/manifests/latest', { headers: READER }), { status: 403, code: 'DENIED', message: 'other/private' });
    await expectOciError(await t.request('/v2/other%2Fprivate/manifests/latest', { headers: READER }), { status: 400, code: 'NAME_INVALID' });
    await expectOciError(await t.request('/v2/team%2F..%2Fother/private/manifests/latest', { headers: READER }), { status: 400, code: 'NAME_INVALID' });
  });

  it('a mirrored repository is judged by its qualified name however it is reached', async () => {
    const narrow = Auth.create(
      config({ rules: [rule(['registry.test/library/allowed'], { users: ['reader'] }, ['pull']), rule(['library/**', 'up/**'], { users: ['reader'] }, ['pull'])] }),
    );
    const m = mirrorTest({ auth: narrow, connection: testConnection });
    m.up.addImage('library/allowed', 'latest', image());
    m.up.addImage('library/secret', 'latest', image());
    for (const path of ['/v2/up/library/allowed/manifests/latest', '/v2/registry.test/library/allowed/manifests/latest', '/v2/library/allowed/manifests/latest?ns=registry.test']) {
      expect((await m.request(path, { headers: READER })).status, path).toBe(200);
    }
    // Rules on the hosted-looking names library/** and up/** grant nothing on the mirror.
    for (const path of ['/v2/up/library/secret/manifests/latest', '/v2/registry.test/library/secret/manifests/latest', '/v2/library/secret/manifests/latest?ns=registry.test']) {
      await expectOciError(await m.request(path, { headers: READER }), { status: 403, code: 'DENIED' });
    }
    expect(m.up.requestsTo(m.up.host, '/library/secret/')).toEqual([]);
  });

  it('?ns= naming an unconfigured namespace is 404 NAME_UNKNOWN and dials nothing', async () => {
    const m = mirrorTest({ auth, connection: testConnection });
    m.up.addImage('library/pub', 'latest', image());
    await expectOciError(await m.request('/v2/library/pub/manifests/latest?ns=evil.test'), { status: 404, code: 'NAME_UNKNOWN' });
    await expectOciError(await m.request('/v2/library/pub/manifests/latest?ns=evil.test', { headers: ADMIN }), { status: 404, code: 'NAME_UNKNOWN' });
    expect(m.up.requests).toEqual([]);
  });

  it('a token is for the name it was asked for: another path to the same repository needs its own', async () => {
    const m = mirrorTest({ auth, connection: testConnection });
    m.up.addImage('library/x', 'latest', image());
    const jwt = bearer(await token(m.request, ['repository:up/library/x:pull'], ADMIN));
    expect((await m.request('/v2/up/library/x/manifests/latest', { headers: jwt })).status).toBe(200);
    const elsewhere = await m.request('/v2/registry.test/library/x/manifests/latest', { headers: jwt });
    await expectOciError(elsewhere, { status: 401, code: 'UNAUTHORIZED' });
    expectChallenge(elsewhere, { scope: 'repository:registry.test/library/x:pull', error: 'insufficient_scope' });
    const team = await m.request('/v2/team/app/manifests/latest', { headers: jwt });
    await expectOciError(team, { status: 401, code: 'UNAUTHORIZED' });
    expectChallenge(team, { scope: 'repository:team/app:pull', error: 'insufficient_scope' });
  });
});

describe('challenges', () => {
  it('a Host with a quote cannot add parameters to the challenge: the realm taken from it is percent-encoded', async () => {
    const t = app();
    const res = await t.app.request('http://x",error="y/v2/other/private/manifests/v1');
    expect(res.status).toBe(401);
    const header = res.headers.get('www-authenticate')!;
    expect(header).toBe('Bearer realm="http://x%22,error=%22y/auth/token",service="outpost",scope="repository:other/private:pull"');
  });

  it('every 401 of the token endpoint carries a challenge (a Bearer credential, a wrong password, a bad refresh token)', async () => {
    const t = app();
    const form = (body: string) => t.request('/auth/token', { method: 'POST', body, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    for (const res of [
      await t.request('/auth/token', { headers: { Authorization: 'Bearer x' } }),
      await form('grant_type=password&username=reader&password=wrong'),
      await form('grant_type=refresh_token&refresh_token=not-a-token'),
    ]) {
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="http:\/\/localhost\/auth\/token",service="outpost"$/);
    }
  });
});
