import { describe, expect, it } from 'vitest';
import { RegistryUpstream, type RegistryUpstreamOptions } from '../../src/adapters/upstream/registry-upstream.js';
import { TestClock } from '../support/clock.js';
import { FakeUpstream, recordingSleep, type FakeAuth, type FakeUpstreamOptions } from '../support/fake-upstream.js';
import { image } from '../support/images.js';

/** Bearer token flow, Basic, the token cache and the realm rules (src/adapters/upstream/auth.ts). */

const OCI = 'application/vnd.oci.image.manifest.v1+json';
const USER = { username: 'mirror', password: 's3cr3t-pw' };

function setup(fake: FakeUpstreamOptions = {}, client: Partial<RegistryUpstreamOptions> = {}) {
  const clock = new TestClock();
  const up = new FakeUpstream({ clock, auth: { scheme: 'bearer' }, ...fake });
  up.addImage('library/nginx', 'latest', image());
  up.addImage('library/redis', 'latest', image());
  const events: Record<string, unknown>[] = [];
  const upstream = new RegistryUpstream({ url: up.url, fetch: up.fetch, clock, sleep: recordingSleep().sleep, log: (e) => events.push(e), ...client });
  const pull = (repo = 'library/nginx') => upstream.manifest(repo, 'latest', 'GET', [OCI]);
  return { up, upstream, clock, events, pull };
}

/** The sequence of requests as `HOST METHOD path auth-scheme`, for reading a flow at a glance. */
function flow(up: FakeUpstream): string[] {
  return up.requests.map((r) => `${r.host} ${r.method} ${r.path} ${r.headers.authorization?.split(' ')[0] ?? '-'}`);
}

describe('bearer token flow', () => {
  it('answers the challenge with an anonymous token for the pull scope, then retries once', async () => {
    const { up, pull } = setup();
    expect((await pull()).kind).toBe('ok');
    expect(flow(up)).toEqual([
      'registry.test GET /v2/library/nginx/manifests/latest -',
      'auth.registry.test GET /token -',
      'registry.test GET /v2/library/nginx/manifests/latest Bearer',
    ]);
    const token = new URL(up.requestsTo('auth.registry.test')[0]!.url);
    expect(token.searchParams.get('service')).toBe('registry.test');
    expect(token.searchParams.getAll('scope')).toEqual(['repository:library/nginx:pull']);
  });

  it('sends the configured credentials to an https realm as Basic', async () => {
    const { up, pull } = setup({ auth: { scheme: 'bearer', users: [USER], anonymous: false } }, { credentials: USER });
    expect((await pull()).kind).toBe('ok');
    const auth = up.requestsTo('auth.registry.test')[0]!.headers.authorization;
    expect(auth).toBe(`Basic ${Buffer.from('mirror:s3cr3t-pw').toString('base64')}`);
    // The registry itself only ever sees the token.
    expect(up.requestsTo().map((r) => r.headers.authorization?.split(' ')[0])).toEqual([undefined, 'Bearer']);
  });

  it.each([['token'], ['access_token'], ['both']] as const)('accepts the token in `%s`', async (tokenField) => {
    const { pull } = setup({ auth: { scheme: 'bearer', tokenField } });
    expect((await pull()).kind).toBe('ok');
  });

  it('caches the token per scope: the next pull of the repository is one request', async () => {
    const { up, pull } = setup();
    await pull();
    up.requests.length = 0;
    expect((await pull()).kind).toBe('ok');
    expect(flow(up)).toEqual(['registry.test GET /v2/library/nginx/manifests/latest Bearer']);
  });

  it('fetches the token of another repository from the known realm before asking the registry', async () => {
    const { up, pull } = setup();
    await pull('library/nginx');
    up.requests.length = 0;
    expect((await pull('library/redis')).kind).toBe('ok');
    expect(flow(up)).toEqual(['auth.registry.test GET /token -', 'registry.test GET /v2/library/redis/manifests/latest Bearer']);
  });

  it.each([
    // [expires_in sent, still cached at (s), refreshed by (s)]: a 10 s margin, at most half the lifetime.
    [300, 289, 291],
    [60, 49, 51],
    [null, 49, 51], // no expires_in: the spec's default of 60 s
    [10, 4, 6],
  ])('honours expires_in %s: cached at %ss, fetched again at %ss', async (expiresIn, cachedAt, refreshedBy) => {
    const { up, pull, clock } = setup({ auth: { scheme: 'bearer', expiresIn } });
    const start = clock.time;
    await pull();
    const tokens = () => up.requestsTo('auth.registry.test').length;
    clock.time = start + cachedAt * 1000;
    await pull();
    expect(tokens()).toBe(1);
    clock.time = start + refreshedBy * 1000;
    expect((await pull()).kind).toBe('ok');
    expect(tokens()).toBe(2);
  });

  it('merges concurrent token fetches for the same scope into one', async () => {
    const { up, pull } = setup();
    const results = await Promise.all(Array.from({ length: 8 }, () => pull()));
    expect(results.every((r) => r.kind === 'ok')).toBe(true);
    expect(up.requestsTo('auth.registry.test')).toHaveLength(1);
  });

  it('a caller that joined a token fetch that never settles fetches its own after the token timeout', async () => {
    // On workerd the request that started a shared fetch may be gone, its I/O with it: the
    // fetch it joined then never settles (here: it hangs for far longer than the test runs).
    const clock = new TestClock();
    const sleep = async (ms: number) => {
      clock.advance(ms * 1000);
      await new Promise((r) => setTimeout(r, 0));
    };
    const { up, pull } = setup({ clock }, { clock, sleep, timeouts: { tokenMs: 60_000 } });
    up.fault({ kind: 'hang', match: { host: 'auth.registry.test' } });
    void pull();
    await new Promise((r) => setTimeout(r, 5));
    const joined = await pull();
    expect(joined.kind).toBe('ok');
    expect(up.requestsTo('auth.registry.test')).toHaveLength(2);
  });

  it('fetches a fresh token after a 401 to a cached one, and retries once', async () => {
    const { up, pull } = setup();
    await pull();
    up.requests.length = 0;
    up.fault({ kind: 'unauthorized' });
    expect((await pull()).kind).toBe('ok');
    expect(flow(up)).toEqual([
      'registry.test GET /v2/library/nginx/manifests/latest Bearer',
      'auth.registry.test GET /token -',
      'registry.test GET /v2/library/nginx/manifests/latest Bearer',
    ]);
    expect(up.requests[0]!.headers.authorization).not.toBe(up.requests[2]!.headers.authorization);
  });

  it('answers denied when the 401 repeats after the retry', async () => {
    const { up, pull } = setup();
    up.fault({ kind: 'unauthorized', times: 2 });
    expect(await pull()).toMatchObject({ kind: 'denied', status: 401 });
    expect(up.requestsTo()).toHaveLength(2);
  });

  it('asks for the challenged scope along with its own', async () => {
    const { up, pull } = setup();
    up.fault({
      kind: 'respond',
      respond: () =>
        new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer realm="https://auth.registry.test/token",service="registry.test",scope="repository:library/nginx:pull repository:base/layers:pull"' } }),
    });
    await pull();
    expect(new URL(up.requestsTo('auth.registry.test')[0]!.url).searchParams.getAll('scope')).toEqual(['repository:base/layers:pull', 'repository:library/nginx:pull']);
  });

  it.each<[string, FakeAuth, RegistryUpstreamOptions['credentials'], string]>([
    ['private content without credentials', { scheme: 'bearer', anonymous: false }, undefined, 'denied'],
    ['wrong credentials at the token service', { scheme: 'bearer', users: [USER] }, { username: 'mirror', password: 'wrong' }, 'denied'],
    ['right credentials for private content', { scheme: 'bearer', users: [USER], anonymous: false }, USER, 'ok'],
  ])('%s: %s', async (_, auth, credentials, kind) => {
    const { pull } = setup({ auth }, { credentials });
    expect((await pull()).kind).toBe(kind);
  });

  it('answers rate-limited and unavailable from the token service as such', async () => {
    const a = setup();
    a.up.fault({ kind: 'status', status: 429, headers: { 'retry-after': '120' }, match: { host: 'auth.registry.test' } });
    expect(await a.pull()).toEqual({ kind: 'rate-limited', retryAfterSeconds: 120 });
    const b = setup();
    b.up.fault({ kind: 'status', status: 200, body: '{"nothing":"here"}', match: { host: 'auth.registry.test' } });
    expect(await b.pull()).toMatchObject({ kind: 'unavailable', message: 'auth.registry.test: token response without a token' });
  });

  it('never logs a credential or a token', async () => {
    const { events, pull, up } = setup({ auth: { scheme: 'bearer', users: [USER] } }, { credentials: USER });
    up.fault({ kind: 'unauthorized' });
    await pull();
    expect(events.some((e) => e.event === 'upstream.token')).toBe(true);
    const text = JSON.stringify(events);
    expect(text).not.toContain(USER.password);
    expect(text).not.toContain(Buffer.from('mirror:s3cr3t-pw').toString('base64'));
    expect(text).not.toContain('fake-token-');
  });
});

describe('basic', () => {
  it('answers a Basic challenge with the credentials, then sends them up front', async () => {
    const { up, pull } = setup({ auth: { scheme: 'basic', users: [USER] } }, { credentials: USER });
    expect((await pull()).kind).toBe('ok');
    expect((await pull('library/redis')).kind).toBe('ok');
    expect(flow(up)).toEqual([
      'registry.test GET /v2/library/nginx/manifests/latest -',
      'registry.test GET /v2/library/nginx/manifests/latest Basic',
      'registry.test GET /v2/library/redis/manifests/latest Basic',
    ]);
  });

  it.each([
    ['no credentials configured', undefined, 1],
    ['credentials refused', { username: 'mirror', password: 'nope' }, 2],
  ])('answers denied with %s', async (_, credentials, requests) => {
    const { up, pull } = setup({ auth: { scheme: 'basic', users: [USER] } }, { credentials });
    expect(await pull()).toMatchObject({ kind: 'denied', status: 401 });
    expect(up.requestsTo()).toHaveLength(requests);
  });

  it('answers denied to a 401 without a challenge it understands', async () => {
    const { up, pull } = setup({ auth: undefined }, { credentials: USER });
    up.fault({ kind: 'status', status: 401, headers: { 'www-authenticate': 'Negotiate' } });
    expect(await pull()).toMatchObject({ kind: 'denied', status: 401 });
  });
});

describe('token realm validation (CVE-2026-33540)', () => {
  const challenge = (realm: string) => ({
    kind: 'respond' as const,
    respond: () => new Response(null, { status: 401, headers: { 'www-authenticate': `Bearer realm="${realm}",service="registry.test"` } }),
  });

  it.each([
    ['ftp://auth.registry.test/token', 'is not an http(s) URL'],
    ['/token', 'is not an absolute URL'],
    ['javascript:alert(1)', 'is not an http(s) URL'],
    ['https://user:pw@auth.registry.test/token', 'carries credentials of its own'],
  ])('refuses to call the realm %s', async (realm, why) => {
    const { up, pull } = setup({}, { credentials: USER });
    up.fault(challenge(realm));
    expect(await pull()).toEqual({ kind: 'unavailable', message: `registry.test named a token realm that ${why}` });
    expect(up.requests).toHaveLength(1);
  });

  it.each([
    // [upstream, realm, credentials sent to the realm]
    ['https://registry.test', 'https://auth.elsewhere.test/token', true],
    ['https://registry.test', 'http://auth.elsewhere.test/token', false],
    ['http://127.0.0.1:5000', 'http://127.0.0.1:5001/token', true],
    ['http://127.0.0.1:5000', 'http://127.0.0.2:5001/token', false],
  ])('upstream %s, realm %s: credentials sent: %s', async (url, realm, sent) => {
    const host = new URL(url).host;
    const { up, pull, events } = setup({ host, scheme: url.startsWith('https') ? 'https' : 'http', auth: { scheme: 'bearer', realm, users: [USER] } }, { credentials: USER });
    // Anonymous pulls are allowed, so a token fetched without credentials still serves public content.
    expect((await pull()).kind).toBe('ok');
    const tokenRequest = up.requestsTo(new URL(realm).host)[0]!;
    expect(tokenRequest.headers.authorization !== undefined).toBe(sent);
    expect(events.some((e) => e.event === 'upstream.realm-insecure')).toBe(!sent);
  });

  it('answers denied for private content when the realm may not have the credentials', async () => {
    const { pull } = setup({ auth: { scheme: 'bearer', realm: 'http://auth.elsewhere.test/token', users: [USER], anonymous: false } }, { credentials: USER });
    expect(await pull()).toMatchObject({ kind: 'denied' });
  });

  it('drops the credentials when the token service redirects to another host', async () => {
    const { up, pull } = setup({ auth: { scheme: 'bearer', users: [USER] } }, { credentials: USER });
    up.fault({ kind: 'status', status: 307, headers: { location: 'https://tokens.elsewhere.test/token?x=1' }, match: { host: 'auth.registry.test' } });
    up.fault({ kind: 'status', status: 200, body: '{"token":"from-elsewhere"}', match: { host: 'tokens.elsewhere.test' } });
    await pull();
    expect(up.requestsTo('auth.registry.test')[0]!.headers.authorization).toMatch(/^Basic /);
    expect(up.requestsTo('tokens.elsewhere.test')[0]!.headers.authorization).toBeUndefined();
  });
});
