import type { Clock } from '../../ports/clock.js';
import type { BundleVerifier } from '../../ports/bundle-verifier.js';
import type { Json, MetaIndex } from '../../ports/meta-index.js';
import { OciError } from '../errors.js';
import { matchesAny } from '../glob.js';
import type { Metrics } from '../metrics.js';
import { TtlCache } from '../mirror/ttl-cache.js';
import { parseDigest } from '../oci/digest.js';
import { parseManifest, type ParsedManifest } from '../oci/manifest.js';
import { BUNDLE_MEDIA_TYPES, checkAttachedBundles, checkLegacyKeyless, type KeylessIdentity } from './bundles.js';
import { importPublicKey, importPublicKeyDer, type PublicKey } from './keys.js';
import { CERTIFICATE_ANNOTATION, MAX_PAYLOAD_BYTES, SIMPLE_SIGNING_MEDIA_TYPE, verifySimpleSigning, type SignatureLayer } from './simple-signing.js';
import { trustedLogKeys } from './trusted-root.js';

/**
 * The signature gate: in a repository that a policy names, a manifest is served only when it
 * satisfies every such policy (a cosign signature by one of the policy's keys or keyless
 * identities, found as cosign finds it), checked on every manifest GET and HEAD, by tag or digest, hosted or mirrored.
 *
 *   check(name, digest):
 *     policies = those whose globs match name, mode not off      none -> served
 *     a tag sha256-<hex>.sig|.att|.sbom, or a signature artifact -> served (artifacts are ungated)
 *     for each policy: verdict(policy, digest)                    not ok: enforce -> 403 DENIED
 *                                                                 naming the policy; warn -> served, logged
 *   verdict(policy, digest):
 *     memory (this instance) -> index verdict#<policy>/<digest> (expires) -> verify:
 *       the manifest sha256-<hex>.sig of the repository; each of its simple-signing layers
 *       (at most MAX_SIGNATURE_LAYERS), its payload read (at most MAX_PAYLOAD_BYTES) and checked
 *       against the served digest and the policy's keys (simple-signing.ts), with the
 *       transparency-log SET when the policy requires it; a layer with a Fulcio certificate
 *       against its keyless identities (bundles.ts); any one valid -> ok
 *     else the Sigstore bundles attached to the digest (referrers, else the sha256-<hex> index;
 *       bundles.ts, at most MAX_BUNDLES): any one that signs the digest, by a key or an identity
 *       of the policy -> ok
 *     an index that verifies vouches for its children (policy.children, on by default): their
 *     verdicts are written with it, so `cosign sign` of a multi-platform index serves its images
 *   A verdict is kept for verdictTtlMs (a refusal for at most REFUSAL_TTL_MS, so a signature
 *   pushed after a refused pull is seen soon); a cached one costs no store request.
 *
 * Verdicts are per (digest, policy), whichever repository the signature was found in: a
 * signature is over the digest, and the policy names the keys.
 */

export type GateMode = 'enforce' | 'warn' | 'off';

export interface GatePolicy {
  name: string;
  repositories: RegExp[];
  mode: GateMode;
  /** PEM public keys, imported on first use. */
  keys: Array<{ label: string; pem: string }>;
  /** Fulcio certificate identities (issuer and subject); none when absent. They need GateDeps.bundles. */
  keyless?: KeylessIdentity[];
  /** A trusted_root.json's text: its transparency logs' keys verify Rekor SETs, its Fulcio CAs certificates. */
  trustedRoot?: string;
  requireTransparencyLog: boolean;
  /** The children of a verified index are served (cosign signs only the index). */
  children: boolean;
  verdictTtlMs: number;
}

/** Where a gated manifest and its signatures are read from: its repository, hosted or mirrored. */
export interface SignatureSource {
  /** The manifest being served. */
  manifest(): Promise<Uint8Array>;
  /** The manifest under `tag` in the same repository; undefined when there is none. */
  tagged(tag: string): Promise<Uint8Array | undefined>;
  /** A blob of the repository, at most `limit` bytes; undefined when absent or longer. */
  blob(digest: string, limit: number): Promise<Uint8Array | undefined>;
  /** The referrers image index of the served digest (only `artifactType`'s when given); undefined when there is none. */
  referrers(artifactType: string | undefined): Promise<Uint8Array | undefined>;
  /** The manifest `digest` of the same repository (a referrer); undefined when there is none. */
  manifestAt(digest: string): Promise<Uint8Array | undefined>;
}

export interface GateDeps {
  index: MetaIndex;
  clock: Clock;
  metrics?: Metrics;
  /** Verifies certificates and Sigstore bundles; without it only key-based `.sig` signatures are checked. */
  bundles?: BundleVerifier;
  /** Gate decisions for the log (details stay here, never in a response). */
  log?: (record: Record<string, unknown>) => void;
}

type Verdict = { ok: true; how: string } | { ok: false; why: string };

/** Artifact types of signatures and attestations (cosign's OCI 1.1 types, Sigstore bundles). */
const SIGNATURE_ARTIFACT_TYPES = new Set([
  'application/vnd.dev.cosign.artifact.sig.v1+json',
  'application/vnd.dev.cosign.artifact.sbom.v1+json',
  'application/vnd.dsse.envelope.v1+json',
  ...BUNDLE_MEDIA_TYPES,
]);
const ATTESTATION_LAYER = 'application/vnd.dsse.envelope.v1+json';

/** A signature manifest with more layers than this is read only this far. */
export const MAX_SIGNATURE_LAYERS = 32;
/** An index vouches for at most this many children. */
const MAX_CHILDREN = 1000;
export const REFUSAL_TTL_MS = 30_000;
const MEMORY_ENTRIES = 50_000;

export class Gate {
  private readonly verdicts: TtlCache<Verdict>;
  private readonly keys = new Map<string, Promise<{ keys: PublicKey[]; logKeys?: PublicKey[] }>>();

  constructor(
    private readonly policies: GatePolicy[],
    private readonly deps: GateDeps,
  ) {
    this.verdicts = new TtlCache(deps.clock, MEMORY_ENTRIES, MEMORY_ENTRIES);
  }

  /** Whether any policy gates `name` (a hosted name, or a mirrored one qualified by its namespace). */
  gates(name: string): boolean {
    return this.policiesFor(name).length > 0;
  }

  /**
   * Serves or refuses `digest` in `name`: resolves when it may be served (with the policies
   * whose warn mode let it through), throws 403 DENIED naming the first policy it fails.
   */
  async check(name: string, digest: string, source: SignatureSource): Promise<{ warned: string[] }> {
    const policies = this.policiesFor(name);
    const warned: string[] = [];
    if (policies.length === 0) return { warned };
    // A cosign tag (sha256-<hex>.sig, .att, .sbom) is served ungated only if what it names is a
    // signature artifact: anyone who can tag could otherwise name any image so (verify() tells).
    for (const policy of policies) {
      const verdict = await this.verdict(policy, digest, source);
      if (verdict.ok) {
        this.decided(name, digest, policy, verdict.how === 'artifact' ? 'artifact' : 'allowed', verdict.how);
        continue;
      }
      if (policy.mode === 'warn') {
        this.decided(name, digest, policy, 'warned', verdict.why);
        warned.push(policy.name);
        continue;
      }
      this.decided(name, digest, policy, 'denied', verdict.why);
      throw new OciError('DENIED', `manifest ${digest} does not satisfy the signature policy "${policy.name}"`, { policy: policy.name });
    }
    return { warned };
  }

  private policiesFor(name: string): GatePolicy[] {
    return this.policies.filter((p) => p.mode !== 'off' && matchesAny(p.repositories, name));
  }

  private async verdict(policy: GatePolicy, digest: string, source: SignatureSource): Promise<Verdict> {
    const memoryKey = `${policy.name}\n${digest}`;
    const remembered = this.verdicts.get(memoryKey);
    if (remembered) return remembered;
    const key = verdictKey(policy.name, digest);
    const stored = await this.deps.index.get<Verdict & Json>(key);
    if (stored) {
      this.remember(policy, memoryKey, stored.value, stored.expiresAt);
      return stored.value;
    }
    const { verdict, children } = await this.verify(policy, digest, source);
    const now = this.deps.clock.now();
    const expiresAt = now + (verdict.ok ? policy.verdictTtlMs : Math.min(policy.verdictTtlMs, REFUSAL_TTL_MS));
    await this.deps.index.put(key, verdict as Verdict & Json, { expiresAt });
    this.remember(policy, memoryKey, verdict, expiresAt);
    if (verdict.ok && policy.children) {
      const vouched: Verdict = { ok: true, how: `child of ${digest}` };
      for (const child of children.slice(0, MAX_CHILDREN)) {
        await this.deps.index.put(verdictKey(policy.name, child), vouched as Verdict & Json, { expiresAt });
        this.remember(policy, `${policy.name}\n${child}`, vouched, expiresAt);
      }
    }
    return verdict;
  }

  private remember(policy: GatePolicy, key: string, verdict: Verdict, expiresAt: number | undefined): void {
    const ttl = (expiresAt ?? this.deps.clock.now() + policy.verdictTtlMs) - this.deps.clock.now();
    if (ttl > 0) this.verdicts.set(key, verdict, ttl, 1);
  }

  private async verify(policy: GatePolicy, digest: string, source: SignatureSource): Promise<{ verdict: Verdict; children: string[] }> {
    const bytes = await source.manifest();
    const manifest = parseManifest(bytes, undefined);
    const children = manifest.ok ? manifest.manifest.manifests.map((d) => d.digest) : [];
    if (manifest.ok && isSignatureArtifact(manifest.manifest)) return { verdict: { ok: true, how: 'artifact' }, children: [] };
    const parsed = parseDigest(digest);
    const found = await this.verifyTagged(policy, digest, await source.tagged(`${parsed.algorithm}-${parsed.encoded}.sig`), source);
    if (found.ok) return { verdict: found, children };
    const bundles = this.deps.bundles;
    const attached = bundles ? await checkAttachedBundles(bundles, policy, source, digest, bytes) : undefined;
    if (attached?.ok) return { verdict: attached, children };
    return { verdict: { ok: false, why: attached?.why ?? found.why }, children };
  }

  /** The signature manifest `sha256-<hex>.sig`: each simple-signing layer, by the policy's keys, or keyless. */
  private async verifyTagged(policy: GatePolicy, digest: string, sigBytes: Uint8Array | undefined, source: SignatureSource): Promise<Verdict> {
    if (!sigBytes) return { ok: false, why: 'no signature (no sha256-<hex>.sig tag and no Sigstore bundle)' };
    const sig = parseManifest(sigBytes, undefined);
    if (!sig.ok) return { ok: false, why: 'the signature manifest cannot be parsed' };
    const { keys, logKeys } = await this.keysOf(policy);
    const bundles = this.deps.bundles;
    let why = 'no signature layer';
    for (const layer of sig.manifest.layers.slice(0, MAX_SIGNATURE_LAYERS)) {
      if (layer.mediaType !== SIMPLE_SIGNING_MEDIA_TYPE) continue;
      const payload = await source.blob(layer.digest, MAX_PAYLOAD_BYTES);
      if (!payload) {
        why = 'a signature payload is missing or too large';
        continue;
      }
      const signatureLayer: SignatureLayer = { mediaType: layer.mediaType, digest: layer.digest, size: layer.size, annotations: layer.annotations ?? {} };
      if (keys.length > 0) {
        const result = await verifySimpleSigning({
          layer: signatureLayer,
          payload,
          servedDigest: digest,
          keys,
          ...(logKeys ? { tlog: { logKeys, required: policy.requireTransparencyLog } } : {}),
        });
        if (result.ok) return { ok: true, how: `signed by ${result.key}` };
        why = `${result.reason}: ${result.detail}`;
      }
      if (bundles && (policy.keyless?.length ?? 0) > 0 && signatureLayer.annotations?.[CERTIFICATE_ANNOTATION] !== undefined) {
        const result = await checkLegacyKeyless(bundles, policy, signatureLayer, payload, digest);
        if (result.ok) return result;
        why = result.why;
      }
    }
    return { ok: false, why };
  }

  /** The policy's keys and log keys, imported once (a key that cannot be imported fails every check of the policy). */
  private keysOf(policy: GatePolicy): Promise<{ keys: PublicKey[]; logKeys?: PublicKey[] }> {
    let imported = this.keys.get(policy.name);
    if (!imported) {
      imported = (async () => {
        const keys = await Promise.all(policy.keys.map((k) => importPublicKey(k.pem, { label: k.label })));
        if (!policy.trustedRoot) return { keys };
        const logKeys = await Promise.all(trustedLogKeys(policy.trustedRoot).map((der) => importPublicKeyDer(der)));
        return { keys, logKeys };
      })();
      this.keys.set(policy.name, imported);
    }
    return imported;
  }

  private decided(name: string, digest: string, policy: GatePolicy | undefined, result: 'allowed' | 'denied' | 'warned' | 'artifact', detail?: string): void {
    this.deps.metrics?.count('outpost_gate_decisions_total', { policy: policy?.name ?? '', result });
    if (result === 'allowed' || result === 'artifact') return;
    this.deps.log?.({ msg: 'signature gate', repository: name, digest, policy: policy?.name, result, detail: detail?.slice(0, 300) });
  }
}

function verdictKey(policy: string, digest: string) {
  return { pk: `verdict#${policy}`, sk: digest };
}

/**
 * A cosign signature, attestation or SBOM artifact, a Sigstore bundle, or the referrers tag
 * schema's index of such artifacts (every entry has an artifact type: an image index's platforms
 * have none): served ungated.
 */
function isSignatureArtifact(m: ParsedManifest): boolean {
  if (m.artifactType && SIGNATURE_ARTIFACT_TYPES.has(m.artifactType)) return true;
  if (m.manifests.length > 0 && m.layers.length === 0) return m.manifests.every((d) => d.artifactType !== undefined && d.platform === undefined);
  return m.layers.length > 0 && m.layers.every((l) => l.mediaType === SIMPLE_SIGNING_MEDIA_TYPE || l.mediaType === ATTESTATION_LAYER);
}
