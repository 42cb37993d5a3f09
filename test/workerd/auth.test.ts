import { env } from 'cloudflare:workers';
import { beforeAll, describe, expect, it } from 'vitest';
import { formatPasswordHash, hashPassword, parsePasswordHash, verifyPassword, WORKERS_MAX_ITERATIONS } from '../../src/core/auth/passwords.js';
import { generateTokenKey, Tokens } from '../../src/core/auth/tokens.js';
import worker from '../../src/entry/workers.js';
import { accessOf, basic, bearer, pushImageAs, token } from '../support/auth.js';
import { image } from '../support/images.js';

/**
 * Authentication inside workerd, through the Worker's own fetch over the real S3 and DynamoDB:
 * OUTPOST_CONFIG with an `auth:` section whose token keys (an EdDSA one that signs, an ES256 one
 * that only verifies, both made here by workerd's WebCrypto) come from vars, as Workers requires;
 * a user whose password is a var (hashed when the isolate builds its app) and one whose
 * passwordHash has the 100000 PBKDF2 iterations workerd allows, also made here. The challenge,
 * the token endpoint with Basic, the Bearer retry, wrong passwords, tokens of both algorithms,
 * and Cache-Control on what anonymous callers may not pull.
 */

const ns = `workerd/${crypto.randomUUID().slice(0, 8)}`;
const team = `${ns}/team/app`;
const pub = `${ns}/public/tool`;
const ciPassword = crypto.randomUUID();
const readerPassword = crypto.randomUUID();
const ISSUER = { issuer: 'outpost', service: 'outpost', tokenTtlMs: 300_000, refreshTokenTtlMs: 86_400_000 };

let authEnv: Record<string, unknown>;
let readerHash: string;
let es256: { privateKeyPem: string; publicKeyPem: string };
let eddsa: { privateKeyPem: string; publicKeyPem: string };

function request(path: string, init?: RequestInit): Promise<Response> {
  return worker.fetch(new Request(`http://outpost.test${path}`, init), authEnv, {});
}

/** The protected header of a JWT. */
function headerOf(jwt: string): { alg: string; kid: string; typ: string } {
  return JSON.parse(atob(jwt.split('.')[0]!.replace(/-/g, '+').replace(/_/g, '/'))) as { alg: string; kid: string; typ: string };
}

beforeAll(async () => {
  eddsa = await generateTokenKey('EdDSA');
  es256 = await generateTokenKey('ES256');
  readerHash = formatPasswordHash(await hashPassword(readerPassword, WORKERS_MAX_ITERATIONS));
  const config = {
    auth: {
      tokenKeys: [
        { kid: 'ed-1', privateKeyEnv: 'TEST_TOKEN_KEY_ED' },
        { kid: 'es-1', publicKeyEnv: 'TEST_TOKEN_KEY_ES_PUBLIC' },
      ],
      users: [
        { name: 'ci', passwordEnv: 'TEST_CI_PASSWORD' },
        { name: 'reader', passwordHash: readerHash },
      ],
      rules: [
        { repositories: [`${ns}/team/**`, `${ns}/public/**`], users: ['ci'], actions: ['pull', 'push', 'delete'] },
        { repositories: [`${ns}/team/**`], users: ['reader'], actions: ['pull'] },
        { repositories: [`${ns}/public/**`], anonymous: true, actions: ['pull'] },
      ],
    },
  };
  authEnv = {
    ...env,
    OUTPOST_CONFIG: JSON.stringify(config),
    TEST_TOKEN_KEY_ED: eddsa.privateKeyPem,
    TEST_TOKEN_KEY_ES_PUBLIC: es256.publicKeyPem,
    TEST_CI_PASSWORD: ciPassword,
  };
});

describe('authentication on Workers', () => {
  const img = image({ layers: [40, 41] });
  const tool = image({ layers: [42] });

  it('challenges anonymous callers, and a token from the endpoint with Basic opens the way', async () => {
    const base = await request('/v2/');
    expect(base.status).toBe(401);
    expect(base.headers.get('www-authenticate')).toBe('Bearer realm="http://outpost.test/auth/token",service="outpost"');
    const pull = await request(`/v2/${team}/manifests/v1`);
    expect(pull.status).toBe(401);
    expect(pull.headers.get('www-authenticate')).toBe(`Bearer realm="http://outpost.test/auth/token",service="outpost",scope="repository:${team}:pull"`);

    const jwt = await token(request, [`repository:${team}:pull,push`], basic('ci', ciPassword));
    expect(headerOf(jwt)).toEqual({ alg: 'EdDSA', kid: 'ed-1', typ: 'at+jwt' });
    expect(accessOf(jwt)).toEqual([{ type: 'repository', name: team, actions: ['pull', 'push'] }]);
    expect((await request('/v2/', { headers: bearer(jwt) })).status).toBe(200);
    await pushImageAs(request, team, img, 'v1', bearer(jwt));
    const res = await request(`/v2/${team}/manifests/v1`, { headers: { ...bearer(jwt), Accept: img.manifest.mediaType } });
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(img.manifest.digest);
  });

  it('checks a passwordHash of 100000 PBKDF2 iterations, on a route and at the token endpoint', async () => {
    expect(await verifyPassword(readerPassword, parsePasswordHash(readerHash, WORKERS_MAX_ITERATIONS))).toBe(true);
    expect(await verifyPassword(ciPassword, parsePasswordHash(readerHash, WORKERS_MAX_ITERATIONS))).toBe(false);
    const res = await request(`/v2/${team}/manifests/v1`, { headers: { ...basic('reader', readerPassword), Accept: img.manifest.mediaType } });
    expect(res.status, await res.clone().text()).toBe(200);
    const jwt = await token(request, [`repository:${team}:pull,push`], basic('reader', readerPassword));
    // Of pull,push the reader is granted pull only.
    expect(accessOf(jwt)).toEqual([{ type: 'repository', name: team, actions: ['pull'] }]);
    const push = await request(`/v2/${team}/blobs/uploads/`, { method: 'POST', headers: basic('reader', readerPassword) });
    expect(push.status).toBe(403);
  });

  it('answers a wrong password 401, at the token endpoint and on a route', async () => {
    const got = await request('/auth/token?service=outpost', { headers: basic('reader', ciPassword) });
    expect(got.status).toBe(401);
    const res = await request(`/v2/${team}/manifests/v1`, { headers: basic('ci', readerPassword) });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="http:\/\/outpost\.test\/auth\/token",service="outpost"/);
    const unknown = await request(`/v2/${team}/manifests/v1`, { headers: basic('nobody', ciPassword) });
    expect(unknown.status).toBe(401);
  });

  it('EdDSA and ES256 keys both sign and verify in workerd', async () => {
    // ES256 signs here; the Worker verifies it with the public key of kid es-1.
    const es = await Tokens.create({ ...ISSUER, keys: [{ kid: 'es-1', privateKeyPem: es256.privateKeyPem }] });
    const issued = await es.issueAccess('ci', [{ type: 'repository', name: team, actions: ['pull'] }]);
    expect(headerOf(issued.token)).toMatchObject({ alg: 'ES256', kid: 'es-1' });
    expect((await es.verifyAccess(issued.token)).sub).toBe('ci');
    expect((await request(`/v2/${team}/manifests/v1`, { headers: bearer(issued.token) })).status).toBe(200);
    // EdDSA signs in the Worker; its public key verifies here.
    const workerToken = await token(request, [`repository:${team}:pull`], basic('ci', ciPassword));
    const ed = await Tokens.create({ ...ISSUER, keys: [{ kid: 'ed-1', publicKeyPem: eddsa.publicKeyPem }] });
    expect(await ed.verifyAccess(workerToken)).toMatchObject({ sub: 'ci', access: [{ type: 'repository', name: team, actions: ['pull'] }] });
    // A token signed by a key the Worker does not list is refused, not guessed at.
    const stranger = await Tokens.create({ ...ISSUER, keys: [{ kid: 'es-1', privateKeyPem: (await generateTokenKey('ES256')).privateKeyPem }] });
    const forged = await stranger.issueAccess('ci', [{ type: 'repository', name: team, actions: ['pull'] }]);
    const refused = await request(`/v2/${team}/manifests/v1`, { headers: bearer(forged.token) });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toContain('error="invalid_token"');
  });

  it('marks what anonymous callers may not pull Cache-Control private, and leaves public content public', async () => {
    const jwt = await token(request, [`repository:${team}:pull`, `repository:${pub}:pull,push`], basic('ci', ciPassword));
    const layer = img.layers[0]!;
    const own = await request(`/v2/${team}/blobs/${layer.digest}`, { headers: bearer(jwt) });
    expect(own.status).toBe(200);
    expect(own.headers.get('cache-control')).toBe('private, max-age=31536000, immutable');
    await pushImageAs(request, pub, tool, 'v1', bearer(jwt));
    const open = await request(`/v2/${pub}/blobs/${tool.layers[0]!.digest}`);
    expect(open.status).toBe(200);
    expect(open.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(new Uint8Array(await open.arrayBuffer())).toEqual(new Uint8Array(tool.layers[0]!.bytes));
  });
});
