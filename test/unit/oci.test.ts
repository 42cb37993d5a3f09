import { describe, expect, it } from 'vitest';
import { parseDigest, tryParseDigest } from '../../src/core/oci/digest.js';
import { manifestError, parseManifest, type ManifestRejection } from '../../src/core/oci/manifest.js';
import { isValidName, isValidTag, parseReference } from '../../src/core/oci/reference.js';

const enc = (v: unknown) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));
const D = `sha256:${'a'.repeat(64)}`;
const desc = (mediaType = 'application/octet-stream') => ({ mediaType, digest: D, size: 1 });

describe('digests', () => {
  it.each([
    [D, true],
    [`sha512:${'b'.repeat(128)}`, true],
    [`sha256:${'A'.repeat(64)}`, false],
    [`sha256:${'a'.repeat(63)}`, false],
    ['sha256:totallywrong', false],
    [`md5:${'a'.repeat(32)}`, false],
    ['', false],
    ['sha256', false],
  ])('%s valid=%s', (input, valid) => {
    expect(tryParseDigest(input) !== undefined).toBe(valid);
    if (!valid) expect(() => parseDigest(input)).toThrow(expect.objectContaining({ kind: 'DIGEST_INVALID' }));
  });
});

describe('names and tags', () => {
  it.each([
    ['library/alpine', true],
    ['a', true],
    ['a.b_c__d---e/f', true],
    ['UPPER', false],
    ['a//b', false],
    ['-a', false],
    ['a/', false],
    ['a___b', false],
    ['a'.repeat(256), false],
  ])('name %s valid=%s', (name, valid) => expect(isValidName(name)).toBe(valid));

  it.each([
    ['latest', true],
    ['_x', true],
    ['v1.2.3-rc_1', true],
    ['.hidden', false],
    ['-dash', false],
    ['a'.repeat(128), true],
    ['a'.repeat(129), false],
  ])('tag %s valid=%s', (tag, valid) => expect(isValidTag(tag)).toBe(valid));

  it('tells tags from digests', () => {
    expect(parseReference('latest')).toEqual({ kind: 'tag', tag: 'latest' });
    expect(parseReference(D)).toMatchObject({ kind: 'digest', digest: { value: D } });
    expect(() => parseReference('sha256:nope')).toThrow(expect.objectContaining({ kind: 'DIGEST_INVALID' }));
    expect(() => parseReference('.bad')).toThrow(expect.objectContaining({ kind: 'REFERENCE_INVALID' }));
  });
});

describe('parseManifest', () => {
  const image = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: desc('application/vnd.oci.image.config.v1+json'), layers: [desc()] };

  it('parses an OCI image manifest and derives artifactType from the config', () => {
    const r = parseManifest(enc(image), 'application/vnd.oci.image.manifest.v1+json');
    expect(r.ok && r.manifest).toMatchObject({ kind: 'image', artifactType: 'application/vnd.oci.image.config.v1+json', layers: [desc()] });
  });

  it('infers the media type from Content-Type when the body has none, then from structure', () => {
    const { mediaType: _, ...bare } = image;
    const byHeader = parseManifest(enc(bare), 'application/vnd.oci.image.manifest.v1+json');
    expect(byHeader.ok && byHeader.manifest.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    const byShape = parseManifest(enc({ schemaVersion: 2, manifests: [desc('application/vnd.oci.image.manifest.v1+json')] }), 'application/json');
    expect(byShape.ok && byShape.manifest.kind).toBe('index');
  });

  const rejections: Array<[string, Uint8Array, string | undefined, ManifestRejection['reason']]> = [
    ['not JSON', enc('blablabla'), undefined, 'not-json'],
    ['not UTF-8', new Uint8Array([0xff, 0xfe]), undefined, 'not-json'],
    ['an array', enc([]), undefined, 'not-object'],
    ['schema 1 by header', enc(image), 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'schema1'],
    ['schema 1 by version', enc({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }), undefined, 'schema1'],
    ['schemaVersion 3', enc({ ...image, schemaVersion: 3 }), undefined, 'schema-version'],
    ['header and body disagree', enc(image), 'application/vnd.oci.image.index.v1+json', 'media-type-mismatch'],
    ['unknown type', enc({ ...image, mediaType: 'text/plain' }), undefined, 'unknown-media-type'],
    ['layer without digest', enc({ ...image, layers: [{ mediaType: 'a/b', size: 1 }] }), undefined, 'bad-descriptor'],
    ['negative size', enc({ ...image, layers: [{ ...desc(), size: -1 }] }), undefined, 'bad-descriptor'],
    ['layers not an array', enc({ ...image, layers: {} }), undefined, 'bad-field'],
    ['annotations not strings', enc({ ...image, annotations: { a: 1 } }), undefined, 'bad-field'],
  ];
  it.each(rejections)('refuses %s', (_, bytes, contentType, reason) => {
    const r = parseManifest(bytes, contentType);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toBe(reason);
      const err = manifestError(r);
      expect(err.status).toBe(400);
      expect(err.code).toBe('MANIFEST_INVALID');
    }
  });
});
