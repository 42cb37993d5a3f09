import { tryParseDigest } from '../oci/digest.js';
import { bufferSource, decodeBase64, isJsonObject as isObject, MAX_SIGNATURE_B64_CHARS, toHex } from './encoding.js';
import { verifySignature, type PublicKey, type SignatureCheck } from './keys.js';
import { verifyRekorBundle, type TlogEntry, type TlogRejection } from './rekor-set.js';

/**
 * Key-based verification of one cosign signature in the legacy tag format: a layer of the
 * `<repository>:sha256-<hex>.sig` manifest, whose blob is a "simple signing" payload
 * (containers/image docs/containers-signature.5.md; cosign specs/SIGNATURE_SPEC.md):
 *
 *   {"critical": {"identity": {"docker-reference": "..."},
 *                 "image":    {"docker-manifest-digest": "sha256:..."},
 *                 "type":     "cosign container image signature"},
 *    "optional": {...} | null}
 *
 * The checks, in order (cheap and structural first, then cryptography):
 *   1. the layer's mediaType is the simple-signing one; other layers are not signatures
 *   2. the payload's size and sha256 are the layer's (so the signed bytes are the blob named)
 *   3. the payload is JSON of the shape above, its critical.type is cosign's, and
 *      critical.image.docker-manifest-digest equals the digest being served, byte for byte
 *      (cosign's SimpleClaimVerifier; critical.type and identity are ignored by cosign, but the
 *      type is what containers/image requires and every producer writes it, so it is required)
 *   4. the base64 `dev.cosignproject.cosign/signature` verifies over the exact payload bytes with
 *      one of the keys (keys.ts: how each key type verifies)
 *   5. when transparency-log keys are given: a `dev.sigstore.cosign/bundle` annotation, when
 *      present, must verify (rekor-set.ts); when required, it must be present. cosign would look
 *      the entry up online instead; a gate answering a pull cannot, so a missing bundle is refused.
 *
 * Certificates (`dev.sigstore.cosign/certificate`, `chain`) are ignored here, as `cosign verify
 * --key` ignores them: keyless verification is a different path (bundles.ts, which reuses checkPayload).
 */

export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const BUNDLE_ANNOTATION = 'dev.sigstore.cosign/bundle';
export const CERTIFICATE_ANNOTATION = 'dev.sigstore.cosign/certificate';
export const CHAIN_ANNOTATION = 'dev.sigstore.cosign/chain';
export const TIMESTAMP_ANNOTATION = 'dev.sigstore.cosign/rfc3161timestamp';
/** critical.type of every cosign and containers/image simple-signing payload. */
export const COSIGN_SIGNATURE_TYPE = 'cosign container image signature';

/**
 * A simple-signing payload is a few hundred bytes plus `cosign sign -a` annotations. The cap keeps
 * a hostile signature manifest from making the gate hold a large blob in memory; read at most
 * this many bytes of the blob before calling verifySimpleSigning.
 */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;

/** The signature manifest's layer descriptor (OCI image-spec descriptor.md). */
export interface SignatureLayer {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface SimpleSigningInput {
  readonly layer: SignatureLayer;
  /** The layer's blob, exactly as stored. */
  readonly payload: Uint8Array;
  /** The digest of the manifest being served (`sha256:<hex>`). */
  readonly servedDigest: string;
  /** Any one of these keys may have made the signature. */
  readonly keys: readonly PublicKey[];
  /** Transparency-log checking; absent means the bundle annotation is ignored (cosign --insecure-ignore-tlog). */
  readonly tlog?: { readonly logKeys: readonly PublicKey[]; readonly required: boolean };
}

export type SimpleSigningRejection =
  | 'no-keys'
  | 'not-simple-signing'
  | 'payload-too-large'
  | 'payload-size-mismatch'
  | 'payload-digest-mismatch'
  | 'payload-malformed'
  | 'payload-not-cosign'
  | 'manifest-digest-mismatch'
  | 'signature-missing'
  | 'signature-malformed'
  | 'signature-invalid'
  | 'tlog-missing'
  | TlogRejection;

export type SimpleSigningVerdict =
  | { readonly ok: true; readonly key: string; readonly tlog?: TlogEntry }
  | { readonly ok: false; readonly reason: SimpleSigningRejection; readonly detail: string };

export async function verifySimpleSigning(input: SimpleSigningInput): Promise<SimpleSigningVerdict> {
  const { layer, payload, servedDigest, keys } = input;
  const reject = (reason: SimpleSigningRejection, detail: string): SimpleSigningVerdict => ({ ok: false, reason, detail });
  if (keys.length === 0) return reject('no-keys', 'no public keys to verify with');

  if (layer.mediaType !== SIMPLE_SIGNING_MEDIA_TYPE) return reject('not-simple-signing', 'layer media type is not simple signing');
  const b64 = layer.annotations?.[SIGNATURE_ANNOTATION];
  if (typeof b64 !== 'string' || b64.length === 0) return reject('signature-missing', `layer has no ${SIGNATURE_ANNOTATION} annotation`);
  const signature = decodeBase64(b64, MAX_SIGNATURE_B64_CHARS);
  if (!signature || signature.length === 0) return reject('signature-malformed', 'signature annotation is not base64 of a plausible size');

  const checked = await checkPayload(layer, payload, servedDigest);
  if (!checked.ok) return checked;
  const { layerDigest, payloadDigest } = checked;

  const checks: SignatureCheck[] = [];
  let signer: PublicKey | undefined;
  for (const key of keys) {
    const check = await verifySignature(key, payload, signature);
    if (check === 'valid') {
      signer = key;
      break;
    }
    checks.push(check);
  }
  if (!signer) {
    return checks.every((c) => c === 'malformed')
      ? reject('signature-malformed', 'signature is not in the format of any given key type')
      : reject('signature-invalid', `signature verifies with none of the ${keys.length} key(s)`);
  }

  if (!input.tlog) return { ok: true, key: signer.label };
  const bundle = layer.annotations?.[BUNDLE_ANNOTATION];
  if (typeof bundle !== 'string') {
    return input.tlog.required ? reject('tlog-missing', `layer has no ${BUNDLE_ANNOTATION} annotation`) : { ok: true, key: signer.label };
  }
  const sha256 = layerDigest.algorithm === 'sha256' ? payloadDigest : toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bufferSource(payload))));
  const tlog = await verifyRekorBundle({ bundle, signature, payloadSha256: sha256, signer, logKeys: input.tlog.logKeys });
  if (!tlog.ok) return tlog;
  return { ok: true, key: signer.label, tlog: tlog.entry };
}

export type PayloadCheck =
  | { readonly ok: true; readonly layerDigest: { readonly algorithm: 'sha256' | 'sha512'; readonly encoded: string }; readonly payloadDigest: string }
  | { readonly ok: false; readonly reason: SimpleSigningRejection; readonly detail: string };

/**
 * Checks 2 and 3 above, which keyless signatures need as much as key-based ones: the payload is
 * the blob the layer names, and says the digest being served.
 */
export async function checkPayload(layer: SignatureLayer, payload: Uint8Array, servedDigest: string): Promise<PayloadCheck> {
  const reject = (reason: SimpleSigningRejection, detail: string): PayloadCheck => ({ ok: false, reason, detail });
  if (layer.mediaType !== SIMPLE_SIGNING_MEDIA_TYPE) return reject('not-simple-signing', 'layer media type is not simple signing');
  if (payload.length > MAX_PAYLOAD_BYTES) return reject('payload-too-large', `payload larger than ${MAX_PAYLOAD_BYTES} bytes`);
  if (layer.size !== payload.length) return reject('payload-size-mismatch', 'payload size differs from the layer descriptor');
  const layerDigest = typeof layer.digest === 'string' ? tryParseDigest(layer.digest) : undefined;
  if (!layerDigest) return reject('payload-digest-mismatch', 'layer digest is not a sha256 or sha512 digest');
  const payloadDigest = toHex(new Uint8Array(await crypto.subtle.digest(layerDigest.algorithm === 'sha256' ? 'SHA-256' : 'SHA-512', bufferSource(payload))));
  if (payloadDigest !== layerDigest.encoded) return reject('payload-digest-mismatch', 'payload bytes do not hash to the layer digest');
  const claim = readClaim(payload);
  if ('reason' in claim) return reject(claim.reason, claim.detail);
  if (claim.manifestDigest !== servedDigest) return reject('manifest-digest-mismatch', 'the signature is for another manifest digest');
  return { ok: true, layerDigest: { algorithm: layerDigest.algorithm, encoded: layerDigest.encoded }, payloadDigest };
}

type Claim = { readonly manifestDigest: string } | { readonly reason: 'payload-malformed' | 'payload-not-cosign'; readonly detail: string };

/**
 * The payload's claim, read as Go's json.Unmarshal into sigstore's SimpleContainerImage would
 * (so a field of the wrong JSON type is an error), but with exact key names. Strict UTF-8, and a
 * byte-order mark is an error as it is for Go.
 */
function readClaim(payload: Uint8Array): Claim {
  const malformed = (detail: string): Claim => ({ reason: 'payload-malformed', detail });
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(payload));
  } catch {
    return malformed('payload is not UTF-8 JSON');
  }
  if (!isObject(doc)) return malformed('payload is not a JSON object');
  const { critical, optional } = doc;
  if (optional !== undefined && optional !== null && !isObject(optional)) return malformed('payload optional is not an object');
  if (!isObject(critical)) return malformed('payload has no critical object');
  const { image, type, identity } = critical;
  if (identity !== undefined && identity !== null && !isObject(identity)) return malformed('payload critical.identity is not an object');
  if (!isObject(image)) return malformed('payload has no critical.image object');
  const digest = image['docker-manifest-digest'];
  if (typeof digest !== 'string') return malformed('payload has no critical.image.docker-manifest-digest');
  if (type !== COSIGN_SIGNATURE_TYPE) return { reason: 'payload-not-cosign', detail: 'critical.type is not a cosign container image signature' };
  return { manifestDigest: digest };
}
