import nodeCrypto, { type KeyObject } from 'node:crypto';
import { bundleFromJSON, type Bundle } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { Verifier, toSignedEntity, toTrustMaterial, type TrustMaterial, type VerifierOptions } from '@sigstore/verify';
import type { BundleRequest, BundleVerdict, BundleVerifier } from '../../ports/bundle-verifier.js';

/**
 * The bundle verifier over @sigstore/verify (sigstore-js, what `npm audit signatures` uses): its
 * Verifier checks the certificate chain at each verified timestamp, the SCTs, every
 * transparency-log entry (SET or inclusion proof against the root's logs, and the entry's body
 * against this signature) and the signature itself. Thresholds, as cosign sets them:
 *
 *   verification material    timestamps                         tlog entries             SCTs
 *   certificate              >= 1 (Rekor integratedTime or TSA)  >= 1 if required, else 0  >= 1
 *   public key               >= 1 if tlog required, else 0       >= 1 if required, else 0  -
 *
 * A public-key bundle is tried with each policy key in turn (its `hint` names nothing cosign
 * trusts). Without a root and without requireTransparencyLog, log entries are not checked at all
 * (cosign --insecure-ignore-tlog). Trusted roots and keys are parsed once and kept.
 *
 * workerd: its node:crypto `verify(undefined, data, key, sig)` fails for EC and RSA keys, where
 * Node uses the key's default digest (SHA-256); @sigstore/verify calls it so for DSSE, SETs and
 * checkpoints. On workerd alone, `verify` is wrapped to pass SHA-256 explicitly for those keys
 * (Ed25519 keeps `undefined`, as it must); Node is left as it is.
 */

const EMPTY_ROOT = { mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1', tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] };
/** Roots and keys a policy set names; more than this many distinct ones are not kept. */
const MAX_CACHED = 256;

export class SigstoreBundleVerifier implements BundleVerifier {
  private readonly roots = new Map<string, TrustedRoot>();
  private readonly materials = new Map<string, TrustMaterial>();
  private readonly keys = new Map<string, KeyObject>();

  constructor() {
    explicitDefaultDigestOnWorkerd();
  }

  async verify(request: BundleRequest): Promise<BundleVerdict> {
    let bundle: Bundle;
    try {
      const json = structuredClone(request.bundle) as { verificationMaterial?: { tlogEntries?: unknown[] } };
      if (!request.trustedRoot && !request.requireTransparencyLog && json?.verificationMaterial) json.verificationMaterial.tlogEntries = [];
      bundle = bundleFromJSON(json);
    } catch (err) {
      return { ok: false, detail: `not a Sigstore bundle: ${message(err)}` };
    }
    const tlogThreshold = request.requireTransparencyLog ? 1 : 0;
    const artifact = request.artifact ? Buffer.from(request.artifact.buffer, request.artifact.byteOffset, request.artifact.byteLength) : undefined;
    try {
      const material = bundle.verificationMaterial.content;
      if (material.$case === 'publicKey') {
        if (request.keys.length === 0) return { ok: false, detail: 'the bundle is signed by a key, and the policy names none' };
        let last = 'no key';
        for (const key of request.keys) {
          try {
            const verifier = new Verifier(this.material(request.trustedRoot, key.pem), { tlogThreshold, ctlogThreshold: 0, timestampThreshold: tlogThreshold });
            verifier.verify(toSignedEntity(bundle, artifact));
            return { ok: true, signer: { kind: 'key', label: key.label } };
          } catch (err) {
            last = message(err);
          }
        }
        return { ok: false, detail: `verifies with none of the policy's ${request.keys.length} key(s): ${last}` };
      }
      const options: VerifierOptions = { tlogThreshold, ctlogThreshold: 1, timestampThreshold: 1 };
      const signer = new Verifier(this.material(request.trustedRoot, undefined), options).verify(toSignedEntity(bundle, artifact));
      return { ok: true, signer: { kind: 'certificate', subject: signer.identity?.subjectAlternativeName, issuer: signer.identity?.extensions?.issuer } };
    } catch (err) {
      return { ok: false, detail: message(err) };
    }
  }

  private material(rootText: string | undefined, pem: string | undefined): TrustMaterial {
    const cacheKey = `${rootText ?? ''}\n${pem ?? ''}`;
    let material = this.materials.get(cacheKey);
    if (!material) {
      const root = this.root(rootText);
      const key = pem === undefined ? undefined : this.key(pem);
      material = key ? toTrustMaterial(root, () => ({ publicKey: key, validFor: () => true })) : toTrustMaterial(root);
      if (this.materials.size >= MAX_CACHED) this.materials.clear();
      this.materials.set(cacheKey, material);
    }
    return material;
  }

  private root(text: string | undefined): TrustedRoot {
    const cacheKey = text ?? '';
    let root = this.roots.get(cacheKey);
    if (!root) {
      root = TrustedRoot.fromJSON(text === undefined ? EMPTY_ROOT : JSON.parse(text));
      if (this.roots.size >= MAX_CACHED) this.roots.clear();
      this.roots.set(cacheKey, root);
    }
    return root;
  }

  private key(pem: string): KeyObject {
    let key = this.keys.get(pem);
    if (!key) {
      key = nodeCrypto.createPublicKey(pem);
      if (this.keys.size >= MAX_CACHED) this.keys.clear();
      this.keys.set(pem, key);
    }
    return key;
  }
}

function message(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && 'message' in err) return `${String(err.code)}: ${String(err.message)}`;
  // The library reads DER it has not validated (a TimeStampResp, a certificate) by walking its
  // parsed tree; a missing element surfaces as a TypeError from inside it, not as its own error.
  if (err instanceof TypeError || err instanceof RangeError) return 'a certificate or timestamp in the bundle is not well-formed';
  return err instanceof Error ? err.message : String(err);
}

let wrapped = false;

function explicitDefaultDigestOnWorkerd(): void {
  if (wrapped || globalThis.navigator?.userAgent !== 'Cloudflare-Workers') return;
  wrapped = true;
  const verify = nodeCrypto.verify.bind(nodeCrypto) as (...args: unknown[]) => unknown;
  (nodeCrypto as { verify: unknown }).verify = (algorithm: unknown, data: unknown, key: unknown, signature: unknown, callback?: unknown) => {
    if (algorithm === undefined || algorithm === null) {
      const type = (typeof key === 'object' && key !== null && 'asymmetricKeyType' in key ? key.asymmetricKeyType : undefined) as string | undefined;
      if (type === 'ec' || type === 'rsa' || type === 'rsa-pss') algorithm = 'sha256';
    }
    return callback === undefined ? verify(algorithm, data, key, signature) : verify(algorithm, data, key, signature, callback);
  };
}
