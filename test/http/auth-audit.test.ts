import { describe, expect, it } from 'vitest';
import { Auth } from '../../src/core/auth/auth.js';
import { compileGlob } from '../../src/core/glob.js';
import type { AuditRecord } from '../../src/http/audit.js';
import { authConfig, basic, bearer, CLIENT_HEADER, pushImageAs, putManifestAs, rule, testConnection, token, user } from '../support/auth.js';
import { testApp } from '../support/app.js';
import { image } from '../support/images.js';

/**
 * The audit log (src/http/audit.ts): one record per change (201 pushes and mounts, 202
 * deletes) and per refused request (401, 403, and the 429 of too many failed logins); none for
 * routine reads and upload steps; never a credential.
 */

const PASSWORDS = { reader: 'reader-pw-0d9f', writer: 'writer-pw-71c2' };
const READER = basic('reader', PASSWORDS.reader);
const WRITER = basic('writer', PASSWORDS.writer);
const CLIENT = '203.0.113.9';

async function setup(loginFailures = { limit: 3, windowMs: 60_000 }) {
  const records: AuditRecord[] = [];
  const auth = Auth.create(
    authConfig({
      users: [await user('reader', PASSWORDS.reader), await user('writer', PASSWORDS.writer)],
      rules: [rule(['team/**'], { users: ['reader', 'writer'] }, ['pull']), rule(['team/**'], { users: ['writer'] }, ['push', 'delete'])],
      loginFailures,
    }),
  );
  const t = testApp({ immutableTags: [{ repositories: [compileGlob('team/frozen')], label: 'immutableTags[0]' }] }, { auth, connection: testConnection, audit: (r) => records.push(r) });
  const request = (path: string, init: RequestInit = {}) => t.request(path, { ...init, headers: { [CLIENT_HEADER]: CLIENT, ...(init.headers as Record<string, string>) } });
  return { t, request, records };
}

/** The fields a test compares (the request id differs per request). */
function strip(r: AuditRecord) {
  const { requestId, ...rest } = r;
  expect(requestId).toMatch(/\S/);
  return Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
}

describe('audit records', () => {
  it('a push: one record per stored blob and manifest, none for reads or upload steps', async () => {
    const { request, records } = await setup();
    const img = image({ layers: [64] });
    await pushImageAs(request, 'team/app', img, 'v1', WRITER);
    // An upload session's start and chunk, and reads, are routine.
    const started = await request('/v2/team/app/blobs/uploads/', { method: 'POST', headers: { ...WRITER, 'Content-Length': '0' } });
    expect(started.status).toBe(202);
    expect((await request(started.headers.get('location')!, { method: 'PATCH', body: new Uint8Array([1, 2, 3]), headers: WRITER })).status).toBe(202);
    expect((await request('/v2/team/app/manifests/v1', { headers: READER })).status).toBe(200);
    expect((await request(`/v2/team/app/blobs/${img.layers[0]!.digest}`, { headers: READER })).status).toBe(200);
    const base = { msg: 'audit', who: 'writer', action: 'push', repository: 'team/app', result: 'ok', status: 201, client: CLIENT };
    expect(records.map(strip)).toEqual([
      { ...base, digest: img.config.digest },
      { ...base, digest: img.layers[0]!.digest },
      { ...base, reference: 'v1', digest: img.manifest.digest },
    ]);
  });

  it('a delete of a manifest and of a blob', async () => {
    const { request, records } = await setup();
    const img = image({ layers: [64] });
    await pushImageAs(request, 'team/app', img, 'v1', WRITER);
    records.length = 0;
    expect((await request('/v2/team/app/manifests/v1', { method: 'DELETE', headers: WRITER })).status).toBe(202);
    expect((await request(`/v2/team/app/blobs/${img.layers[0]!.digest}`, { method: 'DELETE', headers: WRITER })).status).toBe(202);
    const base = { msg: 'audit', who: 'writer', action: 'delete', repository: 'team/app', result: 'ok', status: 202, client: CLIENT };
    expect(records.map(strip)).toEqual([
      { ...base, reference: 'v1' },
      { ...base, reference: img.layers[0]!.digest },
    ]);
  });

  it('a mount names its source', async () => {
    const { request, records } = await setup();
    const img = image({ layers: [64] });
    await pushImageAs(request, 'team/base', img, 'v1', WRITER);
    records.length = 0;
    const digest = img.layers[0]!.digest;
    expect((await request(`/v2/team/app/blobs/uploads/?mount=${digest}&from=team/base`, { method: 'POST', headers: WRITER })).status).toBe(201);
    expect(records.map(strip)).toEqual([{ msg: 'audit', who: 'writer', action: 'mount', repository: 'team/app', from: 'team/base', digest, result: 'ok', status: 201, client: CLIENT }]);
  });

  it('refused requests: denied to a known user, unauthenticated for an anonymous first try, denied for an immutable tag', async () => {
    const { request, records } = await setup();
    const img = image({ layers: [64] });
    await pushImageAs(request, 'team/frozen', img, 'v1', WRITER);
    const other = image({ layers: [64] });
    await pushImageAs(request, 'team/frozen', other, other.manifest.digest, WRITER);
    records.length = 0;
    expect((await putManifestAs(request, 'team/app', 'v1', img, READER)).status).toBe(403);
    expect((await request('/v2/team/app/manifests/v1')).status).toBe(401);
    expect((await putManifestAs(request, 'team/frozen', 'v1', other, WRITER)).status).toBe(403);
    const refusal = { msg: 'audit', status: 403, code: 'DENIED', client: CLIENT };
    expect(records.map(strip)).toEqual([
      { ...refusal, who: 'reader', action: 'push', repository: 'team/app', reference: 'v1', result: 'denied' },
      { msg: 'audit', who: 'anonymous', action: 'pull', repository: 'team/app', reference: 'v1', result: 'unauthenticated', status: 401, code: 'UNAUTHORIZED', client: CLIENT },
      { ...refusal, who: 'writer', action: 'push', repository: 'team/frozen', reference: 'v1', result: 'denied' },
    ]);
  });

  it('failed logins: on a route, at the token endpoint (GET and POST), a bad token, and the 429 past the limit', async () => {
    // Counted per (address, user): reader's two failures reach the limit, nobody's is its own.
    const { request, records } = await setup({ limit: 2, windowMs: 60_000 });
    expect((await request('/v2/team/app/tags/list', { headers: basic('reader', 'wrong') })).status).toBe(401);
    expect((await request('/auth/token?scope=repository:team/app:pull', { headers: basic('nobody', 'wrong') })).status).toBe(401);
    const form = 'grant_type=password&username=reader&password=wrong2&service=outpost';
    expect((await request('/auth/token', { method: 'POST', body: form, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })).status).toBe(401);
    expect((await request('/v2/team/app/tags/list', { headers: READER })).status).toBe(429);
    expect((await request('/v2/', { headers: bearer('not.a.token') })).status).toBe(401);
    const login = { msg: 'audit', action: 'login', result: 'denied', client: CLIENT };
    expect(records.map(strip)).toEqual([
      { ...login, who: 'reader', status: 401, code: 'UNAUTHORIZED' },
      { ...login, who: 'nobody', status: 401, code: 'UNAUTHORIZED' },
      { ...login, who: 'reader', status: 401, code: 'UNAUTHORIZED' },
      { ...login, who: 'reader', status: 429, code: 'TOOMANYREQUESTS' },
      { ...login, who: 'anonymous', status: 401, code: 'UNAUTHORIZED' },
    ]);
  });

  it('a token issued to a user is a login, with what it grants; an anonymous token and a Basic request are not', async () => {
    const { request, records } = await setup();
    expect((await request('/auth/token?service=outpost&scope=repository:team/app:pull,push&scope=repository:other/x:pull', { headers: READER })).status).toBe(200);
    const form = 'grant_type=password&username=writer&password=' + PASSWORDS.writer + '&service=outpost&scope=repository:team/app:pull,push';
    expect((await request('/auth/token', { method: 'POST', body: form, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })).status).toBe(200);
    expect((await request('/auth/token?scope=repository:team/app:pull')).status).toBe(200);
    expect((await request('/v2/team/app/tags/list', { headers: READER })).status).not.toBe(401);
    const login = { msg: 'audit', action: 'login', result: 'ok', status: 200, client: CLIENT };
    expect(records.map(strip)).toEqual([
      { ...login, who: 'reader', scope: 'repository:team/app:pull' },
      { ...login, who: 'writer', scope: 'repository:team/app:pull,push' },
    ]);
  });

  it('an anonymous client finding the token endpoint at /v2/ is not recorded', async () => {
    const { request, records } = await setup();
    expect((await request('/v2/')).status).toBe(401);
    expect((await request('/v2/', { headers: READER })).status).toBe(200);
    expect(records).toEqual([]);
  });

  it('no record holds a password, a token or a Basic header', async () => {
    const { request, records } = await setup({ limit: 100, windowMs: 60_000 });
    const secrets: string[] = [...Object.values(PASSWORDS), READER.Authorization!.slice(6), WRITER.Authorization!.slice(6)];
    const tokenRes = await request('/auth/token?scope=repository:team/app:pull,push,delete&offline_token=true', { headers: WRITER });
    const issued = (await tokenRes.json()) as { token: string; refresh_token: string };
    secrets.push(issued.token, issued.refresh_token, issued.token.split('.')[2]!, issued.refresh_token.split('.')[2]!);
    const img = image({ layers: [64] });
    await pushImageAs(request, 'team/app', img, 'v1', bearer(issued.token));
    expect((await request('/v2/team/app/manifests/v1', { method: 'DELETE', headers: bearer(issued.token) })).status).toBe(202);
    expect((await putManifestAs(request, 'team/app', 'v2', img, READER)).status).toBe(403);
    const readerToken = await token(request, ['repository:team/app:pull'], READER);
    secrets.push(readerToken);
    expect((await putManifestAs(request, 'team/app', 'v2', img, bearer(readerToken))).status).toBe(403);
    const wrong = 'wrong-password-5e1b';
    secrets.push(wrong, Buffer.from(`writer:${wrong}`).toString('base64'));
    expect((await request('/v2/team/app/tags/list', { headers: basic('writer', wrong) })).status).toBe(401);
    const form = `grant_type=refresh_token&refresh_token=${issued.refresh_token}x&service=outpost`;
    expect((await request('/auth/token', { method: 'POST', body: form, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })).status).toBe(401);
    expect((await request('/v2/team/app/tags/list', { headers: bearer(`${issued.token}x`) })).status).toBe(401);
    expect(records.length).toBeGreaterThanOrEqual(8);
    const text = JSON.stringify(records);
    for (const secret of secrets) expect(text.includes(secret), `a record holds ${secret.slice(0, 12)}...`).toBe(false);
  });
});
