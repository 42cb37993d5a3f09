import { constantTimeEqual } from '../bytes.js';
import { decodeBase64, decodeFirstPem, isJsonObject as isObject, MAX_SIGNATURE_B64_CHARS, parseJson } from './encoding.js';
import { verifySignature, type PublicKey } from './keys.js';

/**
 * Offline proof that a key-based cosign signature is in Rekor: the `dev.sigstore.cosign/bundle`
 * annotation of a simple-signing layer, checked as cosign's VerifyBundle does (pkg/cosign/verify.go):
 *
 *   bundle = {"SignedEntryTimestamp": b64(DER ECDSA), "Payload": {body, integratedTime, logIndex, logID}}
 *   1. logID names a trusted log key            logID == hex sha256(DER SPKI of the log's key)
 *   2. the SET verifies under that key          over RFC 8785 canonical JSON of Payload
 *                                               {"body","integratedTime","logID","logIndex"}
 *   3. the entry is this signature              body = hashedrekord|rekord 0.0.1 whose
 *                                                 spec.signature.content == the layer's signature,
 *                                                 spec.signature.publicKey.content == the verifying key,
 *                                                 spec.data.hash == sha256 of the payload
 *
 * The SET is the log's promise to include the entry; an inclusion proof (bundles v0.2+) is a
 * separate, stronger check not made here.
 */

export interface TlogEntry {
  readonly logIndex: number;
  /** Unix seconds at which the log integrated the entry. */
  readonly integratedTime: number;
  readonly logID: string;
}

export type TlogRejection =
  | 'tlog-malformed'
  | 'tlog-unknown-log'
  | 'tlog-set-invalid'
  | 'tlog-body-unsupported'
  | 'tlog-signature-mismatch'
  | 'tlog-key-mismatch'
  | 'tlog-payload-mismatch';

export type TlogVerdict = { ok: true; entry: TlogEntry } | { ok: false; reason: TlogRejection; detail: string };

/** A bundle annotation is a few KB (its body holds the signer's key or certificate); a much larger one is refused before parsing. */
export const MAX_BUNDLE_CHARS = 64 * 1024;

export interface RekorBundleInput {
  /** The annotation's value, verbatim. */
  readonly bundle: string;
  /** The layer's signature, decoded from its base64 annotation. */
  readonly signature: Uint8Array;
  /** Lower-case hex sha256 of the payload bytes. */
  readonly payloadSha256: string;
  /** The key that verified the signature; the entry must name the same key. */
  readonly signer: PublicKey;
  /** Trusted transparency log keys (public-good Rekor's, or a private instance's). */
  readonly logKeys: readonly PublicKey[];
}

export async function verifyRekorBundle(input: RekorBundleInput): Promise<TlogVerdict> {
  const reject = (reason: TlogRejection, detail: string): TlogVerdict => ({ ok: false, reason, detail });
  if (input.bundle.length > MAX_BUNDLE_CHARS) return reject('tlog-malformed', `bundle longer than ${MAX_BUNDLE_CHARS} characters`);
  const bundle = parseJson(input.bundle);
  const payload = isObject(bundle) ? bundle.Payload : undefined;
  const setB64 = isObject(bundle) ? bundle.SignedEntryTimestamp : undefined;
  if (!isObject(payload) || typeof setB64 !== 'string') return reject('tlog-malformed', 'bundle lacks SignedEntryTimestamp or Payload');
  const { body, integratedTime, logIndex, logID } = payload;
  if (typeof body !== 'string' || typeof logID !== 'string' || !isWholeNumber(integratedTime) || !isWholeNumber(logIndex)) {
    return reject('tlog-malformed', 'bundle Payload lacks body, integratedTime, logIndex or logID');
  }
  if (!/^[0-9a-f]{64}$/.test(logID)) return reject('tlog-malformed', 'logID is not a sha256 hex');

  const logKey = input.logKeys.find((k) => k.fingerprint === logID);
  if (!logKey) return reject('tlog-unknown-log', 'the entry is from a transparency log that is not trusted');
  const set = decodeBase64(setB64, MAX_SIGNATURE_B64_CHARS);
  if (!set) return reject('tlog-malformed', 'SignedEntryTimestamp is not base64');
  // RFC 8785: keys sorted by code unit, no whitespace, ECMAScript string and number forms.
  const canonical = `{"body":${JSON.stringify(body)},"integratedTime":${integratedTime},"logID":${JSON.stringify(logID)},"logIndex":${logIndex}}`;
  if ((await verifySignature(logKey, new TextEncoder().encode(canonical), set)) !== 'valid') {
    return reject('tlog-set-invalid', 'SignedEntryTimestamp does not verify under the log key');
  }

  const bodyBytes = decodeBase64(body, MAX_BUNDLE_CHARS);
  const entry = bodyBytes ? parseJson(new TextDecoder().decode(bodyBytes)) : undefined;
  if (!isObject(entry)) return reject('tlog-malformed', 'entry body is not base64 JSON');
  if ((entry.kind !== 'hashedrekord' && entry.kind !== 'rekord') || entry.apiVersion !== '0.0.1') {
    return reject('tlog-body-unsupported', 'entry is not a hashedrekord or rekord 0.0.1');
  }
  const spec = isObject(entry.spec) ? entry.spec : {};
  const sig = isObject(spec.signature) ? spec.signature : {};
  const key = isObject(sig.publicKey) ? sig.publicKey : {};
  const data = isObject(spec.data) ? spec.data : {};
  const hash = isObject(data.hash) ? data.hash : {};

  const entrySig = typeof sig.content === 'string' ? decodeBase64(sig.content, MAX_SIGNATURE_B64_CHARS) : undefined;
  if (!entrySig || !constantTimeEqual(entrySig, input.signature)) return reject('tlog-signature-mismatch', 'the entry holds another signature');

  const keyPem = typeof key.content === 'string' ? decodeBase64(key.content, MAX_BUNDLE_CHARS) : undefined;
  const block = keyPem ? decodeFirstPem(new TextDecoder().decode(keyPem)) : 'absent';
  if (typeof block === 'string' || block.type !== 'PUBLIC KEY' || !constantTimeEqual(block.der, input.signer.spki)) {
    return reject('tlog-key-mismatch', 'the entry names another key');
  }

  if (hash.algorithm !== 'sha256' || hash.value !== input.payloadSha256) return reject('tlog-payload-mismatch', 'the entry is for another payload');
  return { ok: true, entry: { logIndex, integratedTime, logID } };
}


function isWholeNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
