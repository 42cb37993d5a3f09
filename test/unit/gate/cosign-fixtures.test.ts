import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { importPublicKey, importPublicKeyDer, type PublicKey } from '../../../src/core/gate/keys.js';
import { verifySimpleSigning, type SignatureLayer, type SimpleSigningInput } from '../../../src/core/gate/simple-signing.js';

/**
 * Real cosign and containers/image signatures (../shared/cosign-fixtures, legacy tag format ci-*
 * folders): each README's expected outcome, reproduced. The suite skips when the folder is absent.
 * A folder is one layer of a `sha256-<hex>.sig` manifest; the digest served is sha256(manifest.json).
 */
const ROOT = join(import.meta.dirname, '..', '..', '..', '..', 'shared', 'cosign-fixtures');
const present = existsSync(join(ROOT, 'ci-key-valid'));

interface Fixture {
  layer: SignatureLayer;
  payload: Uint8Array;
  servedDigest: string;
  key(name: string): Promise<PublicKey>;
  has(name: string): boolean;
}

function fixture(name: string): Fixture {
  const dir = join(ROOT, name);
  const read = (f: string) => new Uint8Array(readFileSync(join(dir, f)));
  const payload = read('payload.json');
  const manifest = read('manifest.json');
  const annotations = JSON.parse(readFileSync(join(dir, 'annotations.json'), 'utf8')) as Record<string, string>;
  return {
    layer: {
      mediaType: readFileSync(join(dir, 'layer-mediatype.txt'), 'utf8'),
      digest: `sha256:${createHash('sha256').update(payload).digest('hex')}`,
      size: payload.length,
      annotations,
    },
    payload,
    servedDigest: `sha256:${createHash('sha256').update(manifest).digest('hex')}`,
    key: (f) => importPublicKey(readFileSync(join(dir, f), 'utf8'), { label: f }),
    has: (f) => existsSync(join(dir, f)),
  };
}

async function verify(f: Fixture, keyFiles: string[], extra: Partial<SimpleSigningInput> = {}) {
  const keys = await Promise.all(keyFiles.map((k) => f.key(k)));
  return verifySimpleSigning({ layer: f.layer, payload: f.payload, servedDigest: f.servedDigest, keys, ...extra });
}

describe.skipIf(!present)('cosign fixtures (legacy tag format)', () => {
  it('ci-key-valid: VALID with cosign.pub', async () => {
    expect(await verify(fixture('ci-key-valid'), ['cosign.pub'])).toEqual({ ok: true, key: 'cosign.pub' });
  });

  it('ci-key-valid: refused with cosign2.pub alone', async () => {
    expect(await verify(fixture('ci-key-valid'), ['cosign2.pub'])).toMatchObject({ ok: false, reason: 'signature-invalid' });
  });

  it('ci-key-valid: VALID when cosign.pub is one of several keys, and names it', async () => {
    expect(await verify(fixture('ci-key-valid'), ['cosign2.pub', 'cosign.pub'])).toEqual({ ok: true, key: 'cosign.pub' });
  });

  it('ci-key-valid: refused when the digest served is another manifest', async () => {
    const f = fixture('ci-key-valid');
    const other = `sha256:${'0'.repeat(64)}`;
    expect(await verify(f, ['cosign.pub'], { servedDigest: other })).toMatchObject({ ok: false, reason: 'manifest-digest-mismatch' });
  });

  it('ci-key-valid-skopeo-tag: VALID with cosign.pub (optional{} and a tagged reference)', async () => {
    expect(await verify(fixture('ci-key-valid-skopeo-tag'), ['cosign.pub'])).toEqual({ ok: true, key: 'cosign.pub' });
  });

  it('ci-key-rekor-valid: VALID with cosign2.pub, and not with cosign.pub', async () => {
    const f = fixture('ci-key-rekor-valid');
    expect(await verify(f, ['cosign2.pub'])).toEqual({ ok: true, key: 'cosign2.pub' });
    const cosign = fixture('ci-key-valid');
    expect(await verify(f, [], { keys: [await cosign.key('cosign.pub')] })).toMatchObject({ ok: false, reason: 'signature-invalid' });
  });

  it('ci-key-rekor-valid: the Rekor SET verifies under rekor.pub and names the entry', async () => {
    const f = fixture('ci-key-rekor-valid');
    const verdict = await verify(f, ['cosign2.pub'], { tlog: { logKeys: [await f.key('rekor.pub')], required: true } });
    expect(verdict).toEqual({
      ok: true,
      key: 'cosign2.pub',
      tlog: { logIndex: 11608800, integratedTime: 1674251859, logID: 'c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d' },
    });
    // 2023-01-20T21:57:39Z, as the README says.
    expect(new Date(1674251859 * 1000).toISOString()).toBe('2023-01-20T21:57:39.000Z');
  });

  it('ci-key-rekor-valid: the public-good trusted root carries the same Rekor key', async () => {
    const f = fixture('ci-key-rekor-valid');
    const root = JSON.parse(readFileSync(join(ROOT, 'ci-key-rekor-valid', 'trusted_root.public-good.json'), 'utf8')) as {
      tlogs: { publicKey: { rawBytes: string } }[];
    };
    const logKeys = await Promise.all(root.tlogs.map((t) => importPublicKeyDer(Buffer.from(t.publicKey.rawBytes, 'base64'))));
    expect(await verify(f, ['cosign2.pub'], { tlog: { logKeys, required: true } })).toMatchObject({ ok: true, key: 'cosign2.pub' });
  });

  it('ci-key-rekor-valid: refused when the log is not trusted, or the SET is altered', async () => {
    const f = fixture('ci-key-rekor-valid');
    const untrusted = await verify(f, ['cosign2.pub'], { tlog: { logKeys: [await f.key('cosign2.pub')], required: true } });
    expect(untrusted).toMatchObject({ ok: false, reason: 'tlog-unknown-log' });

    const bundle = JSON.parse(f.layer.annotations!['dev.sigstore.cosign/bundle']!) as { Payload: { logIndex: number } };
    bundle.Payload.logIndex += 1;
    const altered = { ...f, layer: { ...f.layer, annotations: { ...f.layer.annotations, 'dev.sigstore.cosign/bundle': JSON.stringify(bundle) } } };
    const verdict = await verify(altered, ['cosign2.pub'], { tlog: { logKeys: [await f.key('rekor.pub')], required: true } });
    expect(verdict).toMatchObject({ ok: false, reason: 'tlog-set-invalid' });
  });

  it('ci-key-valid: refused when a transparency log entry is required and there is no bundle', async () => {
    const f = fixture('ci-key-valid');
    const rekor = fixture('ci-key-rekor-valid');
    const tlog = { logKeys: [await rekor.key('rekor.pub')], required: true };
    expect(await verify(f, ['cosign.pub'], { tlog })).toMatchObject({ ok: false, reason: 'tlog-missing' });
    expect(await verify(f, ['cosign.pub'], { tlog: { ...tlog, required: false } })).toEqual({ ok: true, key: 'cosign.pub' });
  });

  it('ci-key-modified-manifest_fail: REJECT, the signature is for another manifest', async () => {
    expect(await verify(fixture('ci-key-modified-manifest_fail'), ['cosign.pub'])).toMatchObject({ ok: false, reason: 'manifest-digest-mismatch' });
  });

  it('ci-unknown-key_fail: REJECT with cosign.pub and cosign2.pub', async () => {
    expect(await verify(fixture('ci-unknown-key_fail'), ['cosign.pub', 'cosign2.pub'])).toMatchObject({ ok: false, reason: 'signature-invalid' });
  });

  it('ci-other-attachment_fail: REJECT, a text/plain layer is not a signature', async () => {
    expect(await verify(fixture('ci-other-attachment_fail'), ['cosign.pub'])).toMatchObject({ ok: false, reason: 'not-simple-signing' });
  });

  it('every ci-* folder has a test above', () => {
    const named = ['ci-key-valid', 'ci-key-valid-skopeo-tag', 'ci-key-rekor-valid', 'ci-key-modified-manifest_fail', 'ci-unknown-key_fail', 'ci-other-attachment_fail'];
    const folders = readdirSync(ROOT).filter((d) => d.startsWith('ci-'));
    expect(folders.filter((d) => !named.includes(d))).toEqual([]);
  });
});
