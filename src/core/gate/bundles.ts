import type { BundleSigner, BundleVerifier } from '../../ports/bundle-verifier.js';
import { parseDigest, tryParseDigest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.js';
import { bufferSource, decodeBase64, decodeFirstPem, encodeBase64, isJsonObject, parseJson, parseJsonBytes, toHex } from './encoding.js';
import { MAX_BUNDLE_CHARS } from './rekor-set.js';
import { BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, SIGNATURE_ANNOTATION, TIMESTAMP_ANNOTATION, checkPayload, type SignatureLayer } from './simple-signing.js';

/**
 * Keyless signatures and Sigstore bundles, checked as cosign checks them; the cryptography
 * (X.509 chain at the signing time, SCT, transparency log, signature) is the BundleVerifier's
 * (ports/bundle-verifier.ts), what the signature says and who made it is decided here.
 *
 *   legacy keyless (a `sha256-<hex>.sig` simple-signing layer with a certificate annotation):
 *     checkPayload (the payload is the layer's blob and names the served digest)
 *     -> a v0.1 bundle, as cosign builds one from the annotations:   certificate  -> x509CertificateChain
 *          messageSignature {sha256(payload), signature}             bundle (SET) -> tlogEntries[0].inclusionPromise
 *                                                                    rfc3161timestamp -> timestampVerificationData
 *     -> verify, artifact = the payload; the signing time is the Rekor SET's integratedTime or the
 *        RFC 3161 timestamp's genTime (its imprint is over the raw signature bytes, as cosign
 *        requests it), each verified, and the certificate valid at every one (without either: refused)
 *     -> the certificate's identity is one of the policy's keyless identities
 *   bundles (cosign v3: a referrer of the served digest with artifactType a bundle media type, one
 *   layer holding the bundle JSON; found through the referrers API, else the `sha256-<hex>` index):
 *     DSSE:      payloadType in-toto, the statement's subject holds the served sha256, and its
 *                predicateType is cosign's signature type (any other is an attestation: not a signature)
 *     message:   messageDigest is SHA2_256 of the served digest; verified over the manifest's bytes
 *     -> verify -> a key bundle: by one of the policy's keys; a certificate: an identity of the policy
 */

/** Bundle media types, as artifact types of referrers and as their layers' media types (protobuf-specs). */
export const BUNDLE_MEDIA_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.dev.sigstore.bundle.v0.3+json',
  'application/vnd.dev.sigstore.bundle+json;version=0.3',
  'application/vnd.dev.sigstore.bundle+json;version=0.2',
  'application/vnd.dev.sigstore.bundle+json;version=0.1',
]);
/** The predicate type of `cosign sign` in a DSSE bundle (cosign v3); attestations carry others. */
export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
const IN_TOTO_PAYLOAD = 'application/vnd.in-toto+json';
const IN_TOTO_STATEMENTS = new Set(['https://in-toto.io/Statement/v0.1', 'https://in-toto.io/Statement/v1']);
/** A bundle is a few KB (a certificate, a log entry with its proof, a short statement). */
export const MAX_BUNDLE_BYTES = 256 * 1024;
/** Bundles of one digest read, at most. */
export const MAX_BUNDLES = 16;
const MAX_SUBJECTS = 1024;

/** A keyless identity of a policy: the OIDC issuer, and the certificate's SAN (exactly, or matching an anchored pattern). */
export interface KeylessIdentity {
  readonly issuer: string;
  readonly subject?: string;
  readonly subjectPattern?: RegExp;
}

/** What a bundle check needs of its policy. */
export interface BundlePolicy {
  readonly keys: ReadonlyArray<{ readonly label: string; readonly pem: string }>;
  readonly keyless?: readonly KeylessIdentity[];
  readonly trustedRoot?: string;
  readonly requireTransparencyLog: boolean;
  /**
   * The in-toto predicate types a DSSE bundle may carry to count as the image's signature:
   * cosign's signature type alone by default. An operator who takes a verified attestation
   * (`cosign attest`, SLSA provenance) by a trusted signer as proof enough adds its type.
   */
  readonly predicateTypes?: readonly string[];
}

export type BundleCheck = { readonly ok: true; readonly how: string } | { readonly ok: false; readonly why: string };

/** Where bundles are read from (the gate's SignatureSource). */
export interface BundleSource {
  referrers(artifactType: string | undefined): Promise<Uint8Array | undefined>;
  tagged(tag: string): Promise<Uint8Array | undefined>;
  manifestAt(digest: string): Promise<Uint8Array | undefined>;
  blob(digest: string, limit: number): Promise<Uint8Array | undefined>;
}

/** A legacy `.sig` layer signed with a Fulcio certificate, verified as `cosign verify --certificate-identity`. */
export async function checkLegacyKeyless(
  verifier: BundleVerifier,
  policy: BundlePolicy,
  layer: SignatureLayer,
  payload: Uint8Array,
  servedDigest: string,
): Promise<BundleCheck> {
  const checked = await checkPayload(layer, payload, servedDigest);
  if (!checked.ok) return { ok: false, why: `${checked.reason}: ${checked.detail}` };
  const bundle = await legacyBundle(layer, payload);
  if (typeof bundle === 'string') return { ok: false, why: bundle };
  const verdict = await verifier.verify({ bundle, artifact: payload, trustedRoot: policy.trustedRoot, keys: [], requireTransparencyLog: policy.requireTransparencyLog });
  if (!verdict.ok) return { ok: false, why: `keyless signature: ${verdict.detail}` };
  return accepted(policy, verdict.signer);
}

/**
 * The v0.1 bundle cosign reconstructs from a legacy layer's annotations (pkg/cosign/bundle): the
 * certificate, the signature over the payload, the Rekor entry with its SET and the RFC 3161
 * timestamp (`{"SignedRFC3161Timestamp": b64(TimeStampResp)}`, `cosign sign
 * --timestamp-server-url`). A reason string when the annotations cannot make one.
 */
export async function legacyBundle(layer: SignatureLayer, payload: Uint8Array): Promise<Record<string, unknown> | string> {
  const annotations = layer.annotations ?? {};
  const pem = annotations[CERTIFICATE_ANNOTATION];
  const signature = annotations[SIGNATURE_ANNOTATION];
  if (typeof pem !== 'string' || typeof signature !== 'string') return 'the layer has no certificate or no signature';
  const cert = decodeFirstPem(pem);
  if (typeof cert === 'string' || cert.type !== 'CERTIFICATE') return 'the certificate annotation is not a PEM certificate';
  const tlogEntries: unknown[] = [];
  const set = annotations[BUNDLE_ANNOTATION];
  if (typeof set === 'string') {
    const entry = legacyTlogEntry(set);
    if (typeof entry === 'string') return entry;
    tlogEntries.push(entry);
  }
  const verificationMaterial: Record<string, unknown> = { x509CertificateChain: { certificates: [{ rawBytes: encodeBase64(cert.der) }] }, tlogEntries };
  const timestamp = annotations[TIMESTAMP_ANNOTATION];
  if (typeof timestamp === 'string') {
    const signedTimestamp = legacyTimestamp(timestamp);
    if (signedTimestamp === undefined) return 'the rfc3161timestamp annotation is not a SignedRFC3161Timestamp';
    verificationMaterial.timestampVerificationData = { rfc3161Timestamps: [{ signedTimestamp }] };
  }
  const sha256 = new Uint8Array(await crypto.subtle.digest('SHA-256', bufferSource(payload)));
  return {
    mediaType: 'application/vnd.dev.sigstore.bundle+json;version=0.1',
    verificationMaterial,
    messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: encodeBase64(sha256) }, signature },
  };
}

/** The base64 TimeStampResp of cosign's timestamp annotation (a TSA's answer is a few KB). */
function legacyTimestamp(annotation: string): string | undefined {
  if (annotation.length > MAX_BUNDLE_CHARS) return undefined;
  const doc = parseJson(annotation);
  const b64 = isJsonObject(doc) ? doc.SignedRFC3161Timestamp : undefined;
  const der = typeof b64 === 'string' ? decodeBase64(b64, MAX_BUNDLE_CHARS) : undefined;
  return der && der.length > 0 ? encodeBase64(der) : undefined;
}

function legacyTlogEntry(annotation: string): Record<string, unknown> | string {
  const bad = 'the bundle annotation is not a Rekor SET bundle';
  if (annotation.length > MAX_BUNDLE_CHARS) return bad;
  const doc = parseJson(annotation);
  const payload = isJsonObject(doc) ? doc.Payload : undefined;
  if (!isJsonObject(doc) || !isJsonObject(payload) || typeof doc.SignedEntryTimestamp !== 'string') return bad;
  const { body, integratedTime, logIndex, logID } = payload;
  if (typeof body !== 'string' || typeof logID !== 'string' || !/^[0-9a-f]{64}$/.test(logID) || !Number.isSafeInteger(integratedTime) || !Number.isSafeInteger(logIndex)) return bad;
  const decoded = decodeBase64(body, MAX_BUNDLE_CHARS);
  const entry = decoded ? parseJson(new TextDecoder().decode(decoded)) : undefined;
  if (!isJsonObject(entry) || typeof entry.kind !== 'string' || typeof entry.apiVersion !== 'string') return bad;
  const keyId = new Uint8Array(32);
  for (let i = 0; i < 32; i++) keyId[i] = parseInt(logID.slice(2 * i, 2 * i + 2), 16);
  return {
    logIndex: String(logIndex),
    logId: { keyId: encodeBase64(keyId) },
    kindVersion: { kind: entry.kind, version: entry.apiVersion },
    integratedTime: String(integratedTime),
    inclusionPromise: { signedEntryTimestamp: doc.SignedEntryTimestamp },
    canonicalizedBody: body,
  };
}

/**
 * The bundles attached to `servedDigest` (at most MAX_BUNDLES), checked in turn until one
 * satisfies the policy; undefined when there are none at all (so the caller's reason stands).
 */
export async function checkAttachedBundles(
  verifier: BundleVerifier,
  policy: BundlePolicy,
  source: BundleSource,
  servedDigest: string,
  manifest: Uint8Array,
): Promise<BundleCheck | undefined> {
  const found = await attachedBundles(source, servedDigest);
  if (found.length === 0) return undefined;
  let why = 'no readable bundle';
  for (const digest of found) {
    const bundle = await readBundle(source, digest);
    if (bundle === undefined) continue;
    const check = await checkBundle(verifier, policy, bundle, servedDigest, manifest);
    if (check.ok) return check;
    why = check.why;
  }
  return { ok: false, why };
}

/** The digests of the bundle referrers of `servedDigest`: the referrers API, else the referrers tag schema's index. */
export async function attachedBundles(source: BundleSource, servedDigest: string): Promise<string[]> {
  // Read as plain JSON: the older bundle media types carry a parameter (`;version=0.2`), which
  // an artifactType of a pushed manifest may not, but an index entry from elsewhere can.
  const bundles = (bytes: Uint8Array | undefined) => {
    const index = bytes && bytes.length <= MAX_MANIFEST_BYTES ? parseJson(new TextDecoder().decode(bytes)) : undefined;
    const entries = isJsonObject(index) && Array.isArray(index.manifests) ? index.manifests : [];
    return entries.flatMap((d) =>
      isJsonObject(d) && typeof d.digest === 'string' && tryParseDigest(d.digest) && typeof d.artifactType === 'string' && BUNDLE_MEDIA_TYPES.has(d.artifactType) ? [d.digest] : [],
    );
  };
  let found = bundles(await source.referrers(undefined));
  if (found.length === 0) {
    const d = parseDigest(servedDigest);
    found = bundles(await source.tagged(`${d.algorithm}-${d.encoded}`));
  }
  return [...new Set(found)].slice(0, MAX_BUNDLES);
}

/** The bundle JSON of a referrer manifest: its layer whose media type is a bundle's. */
async function readBundle(source: BundleSource, digest: string): Promise<unknown> {
  const bytes = await source.manifestAt(digest);
  const manifest = bytes ? parseManifest(bytes, undefined) : undefined;
  if (!manifest?.ok) return undefined;
  const layer = manifest.manifest.layers.find((l) => BUNDLE_MEDIA_TYPES.has(l.mediaType));
  if (!layer || layer.size > MAX_BUNDLE_BYTES) return undefined;
  const blob = await source.blob(layer.digest, MAX_BUNDLE_BYTES);
  return blob ? parseJsonBytes(blob) : undefined;
}

/** One bundle against the served manifest: what it signs (cheap), then its cryptography, then who signed. */
export async function checkBundle(verifier: BundleVerifier, policy: BundlePolicy, bundle: unknown, servedDigest: string, manifest: Uint8Array): Promise<BundleCheck> {
  const content = signedContent(bundle, servedDigest, policy.predicateTypes);
  if (content !== 'dsse' && content !== 'message') return { ok: false, why: content };
  const verdict = await verifier.verify({
    bundle,
    ...(content === 'message' ? { artifact: manifest } : {}),
    trustedRoot: policy.trustedRoot,
    keys: policy.keys,
    requireTransparencyLog: policy.requireTransparencyLog,
  });
  if (!verdict.ok) return { ok: false, why: `bundle: ${verdict.detail}` };
  return accepted(policy, verdict.signer);
}

/** 'dsse' or 'message' when the bundle signs `servedDigest` as cosign's signature; else why not. */
export function signedContent(bundle: unknown, servedDigest: string, predicateTypes: readonly string[] = [COSIGN_SIGN_PREDICATE]): 'dsse' | 'message' | string {
  const digest = parseDigest(servedDigest);
  if (!isJsonObject(bundle)) return 'the bundle is not a JSON object';
  const { dsseEnvelope, messageSignature } = bundle;
  if (isJsonObject(messageSignature)) {
    const md = isJsonObject(messageSignature.messageDigest) ? messageSignature.messageDigest : {};
    const bytes = typeof md.digest === 'string' ? decodeBase64(md.digest, 1024) : undefined;
    if (digest.algorithm !== 'sha256' || md.algorithm !== 'SHA2_256' || !bytes || toHex(bytes) !== digest.encoded) {
      return 'the message signature is over another digest';
    }
    return 'message';
  }
  if (!isJsonObject(dsseEnvelope)) return 'the bundle has neither a message signature nor a DSSE envelope';
  if (dsseEnvelope.payloadType !== IN_TOTO_PAYLOAD || typeof dsseEnvelope.payload !== 'string') return 'the DSSE envelope is not an in-toto statement';
  const raw = decodeBase64(dsseEnvelope.payload, MAX_BUNDLE_BYTES * 2);
  const statement = raw ? parseJson(new TextDecoder().decode(raw)) : undefined;
  if (!isJsonObject(statement) || typeof statement._type !== 'string' || !IN_TOTO_STATEMENTS.has(statement._type)) return 'the DSSE payload is not an in-toto statement';
  const subjects = Array.isArray(statement.subject) ? statement.subject.slice(0, MAX_SUBJECTS) : [];
  const named = subjects.some((s) => isJsonObject(s) && isJsonObject(s.digest) && s.digest[digest.algorithm] === digest.encoded);
  if (!named) return 'the in-toto statement is about another digest';
  if (typeof statement.predicateType !== 'string' || !predicateTypes.includes(statement.predicateType)) {
    return `an attestation (predicate type ${String(statement.predicateType).slice(0, 100)}), not a signature (the policy's predicateTypes do not name it)`;
  }
  return 'dsse';
}

/** Whether a verified signer satisfies the policy: one of its keys, or one of its keyless identities. */
function accepted(policy: BundlePolicy, signer: BundleSigner): BundleCheck {
  if (signer.kind === 'key') return { ok: true, how: `signed by ${signer.label}` };
  const identity = (policy.keyless ?? []).find((id) => identityMatches(id, signer));
  if (identity) return { ok: true, how: `signed by ${signer.subject} (${signer.issuer})` };
  return { ok: false, why: `the certificate's identity (${String(signer.subject).slice(0, 200)}, issuer ${String(signer.issuer).slice(0, 200)}) is none of the policy's` };
}

export function identityMatches(id: KeylessIdentity, signer: { subject: string | undefined; issuer: string | undefined }): boolean {
  if (signer.issuer === undefined || signer.subject === undefined || signer.issuer !== id.issuer) return false;
  if (id.subject !== undefined) return signer.subject === id.subject;
  return id.subjectPattern !== undefined && id.subjectPattern.test(signer.subject);
}

