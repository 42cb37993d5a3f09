import { describe, expect, it } from 'vitest';
import { randomBlob, sha256 } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';

/** GET /v2/ (spec.md#determining-support), the API version header, unknown routes and methods. */

failOnServerErrors();

const DIGEST = sha256('hello world');

describe('GET /v2/', () => {
  it.each(['GET', 'HEAD'])('%s answers 200 with the API version header', async (method) => {
    const { request } = guardedApp();
    const res = await request('/v2/', { method });
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('content-length')).toBe('2');
    if (method === 'GET') expect(await res.json()).toEqual({});
    else expect(await res.text()).toBe('');
  });

  it('redirects /v2 to /v2/', async () => {
    const { request } = guardedApp();
    const res = await request('/v2');
    expect(res.status).toBe(301);
    expect(new URL(res.headers.get('location')!, 'http://x').pathname).toBe('/v2/');
  });
});

describe('Docker-Distribution-API-Version on every response', () => {
  it.each([
    ['a success', '/v2/', 'GET', 200],
    ['a catalog', '/v2/_catalog', 'GET', 200],
    ['an OCI error', `/v2/repo/blobs/${DIGEST}`, 'GET', 404],
    ['an unknown route', '/v2/repo/nothing/here', 'GET', 404],
    ['a route outside /v2/', '/elsewhere', 'GET', 404],
    ['a wrong method', '/v2/', 'POST', 405],
  ])('%s', async (_, path, method, status) => {
    const { request } = guardedApp();
    const res = await request(path, { method });
    expect(res.status).toBe(status);
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });
});

describe('unknown routes answer an OCI JSON 404', () => {
  it.each([
    ['outside /v2/', '/'],
    ['outside /v2/, deeper', '/v1/_ping'],
    ['a name without a resource', '/v2/repo'],
    ['an unknown resource', '/v2/repo/things/x'],
    ['tags without list', '/v2/repo/tags'],
    ['tags with another verb', '/v2/repo/tags/all'],
    ['blobs without a digest', '/v2/repo/blobs/'],
    ['manifests without a reference', '/v2/repo/manifests/'],
    ['referrers without a digest', '/v2/repo/referrers/'],
    ['catalog with a suffix', '/v2/_catalog/more'],
  ])('%s: %s', async (_, path) => {
    const { request } = guardedApp();
    await expectOciError(await request(path), { status: 404, code: 'UNSUPPORTED' });
  });

  it('HEAD of an unknown route is 404 without a body', async () => {
    const { request } = guardedApp();
    const res = await request('/v2/repo/things/x', { method: 'HEAD' });
    await expectOciError(res, { status: 404, code: 'UNSUPPORTED', head: true });
    expect(await res.text()).toBe('');
  });
});

describe('wrong methods answer 405 with Allow', () => {
  const upload = '/v2/repo/blobs/uploads/0b5c4b7e-0000-4000-8000-000000000000';
  it.each([
    ['/v2/', 'POST', ['GET', 'HEAD']],
    ['/v2/', 'DELETE', ['GET', 'HEAD']],
    ['/v2/_catalog', 'POST', ['GET', 'HEAD']],
    ['/v2/_catalog', 'DELETE', ['GET', 'HEAD']],
    ['/v2/repo/tags/list', 'PUT', ['GET', 'HEAD']],
    ['/v2/repo/tags/list', 'DELETE', ['GET', 'HEAD']],
    [`/v2/repo/referrers/${DIGEST}`, 'POST', ['GET', 'HEAD']],
    [`/v2/repo/referrers/${DIGEST}`, 'DELETE', ['GET', 'HEAD']],
    ['/v2/repo/manifests/latest', 'POST', ['GET', 'HEAD', 'PUT', 'DELETE']],
    ['/v2/repo/manifests/latest', 'PATCH', ['GET', 'HEAD', 'PUT', 'DELETE']],
    [`/v2/repo/blobs/${DIGEST}`, 'PUT', ['GET', 'HEAD', 'DELETE']],
    [`/v2/repo/blobs/${DIGEST}`, 'POST', ['GET', 'HEAD', 'DELETE']],
    [`/v2/repo/blobs/${DIGEST}`, 'PATCH', ['GET', 'HEAD', 'DELETE']],
    ['/v2/repo/blobs/uploads/', 'GET', ['POST']],
    ['/v2/repo/blobs/uploads/', 'PUT', ['POST']],
    ['/v2/repo/blobs/uploads/', 'DELETE', ['POST']],
    [upload, 'POST', ['GET', 'PATCH', 'PUT', 'DELETE']],
  ])('%s %s', async (path, method, allowed) => {
    const { request } = guardedApp();
    const res = await request(path, { method });
    const error = await expectOciError(res, { status: 405, code: 'UNSUPPORTED' });
    expect(
      res.headers
        .get('allow')
        ?.split(',')
        .map((m) => m.trim()),
    ).toEqual(allowed);
    expect(error!.detail).toEqual({ allowed });
  });

  it('405 is answered before anything about the resource is looked up', async () => {
    const { request, pushBlob } = guardedApp();
    const b = randomBlob(10);
    await pushBlob('repo', b);
    const res = await request(`/v2/repo/blobs/${b.digest}`, { method: 'PUT', body: new Uint8Array(b.bytes) });
    await expectOciError(res, { status: 405, code: 'UNSUPPORTED' });
    expect((await request(`/v2/repo/blobs/${b.digest}`)).status).toBe(200);
  });
});

describe('repository names in any route', () => {
  it.each([
    ['an upper-case name', '/v2/Repo/tags/list'],
    ['a leading separator', '/v2/-repo/tags/list'],
    ['a trailing separator', '/v2/repo-/tags/list'],
    ['an empty component', '/v2/a//b/tags/list'],
    ['three underscores', '/v2/a___b/tags/list'],
    ['a name over 255 characters', `/v2/${'a'.repeat(256)}/tags/list`],
  ])('%s is 400 NAME_INVALID', async (_, path) => {
    const { request } = guardedApp();
    await expectOciError(await request(path), { status: 400, code: 'NAME_INVALID' });
  });

  it.each([['a'], ['a/b/c'], ['a.b_c__d-e--f'], ['x'.repeat(255)]])('%s is a valid name', async (name) => {
    const { request, pushBlob } = guardedApp();
    const b = randomBlob(8);
    await pushBlob(name, b);
    expect((await request(`/v2/${name}/blobs/${b.digest}`, { method: 'HEAD' })).status).toBe(200);
  });
});
