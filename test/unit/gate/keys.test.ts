import { ECDH, createECDH, createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DerError, DerReader, decodeOid, decodeUnsignedInteger } from '../../../src/core/gate/der.js';
import { decodeBase64, decodeFirstPem } from '../../../src/core/gate/encoding.js';
import { KeyError, derSignatureToP1363, importPublicKey, importPublicKeyDer, parsePublicKeyPem, parseSpki } from '../../../src/core/gate/keys.js';
import { generateSigner, toPem } from '../../support/cosign-sign.js';

/** PEM and SPKI parsing, the DER reader and the encodings under it: what they accept and what they refuse. */

const pemOf = (der: Uint8Array) => toPem('PUBLIC KEY', der);
const hex = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s/g, ''), 'hex'));

describe('public keys', () => {
  it.each([
    ['ecdsa-p256', 'ecdsa-p256'],
    ['ecdsa-p384', 'ecdsa-p384'],
    ['ed25519', 'ed25519'],
    ['rsa-pkcs1', 'rsa'],
    ['rsa-pss', 'rsa'],
  ] as const)('detects %s from the SPKI algorithm OID', async (algorithm, expected) => {
    const signer = await generateSigner(algorithm);
    const key = await importPublicKey(signer.pem);
    expect(key.algorithm).toBe(expected);
    expect(key.fingerprint).toBe(createHash('sha256').update(signer.spki).digest('hex'));
    expect(key.label).toBe(`sha256:${key.fingerprint}`);
    expect(await importPublicKey(signer.pem, { label: 'cosign.pub' })).toMatchObject({ label: 'cosign.pub' });
  });

  it('reads PEM as Go does: text before the block, CRLF, headers, the first block only', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const crlf = signer.pem.replace(/\n/g, '\r\n');
    expect(parsePublicKeyPem(`# release key\n${crlf}`).algorithm).toBe('ecdsa-p256');
    const withHeader = signer.pem.replace('-----\n', '-----\nComment: test\n');
    expect(parsePublicKeyPem(withHeader).algorithm).toBe('ecdsa-p256');
    const second = await generateSigner('ed25519');
    expect(parsePublicKeyPem(signer.pem + second.pem).algorithm).toBe('ecdsa-p256');
  });

  it.each<[string, string]>([
    ['empty text', ''],
    ['no PEM block', 'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE'],
    ['a private key', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'],
    ['a PKCS#1 RSA key', '-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n'],
    ['a certificate', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'],
    ['no END line', '-----BEGIN PUBLIC KEY-----\nAAAA\n'],
    ['a mismatched END line', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END CERTIFICATE-----\n'],
    ['bad base64', '-----BEGIN PUBLIC KEY-----\nA*AA\n-----END PUBLIC KEY-----\n'],
    ['unpadded base64', '-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n'],
    ['DER that is not a SPKI', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'],
    ['text over the size cap', `${'#'.repeat(70_000)}\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n`],
  ])('refuses %s with a KeyError', (_, pem) => {
    expect(() => parsePublicKeyPem(pem)).toThrow(KeyError);
  });

  it('refuses key types and curves cosign keys are not', () => {
    const p521 = generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey.export({ type: 'spki', format: 'der' });
    expect(() => parseSpki(new Uint8Array(p521))).toThrow(/unsupported elliptic curve/);
    const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey.export({ type: 'spki', format: 'der' });
    expect(() => parseSpki(new Uint8Array(k1))).toThrow(/unsupported elliptic curve/);
    const x25519 = generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'der' });
    expect(() => parseSpki(new Uint8Array(x25519))).toThrow(/unsupported key algorithm/);
    const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'der' });
    expect(() => parseSpki(new Uint8Array(rsa1024))).toThrow(/RSA modulus of 1024 bits/);
  });

  it('refuses a compressed EC point, as Go x509 does', () => {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const point = ecdh.getPublicKey(undefined, 'compressed');
    const der = new Uint8Array([...hex('3039 3013 0607 2a8648ce3d0201 0608 2a8648ce3d030107 0322 00'), ...point]);
    expect(() => parseSpki(der)).toThrow(/uncompressed/);
    // The same key uncompressed is fine (and matches what node:crypto exports).
    const full = new Uint8Array([...hex('3059 3013 0607 2a8648ce3d0201 0608 2a8648ce3d030107 0342 00'), ...(ECDH.convertKey(point, 'prime256v1', undefined, undefined, 'uncompressed') as Buffer)]);
    expect(parseSpki(full).algorithm).toBe('ecdsa-p256');
    expect(createPublicKey({ key: Buffer.from(full), format: 'der', type: 'spki' }).asymmetricKeyType).toBe('ec');
  });

  it('refuses malformed SPKI DER: truncation, trailing bytes, huge or indefinite lengths, bad NULL', async () => {
    const { spki } = await generateSigner('ecdsa-p256');
    const rsa = new Uint8Array(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' }));
    const bad: [string, Uint8Array][] = [
      ['truncated', spki.subarray(0, spki.length - 1)],
      ['trailing byte', new Uint8Array([...spki, 0])],
      ['4 GiB declared length', new Uint8Array([0x30, 0x84, 0xff, 0xff, 0xff, 0xff, ...spki.subarray(2)])],
      ['5 length octets', new Uint8Array([0x30, 0x85, 0, 0, 0, 0, 0x59, ...spki.subarray(2)])],
      ['indefinite length', new Uint8Array([0x30, 0x80, ...spki.subarray(2), 0, 0])],
      ['wrong outer tag', new Uint8Array([0x31, ...spki.subarray(1)])],
      ['unused bits in the key', (() => { const c = spki.slice(); c[spki.length - 66] = 1; return c; })()],
      ['RSA parameters not NULL', (() => { const c = rsa.slice(); const at = c.indexOf(0x05, 10); c[at] = 0x04; return c; })()],
      ['empty', new Uint8Array(0)],
      ['oversized', new Uint8Array(5000)],
    ];
    for (const [why, der] of bad) {
      expect(() => parseSpki(der), why).toThrow(KeyError);
      await expect(importPublicKeyDer(der), why).rejects.toThrow(KeyError);
      await expect(importPublicKey(pemOf(der)), why).rejects.toThrow(KeyError);
    }
  });

  it('imports a DER key (a trusted root rawBytes) with the same fingerprint as its PEM', async () => {
    const signer = await generateSigner('ecdsa-p256');
    expect((await importPublicKeyDer(signer.spki)).fingerprint).toBe((await importPublicKey(signer.pem)).fingerprint);
  });
});

describe('DER', () => {
  it('reads OIDs and refuses non-minimal or oversized ones', () => {
    expect(decodeOid(hex('2a8648ce3d0201'))).toBe('1.2.840.10045.2.1');
    expect(decodeOid(hex('2b8104 0022'))).toBe('1.3.132.0.34');
    expect(decodeOid(hex('2b6570'))).toBe('1.3.101.112');
    expect(decodeOid(hex('88 37 03'))).toBe('2.999.3');
    expect(() => decodeOid(hex('2a 80 01'))).toThrow(DerError);
    expect(() => decodeOid(hex('2a 86'))).toThrow(DerError);
    expect(() => decodeOid(new Uint8Array(0))).toThrow(DerError);
    expect(() => decodeOid(new Uint8Array(40).fill(1))).toThrow(/too long/);
    expect(() => decodeOid(hex('2a 9f ff ff ff 7f'))).toThrow(/too large/);
  });

  it('reads INTEGER magnitudes strictly', () => {
    expect([...decodeUnsignedInteger(hex('00 80'))]).toEqual([0x80]);
    expect([...decodeUnsignedInteger(hex('7f'))]).toEqual([0x7f]);
    expect([...decodeUnsignedInteger(hex('00'))]).toEqual([]);
    expect(() => decodeUnsignedInteger(hex('00 7f'))).toThrow(/minimally/);
    expect(() => decodeUnsignedInteger(hex('80'))).toThrow(/negative/);
    expect(() => decodeUnsignedInteger(new Uint8Array(0))).toThrow(DerError);
  });

  it('bounds lengths before using them and rejects non-minimal length forms', () => {
    expect(() => new DerReader(hex('04 05 00')).read()).toThrow(/exceeds/);
    expect(() => new DerReader(hex('04 81 05 00')).read()).toThrow(/minimally/);
    expect(() => new DerReader(hex('04 82 00 90')).read()).toThrow(/minimally/);
    expect(() => new DerReader(hex('1f 01 00')).read()).toThrow(/high tag/);
    expect(() => new DerReader(hex('04')).read()).toThrow(/truncated/);
    const r = new DerReader(hex(`048180${'00'.repeat(0x80)}`));
    expect(r.read(0x04).value.length).toBe(0x80);
    r.end();
  });

  it('converts ECDSA DER signatures to P1363 with left padding', () => {
    const sig = hex(`30 25 02 01 01 02 20 7f ${'ff'.repeat(31)}`);
    const out = derSignatureToP1363(sig, 32)!;
    expect(out.length).toBe(64);
    expect(out[31]).toBe(1);
    expect(out.subarray(0, 31).every((b) => b === 0)).toBe(true);
    expect(derSignatureToP1363(new Uint8Array(200), 32)).toBeUndefined();
  });
});

describe('base64', () => {
  it('decodes standard padded base64 as Go StdEncoding does', () => {
    expect(new TextDecoder().decode(decodeBase64('aGVsbG8=', 100))).toBe('hello');
    expect(new TextDecoder().decode(decodeBase64('aGVs\r\nbG8=\n', 100))).toBe('hello');
    expect(decodeBase64('', 100)!.length).toBe(0);
    for (const bad of ['aGVsbG8', 'aGVsbG8==', 'aGVs bG8=', 'aGVs-G8=', 'aGVs_G8=', 'a===', '=aGV', 'aGVsbG8=aGVs']) {
      expect(decodeBase64(bad, 100), bad).toBeUndefined();
    }
    expect(decodeBase64('aGVsbG8=', 7)).toBeUndefined();
  });

  it('finds the first PEM block and reports why there is none', () => {
    expect(decodeFirstPem('nothing here')).toBe('no PEM block');
    expect(decodeFirstPem('-----BEGIN X-----\naGk=\n-----END X-----')).toMatchObject({ type: 'X' });
  });
});
