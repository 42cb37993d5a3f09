import { COSIGN_SIGN_PREDICATE } from '../../src/core/gate/bundles.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { toBase64, type TestSigner } from './cosign-sign.js';
import { blob, type Blob } from './images.js';

/**
 * Sigstore bundles made in the test, as cosign v3 attaches them to an image: a DSSE envelope of an
 * in-toto statement (cosign's signature predicate, or another: an attestation) or a message
 * signature over the manifest, signed with a key made in the test (verification material
 * `publicKey`, no log entry: policies with requireTransparencyLog false), and the referrer
 * manifest that carries it (artifactType the bundle media type, empty config, one layer).
 * Web APIs only, so workerd runs it too.
 */

export const BUNDLE_V03 = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const IN_TOTO = 'application/vnd.in-toto+json';

export function statement(digest: string, predicateType = COSIGN_SIGN_PREDICATE): Uint8Array {
  const doc = { _type: 'https://in-toto.io/Statement/v1', subject: [{ name: 'registry.test/team/app', digest: { sha256: digest.slice(7) } }], predicateType, predicate: {} };
  return new TextEncoder().encode(JSON.stringify(doc));
}

/** DSSE v1 pre-authentication encoding (secure-systems-lab/dsse protocol.md). */
function pae(type: string, payload: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(`DSSEv1 ${type.length} ${type} ${payload.length} `);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

const keyMaterial = { publicKey: { hint: 'test-key' }, tlogEntries: [], timestampVerificationData: { rfc3161Timestamps: [] } };

export async function dsseBundle(signer: TestSigner, payload: Uint8Array): Promise<Record<string, unknown>> {
  const sig = await signer.sign(pae(IN_TOTO, payload));
  return { mediaType: BUNDLE_V03, verificationMaterial: keyMaterial, dsseEnvelope: { payload: toBase64(payload), payloadType: IN_TOTO, signatures: [{ sig: toBase64(sig), keyid: '' }] } };
}

export async function messageBundle(signer: TestSigner, artifact: Uint8Array): Promise<Record<string, unknown>> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', artifact as Uint8Array<ArrayBuffer>));
  return { mediaType: BUNDLE_V03, verificationMaterial: keyMaterial, messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: toBase64(digest) }, signature: toBase64(await signer.sign(artifact)) } };
}

/** The referrer cosign v3 pushes: the bundle as its one layer, `subject` the signed manifest. */
export function bundleReferrer(bundle: unknown, subject: Blob, mediaType = BUNDLE_V03): { layer: Blob; config: Blob; manifest: Blob } {
  const layer = blob(JSON.stringify(bundle), mediaType);
  const config = blob('{}', 'application/vnd.oci.empty.v1+json');
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: mediaType,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: [{ mediaType, digest: layer.digest, size: layer.size }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  });
  return { layer, config, manifest: blob(manifest, MediaType.OciManifest) };
}
