import { describe, expect, it } from 'vitest';
import { checkRealm, parseTokenResponse } from '../../src/adapters/upstream/auth.js';
import { parseChallenge, parseContentRange, parseLength, parseNextLink, parseRateLimitValue, parseRetryAfter } from '../../src/adapters/upstream/headers.js';

/** The header parsers of the upstream client (headers.ts) and the pure parts of auth.ts, table-driven. */

describe('parseChallenge', () => {
  it.each([
    [
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' } },
    ],
    ['Basic realm="Registry Realm"', { scheme: 'basic', params: { realm: 'Registry Realm' } }],
    ['bearer Realm=https://a/t, Service=svc', { scheme: 'bearer', params: { realm: 'https://a/t', service: 'svc' } }],
    ['Bearer realm="a\\"b",error="insufficient_scope"', { scheme: 'bearer', params: { realm: 'a"b', error: 'insufficient_scope' } }],
    ['Bearer realm="https://a/t",scope="repository:a:pull repository:b:pull"', { scheme: 'bearer', params: { realm: 'https://a/t', scope: 'repository:a:pull repository:b:pull' } }],
    ['Bearer', { scheme: 'bearer', params: {} }],
    ['', undefined],
    ['=oops', undefined],
  ])('%s', (header, expected) => {
    expect(parseChallenge(header)).toEqual(expected);
  });

  it('reads nothing when there is no header', () => {
    expect(parseChallenge(null)).toBeUndefined();
  });
});

describe('parseLength', () => {
  it.each([
    ['0', 0],
    ['1234', 1234],
    [' 42 ', 42],
    ['-1', undefined],
    ['1e3', undefined],
    ['12, 12', undefined],
    ['99999999999999999', undefined],
    [null, undefined],
  ])('%j -> %s', (header, n) => expect(parseLength(header)).toBe(n));
});

describe('parseContentRange', () => {
  it.each([
    ['bytes 0-9/100', { start: 0, end: 9, total: 100 }],
    ['bytes 10-19/*', { start: 10, end: 19, total: undefined }],
    ['bytes 9-0/100', undefined],
    ['bytes 0-100/100', undefined],
    ['bytes */100', undefined],
    ['bytes=0-9/100', undefined],
    [null, undefined],
  ])('%j', (header, range) => expect(parseContentRange(header)).toEqual(range));
});

describe('parseRetryAfter', () => {
  const now = Date.UTC(2015, 9, 21, 7, 28, 0);
  it.each([
    ['120', 120],
    ['0', 0],
    ['Wed, 21 Oct 2015 07:28:30 GMT', 30],
    ['Wed, 21 Oct 2015 07:27:00 GMT', 0],
    ['Wed, 21 Oct 2015 07:28:00.5 GMT', undefined],
    ['-5', undefined],
    ['1.5', undefined],
    ['tomorrow', undefined],
    [null, undefined],
  ])('%j -> %s', (header, seconds) => expect(parseRetryAfter(header, now)).toBe(seconds));
});

describe('parseRateLimitValue', () => {
  it.each([
    ['100;w=21600', 100],
    ['76;w=21600', 76],
    ['5', 5],
    ['x;w=1', undefined],
    [null, undefined],
  ])('%j -> %s', (header, n) => expect(parseRateLimitValue(header)).toBe(n));
});

describe('parseNextLink', () => {
  const base = new URL('https://registry.test/v2/x/tags/list?n=2');
  it.each([
    ['</v2/x/tags/list?n=2&last=b>; rel="next"', 'https://registry.test/v2/x/tags/list?n=2&last=b'],
    ['<https://other.test/p>; rel="prev next"', 'https://other.test/p'],
    ['</a>; rel="prev"', undefined],
    ['</a>', undefined],
  ])('%j', (header, url) => expect(parseNextLink(header, base)?.href).toBe(url));
});

describe('checkRealm', () => {
  const upstream = new URL('http://127.0.0.1:5000');
  it.each([
    ['https://auth.docker.io/token', { kind: 'ok', credentials: true }],
    ['http://127.0.0.1:5001/token', { kind: 'ok', credentials: true }],
    ['http://localhost:5001/token', { kind: 'ok', credentials: false }],
    ['http://evil.test/token', { kind: 'ok', credentials: false }],
    ['data:text/plain,x', { kind: 'refused' }],
    ['token', { kind: 'refused' }],
  ])('%s', (realm, expected) => expect(checkRealm(realm, upstream)).toMatchObject(expected));
});

describe('parseTokenResponse', () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  it.each([
    ['{"token":"t1","expires_in":300}', { token: 't1', expiresIn: 300 }],
    ['{"access_token":"t2"}', { token: 't2', expiresIn: 60 }],
    ['{"token":"","access_token":"t3","expires_in":0}', { token: 't3', expiresIn: 60 }],
    ['{"token":"t4","expires_in":"300"}', { token: 't4', expiresIn: 60 }],
    ['{"token":"bad\\r\\nHeader: x"}', undefined],
    ['{"token":42}', undefined],
    ['[]', undefined],
    ['nope', undefined],
  ])('%s', (body, expected) => expect(parseTokenResponse(enc(body))).toEqual(expected));
});
