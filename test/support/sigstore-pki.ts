/**
 * A private Sigstore made in the test: a Fulcio-like CA issuing short-lived certificates with an
 * identity (SAN, OIDC issuer extensions) and an embedded SCT from a CT log key, a timestamp
 * authority answering RFC 3161 requests, and the trusted_root.json naming them, so that keyless
 * signatures and their timestamps can be verified end to end without the public-good instance.
 * Encoded as DER by hand (RFC 5280, RFC 6962, RFC 3161 and RFC 5652, as Fulcio and a TSA write
 * them) and signed with WebCrypto only, so the same helper runs on Node and in workerd.
 *
 *   certificate  = SEQ { tbs, ecdsa-with-SHA256, BIT STRING sig(tbs) }
 *   embedded SCT : the log signs  0 | 0 | time | 1 (precert) | sha256(issuer SPKI) | u24 len | tbs' | 0
 *                  where tbs' is the leaf's TBSCertificate without the SCT extension
 *   TimeStampResp = SEQ { PKIStatusInfo { 0 }, ContentInfo { signedData, [0] SignedData {
 *                     3, { sha256 }, { id-ct-TSTInfo, [0] OCTET STRING TSTInfo }, [0] tsa cert,
 *                     { SignerInfo { 1, { issuer, serial }, sha256, [0] signed attributes, ecdsa, sig } } } } }
 *   TSTInfo       = SEQ { 1, policy, { sha256, sha256(data) }, serial, genTime }
 */
import { generateSigner, type TestSigner, toBase64 } from './cosign-sign.js';

type Der = Uint8Array;

function concat(parts: readonly Der[]): Der {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function tlv(tag: number, ...content: Der[]): Der {
  const body = concat(content);
  const n = body.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return concat([new Uint8Array([tag, ...length]), body]);
}

const seq = (...c: Der[]) => tlv(0x30, ...c);
/** A DER SET OF: its elements in the order of their encodings. */
const set = (...c: Der[]) => tlv(0x31, ...[...c].sort(compareBytes));
const octets = (bytes: Der) => tlv(0x04, bytes);
const utf8 = (s: string) => tlv(0x0c, new TextEncoder().encode(s));
const bool = (v: boolean) => tlv(0x01, new Uint8Array([v ? 0xff : 0]));
const bits = (bytes: Der, unused = 0) => tlv(0x03, new Uint8Array([unused]), bytes);
const explicit = (n: number, ...c: Der[]) => tlv(0xa0 + n, ...c);

function int(value: number): Der {
  const bytes: number[] = [];
  let v = value;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(0x02, new Uint8Array(bytes));
}

function oid(dotted: string): Der {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [a! * 40 + b!];
  for (const arc of rest) {
    const base128 = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) base128.unshift((v & 0x7f) | 0x80);
    out.push(...base128);
  }
  return tlv(0x06, new Uint8Array(out));
}

/** UTCTime until 2049, GeneralizedTime after, as RFC 5280 requires. */
function certTime(date: Date): Der {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return date.getUTCFullYear() < 2050 ? tlv(0x17, new TextEncoder().encode(`${iso.slice(2)}Z`)) : tlv(0x18, new TextEncoder().encode(`${iso}Z`));
}

const generalizedTime = (date: Date) => tlv(0x18, new TextEncoder().encode(`${date.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`));

function compareBytes(a: Der, b: Der): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

async function sha256(bytes: Der): Promise<Der> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
}

const OID = {
  ecdsaSha256: '1.2.840.10045.4.3.2',
  sha256: '2.16.840.1.101.3.4.2.1',
  organization: '2.5.4.10',
  commonName: '2.5.4.3',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  timeStamping: '1.3.6.1.5.5.7.3.8',
  fulcioIssuerV1: '1.3.6.1.4.1.57264.1.1',
  fulcioIssuerV2: '1.3.6.1.4.1.57264.1.8',
  sctList: '1.3.6.1.4.1.11129.2.4.2',
  signedData: '1.2.840.113549.1.7.2',
  tstInfo: '1.2.840.113549.1.9.16.1.4',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingCertificateV2: '1.2.840.113549.1.9.16.2.47',
  tsaPolicy: '1.3.6.1.4.1.57264.2',
} as const;

const ecdsaSha256 = () => seq(oid(OID.ecdsaSha256));
const extension = (id: string, critical: boolean, value: Der) => (critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value)));

function name(organization: string, commonName: string): Der {
  return seq(set(seq(oid(OID.organization), utf8(organization))), set(seq(oid(OID.commonName), utf8(commonName))));
}

/** An issued certificate with what signing more under it needs. */
export interface TestCertificate {
  readonly der: Der;
  readonly pem: string;
  readonly name: Der;
  readonly serial: number;
  readonly spki: Der;
  readonly signer: TestSigner;
}

interface CertificateSpec {
  readonly serial: number;
  readonly subject: Der;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly signer: TestSigner;
  readonly extensions: readonly Der[];
}

function tbsCertificate(spec: CertificateSpec, issuer: Der): Der {
  return seq(explicit(0, int(2)), int(spec.serial), ecdsaSha256(), issuer, seq(certTime(spec.notBefore), certTime(spec.notAfter)), spec.subject, spec.signer.spki, explicit(3, seq(...spec.extensions)));
}

async function signCertificate(tbs: Der, issuer: TestSigner): Promise<Der> {
  return seq(tbs, ecdsaSha256(), bits(await issuer.sign(tbs)));
}

function certificate(der: Der, spec: CertificateSpec): TestCertificate {
  return { der, pem: pem(der), name: spec.subject, serial: spec.serial, spki: spec.signer.spki, signer: spec.signer };
}

function pem(der: Der): string {
  return `-----BEGIN CERTIFICATE-----\n${(toBase64(der).match(/.{1,64}/g) ?? []).join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** A self-signed CA certificate (keyCertSign, basicConstraints CA). */
async function rootCertificate(organization: string, commonName: string, notBefore: Date, notAfter: Date, serial: number): Promise<TestCertificate> {
  const spec: CertificateSpec = {
    serial,
    subject: name(organization, commonName),
    notBefore,
    notAfter,
    signer: await generateSigner('ecdsa-p256'),
    extensions: [extension(OID.keyUsage, true, bits(new Uint8Array([0x06]), 1)), extension(OID.basicConstraints, true, seq(bool(true)))],
  };
  return certificate(await signCertificate(tbsCertificate(spec, spec.subject), spec.signer), spec);
}

export interface TestSigstoreOptions {
  /** When the TSA's certificate expires; default with the CA's, 2040-01-01. */
  readonly tsaNotAfter?: Date;
}

export interface LeafOptions {
  /** The SAN: an email address. */
  readonly email: string;
  /** The OIDC issuer, as Fulcio writes it in 1.3.6.1.4.1.57264.1.8 (and .1.1). */
  readonly issuer: string;
  /** Start of the certificate's 10 minutes; default now. */
  readonly notBefore?: Date;
  /** Leave the SCT out. */
  readonly withoutSct?: boolean;
}

export interface TestSigstore {
  readonly ca: TestCertificate;
  readonly ctLog: TestSigner;
  readonly tsaRoot: TestCertificate;
  readonly tsa: TestCertificate;
  /** A Fulcio-style leaf certificate for `key`, with the identity and (unless left out) an SCT. */
  leaf(key: TestSigner, options: LeafOptions): Promise<TestCertificate>;
  /** The DER TimeStampResp of the TSA over `data`, at `time`. */
  timestamp(data: Uint8Array, time: Date): Promise<Uint8Array>;
  /** The trusted_root.json naming the CA, the CT log, the TSA and any transparency logs. */
  trustedRoot(options?: { tlogs?: readonly TestSigner[]; withoutTsa?: boolean }): Promise<string>;
}

export async function testSigstore(options: TestSigstoreOptions = {}): Promise<TestSigstore> {
  const start = new Date('2020-01-01T00:00:00Z');
  const end = new Date('2040-01-01T00:00:00Z');
  const ca = await rootCertificate('outpost.test', 'test fulcio', start, end, 1);
  const ctLog = await generateSigner('ecdsa-p256');
  const tsaRoot = await rootCertificate('outpost.test', 'test tsa root', start, end, 2);
  const tsaSpec: CertificateSpec = {
    serial: 3,
    subject: name('outpost.test', 'test tsa'),
    notBefore: start,
    notAfter: options.tsaNotAfter ?? end,
    signer: await generateSigner('ecdsa-p256'),
    extensions: [extension(OID.keyUsage, true, bits(new Uint8Array([0x80]), 7)), extension(OID.extKeyUsage, true, seq(oid(OID.timeStamping)))],
  };
  const tsa = certificate(await signCertificate(tbsCertificate(tsaSpec, tsaRoot.name), tsaRoot.signer), tsaSpec);
  let serials = 100;
  let tsaSerials = 1;

  const leaf = async (key: TestSigner, o: LeafOptions): Promise<TestCertificate> => {
    const notBefore = o.notBefore ?? new Date(Math.floor(Date.now() / 1000) * 1000);
    const extensions = [
      extension(OID.keyUsage, true, bits(new Uint8Array([0x80]), 7)),
      extension(OID.extKeyUsage, false, seq(oid(OID.codeSigning))),
      extension(OID.subjectAltName, true, seq(tlv(0x81, new TextEncoder().encode(o.email)))),
      extension(OID.fulcioIssuerV1, false, new TextEncoder().encode(o.issuer)),
      extension(OID.fulcioIssuerV2, false, utf8(o.issuer)),
    ];
    const spec: CertificateSpec = { serial: serials++, subject: new Uint8Array([0x30, 0]), notBefore, notAfter: new Date(notBefore.getTime() + 10 * 60_000), signer: key, extensions };
    if (o.withoutSct) return certificate(await signCertificate(tbsCertificate(spec, ca.name), ca.signer), spec);
    const precert = tbsCertificate(spec, ca.name);
    const time = new Uint8Array(8);
    new DataView(time.buffer).setBigUint64(0, BigInt(notBefore.getTime()));
    const u16 = (n: number) => new Uint8Array([n >> 8, n & 0xff]);
    const signed = concat([new Uint8Array([0, 0]), time, u16(1), await sha256(ca.spki), new Uint8Array([precert.length >> 16, (precert.length >> 8) & 0xff, precert.length & 0xff]), precert, u16(0)]);
    const signature = await ctLog.sign(signed);
    const sct = concat([new Uint8Array([0]), await sha256(ctLog.spki), time, u16(0), new Uint8Array([4, 3]), u16(signature.length), signature]);
    const list = concat([u16(sct.length + 2), u16(sct.length), sct]);
    const withSct: CertificateSpec = { ...spec, extensions: [...extensions, extension(OID.sctList, false, octets(list))] };
    return certificate(await signCertificate(tbsCertificate(withSct, ca.name), ca.signer), withSct);
  };

  const timestamp = async (data: Uint8Array, time: Date): Promise<Uint8Array> => {
    const tstInfo = seq(int(1), oid(OID.tsaPolicy), seq(seq(oid(OID.sha256)), octets(await sha256(data))), int(tsaSerials++), generalizedTime(time));
    const attributes = [
      seq(oid(OID.contentType), set(oid(OID.tstInfo))),
      seq(oid(OID.messageDigest), set(octets(await sha256(tstInfo)))),
      seq(oid(OID.signingCertificateV2), set(seq(seq(seq(octets(await sha256(tsa.der))))))),
    ];
    const signedAttributes = set(...attributes);
    const signature = await tsa.signer.sign(signedAttributes);
    const signerInfo = seq(int(1), seq(tsaRoot.name, int(tsa.serial)), seq(oid(OID.sha256)), tlv(0xa0, ...[...attributes].sort(compareBytes)), ecdsaSha256(), octets(signature));
    const signedData = seq(int(3), set(seq(oid(OID.sha256))), seq(oid(OID.tstInfo), explicit(0, octets(tstInfo))), explicit(0, tsa.der), set(signerInfo));
    return seq(seq(int(0)), seq(oid(OID.signedData), explicit(0, signedData)));
  };

  const trustedRoot = async (o: { tlogs?: readonly TestSigner[]; withoutTsa?: boolean } = {}): Promise<string> => {
    const validFor = { start: start.toISOString() };
    const log = async (key: TestSigner, baseUrl: string) => ({
      baseUrl,
      hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: toBase64(key.spki), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor },
      logId: { keyId: toBase64(await sha256(key.spki)) },
    });
    const authority = (commonName: string, chain: readonly TestCertificate[], uri: string) => ({
      subject: { organization: 'outpost.test', commonName },
      uri,
      certChain: { certificates: chain.map((c) => ({ rawBytes: toBase64(c.der) })) },
      validFor,
    });
    return JSON.stringify({
      mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
      tlogs: await Promise.all((o.tlogs ?? []).map((k) => log(k, 'https://rekor.outpost.test'))),
      certificateAuthorities: [authority('test fulcio', [ca], 'https://fulcio.outpost.test')],
      ctlogs: [await log(ctLog, 'https://ctfe.outpost.test')],
      timestampAuthorities: o.withoutTsa ? [] : [authority('test tsa', [tsa, tsaRoot], 'https://tsa.outpost.test')],
    });
  };

  return { ca, ctLog, tsaRoot, tsa, leaf, timestamp, trustedRoot };
}
