import type { Clock } from '../../ports/clock.js';
import type { BundleVerifier } from '../../ports/bundle-verifier.js';
import type { Json, MetaIndex } from '../../ports/meta-index.js';
import { messageOf, OciError } from '../errors.js';
import { readCapped } from '../streams.js';
import { matchesAny } from '../glob.js';
import type { Metrics } from '../metrics.js';
import { TtlCache } from '../mirror/ttl-cache.js';
import { parseDigest } from '../oci/digest.js';
import { parseManifest, type ParsedManifest } from '../oci/manifest.js';
import { BUNDLE_MEDIA_TYPES, checkAttachedBundles, checkLegacyKeyless, type KeylessIdentity } from './bundles.js';
import { importPublicKey, importPublicKeyDer, type PublicKey } from './keys.js';
import { CERTIFICATE_ANNOTATION, MAX_PAYLOAD_BYTES, SIMPLE_SIGNING_MEDIA_TYPE, verifySimpleSigning, type SignatureLayer } from './simple-signing.js';
import { trustedLogKeys } from './trusted-root.js';
import { isJsonObject, parseJsonBytes, toHex } from './encoding.js';

/**
 * The signature gate: in a repository that a policy names, a manifest is served only when it
 * satisfies every such policy (a cosign signature by one of the policy's keys or keyless
 * identities, found as cosign finds it), checked on every manifest GET and HEAD, by tag or digest, hosted or mirrored.
 *
 *   check(name, digest):
 *     policies = those whose globs match name, mode not off      none -> served
 *     a signature artifact (by content: isSignatureArtifact)       -> served (artifacts are ungated)
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
  /** In-toto predicate types a DSSE bundle may carry (bundles.ts BundlePolicy); cosign's signature type when absent. */
  predicateTypes?: string[];
  /** The children of a verified index are served (cosign signs only the index). */
  children: boolean;
  verdictTtlMs: number;
}

/** Where a gated manifest and its signatures are read from: its repository, hosted or mirrored. */
export interface SignatureSource {
  /** The manifest being served, and the media type it is served with (the gate reads it as a client would). */
  manifest(): Promise<{ bytes: Uint8Array; mediaType: string }>;
  /** The manifest under `tag` in the same repository; undefined when there is none. */
  tagged(tag: string): Promise<Uint8Array | undefined>;
  /** A blob of the repository, at most `limit` bytes; undefined when absent or longer. */
  blob(digest: string, limit: number): Promise<Uint8Array | undefined>;
  /** The referrers image index of the served digest (only `artifactType`'s when given); undefined when there is none. */
  referrers(artifactType: string | undefined): Promise<Uint8Array | undefined>;
  /** The manifest `digest` of the same repository (a referrer); undefined when there is none. */
  manifestAt(digest: string): Promise<Uint8Array | undefined>;
}

/**
 * A blob a SignatureSource hands the gate: its bytes when it is at most `limit` long (the body is
 * not read otherwise, and is cancelled), undefined when absent or longer. The one reading both
 * sources (hosted, mirrored) share.
 */
export async function boundedBlob(read: { size: number; body: ReadableStream<Uint8Array> } | undefined, limit: number): Promise<Uint8Array | undefined> {
  if (!read) return undefined;
  if (read.size > limit) {
    await read.body.cancel();
    return undefined;
  }
  return readCapped(read.body, limit, () => new OciError('BLOB_TOO_LARGE', `a signature blob is larger than ${limit} bytes`));
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

/** The policies that a served manifest met, and those whose warn mode let it through. */
export interface GateDecision {
  allowed: string[];
  warned: string[];
}

const ATTESTATION_LAYER = 'application/vnd.dsse.envelope.v1+json';
/** Layers a signature artifact may have: none of them a runtime unpacks. */
const SIGNATURE_LAYER_TYPES: ReadonlySet<string> = new Set([SIMPLE_SIGNING_MEDIA_TYPE, ATTESTATION_LAYER, ...BUNDLE_MEDIA_TYPES]);

/** A signature manifest with more layers than this is read only this far. */
export const MAX_SIGNATURE_LAYERS = 32;
/** Child verdicts written at once (index writes in flight for one request). */
const CHILD_PUT_CONCURRENCY = 16;
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
  async check(name: string, digest: string, source: SignatureSource): Promise<GateDecision> {
    const policies = this.policiesFor(name);
    const warned: string[] = [];
    const allowed: string[] = [];
    if (policies.length === 0) return { warned, allowed };
    // Several policies verifying one digest read the same signatures: once each, not once per policy.
    if (policies.length > 1) source = onceEach(source);
    // A cosign tag (sha256-<hex>.sig, .att, .sbom) is served ungated only if what it names is a
    // signature artifact: anyone who can tag could otherwise name any image so (verify() tells).
    for (const policy of policies) {
      let verdict: Verdict;
      try {
        verdict = await this.verdict(policy, digest, source);
      } catch (err) {
        // A store, index or upstream failure while verifying: an enforced policy fails the
        // request (5xx, retried by clients); a warn-mode one serves and says why.
        if (policy.mode !== 'warn') throw err;
        verdict = { ok: false, why: `could not be verified: ${messageOf(err)}` };
      }
      if (verdict.ok) {
        this.decided(name, digest, policy, verdict.how === 'artifact' ? 'artifact' : 'allowed', verdict.how);
        allowed.push(policy.name);
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
    return { warned, allowed };
  }

  private policiesFor(name: string): GatePolicy[] {
    return this.policies.filter((p) => p.mode !== 'off' && matchesAny(p.repositories, name));
  }

  private async verdict(policy: GatePolicy, digest: string, source: SignatureSource): Promise<Verdict> {
    const id = await policyId(policy);
    const memoryKey = `${id}\n${digest}`;
    const remembered = this.verdicts.get(memoryKey);
    if (remembered) return remembered;
    const key = verdictKey(id, digest);
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
      // In parallel, CHILD_PUT_CONCURRENCY at a time: an index of many platforms is not a round trip per child.
      const vouch = children.slice(0, MAX_CHILDREN);
      for (let i = 0; i < vouch.length; i += CHILD_PUT_CONCURRENCY) {
        await Promise.all(
          vouch.slice(i, i + CHILD_PUT_CONCURRENCY).map(async (child) => {
            await this.deps.index.put(verdictKey(id, child), vouched as Verdict & Json, { expiresAt });
            this.remember(policy, `${id}\n${child}`, vouched, expiresAt);
          }),
        );
      }
    }
    return verdict;
  }

  private remember(policy: GatePolicy, key: string, verdict: Verdict, expiresAt: number | undefined): void {
    const ttl = (expiresAt ?? this.deps.clock.now() + policy.verdictTtlMs) - this.deps.clock.now();
    if (ttl > 0) this.verdicts.set(key, verdict, ttl, 1);
  }

  private async verify(policy: GatePolicy, digest: string, source: SignatureSource): Promise<{ verdict: Verdict; children: string[] }> {
    const { bytes, mediaType } = await source.manifest();
    // Parsed as the type it is served with: bytes that read as an index under another type must
    // not pass for one here while a client runs them as an image.
    const manifest = parseManifest(bytes, mediaType);
    const children = manifest.ok ? manifest.manifest.manifests.map((d) => d.digest) : [];
    if (manifest.ok && (await isSignatureArtifact(manifest.manifest, source))) return { verdict: { ok: true, how: 'artifact' }, children: [] };
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

/**
 * A policy's name and a hash of what it trusts: a verdict made under other keys, identities, root
 * or log requirement (a key rotated or revoked, an instance still on the old configuration) is
 * never taken for one under these.
 */
const policyIds = new WeakMap<GatePolicy, Promise<string>>();
function policyId(policy: GatePolicy): Promise<string> {
  let id = policyIds.get(policy);
  if (!id) {
    const trust = JSON.stringify([policy.keys.map((k) => k.pem), policy.keyless ?? [], policy.trustedRoot ?? '', policy.requireTransparencyLog, policy.children, policy.predicateTypes ?? []], (_, v: unknown) =>
      v instanceof RegExp ? v.source : v,
    );
    id = crypto.subtle.digest('SHA-256', new TextEncoder().encode(trust)).then((h) => `${policy.name}#${toHex(new Uint8Array(h).slice(0, 8))}`);
    policyIds.set(policy, id);
  }
  return id;
}

/** A source that reads each thing once however often it is asked (one request's reads; failures too). */
function onceEach(source: SignatureSource): SignatureSource {
  const read = new Map<string, Promise<unknown>>();
  const once = <T>(key: string, get: () => Promise<T>): Promise<T> => {
    let p = read.get(key);
    if (!p) read.set(key, (p = get()));
    return p as Promise<T>;
  };
  return {
    manifest: () => once('manifest', () => source.manifest()),
    tagged: (tag) => once(`tagged\n${tag}`, () => source.tagged(tag)),
    blob: (digest, limit) => once(`blob\n${digest}\n${limit}`, () => source.blob(digest, limit)),
    referrers: (artifactType) => once(`referrers\n${artifactType ?? ''}`, () => source.referrers(artifactType)),
    manifestAt: (digest) => once(`manifestAt\n${digest}`, () => source.manifestAt(digest)),
  };
}

function verdictKey(policy: string, digest: string) {
  return { pk: `verdict#${policy}`, sk: digest };
}

/**
 * Whether the manifest is a signature artifact, served ungated: judged by content, never by a
 * tag's name or an artifactType alone. Either the referrers tag schema's index of artifacts
 * (every entry with an artifact type and no platform; each entry is gated on its own when
 * fetched), or a manifest whose layers (at most MAX_SIGNATURE_LAYERS, each at most
 * MAX_PAYLOAD_BYTES) are all simple-signing payloads, DSSE envelopes or Sigstore bundles by media
 * type and are all JSON objects when read: nothing a runtime can unpack and run. Cosign's legacy
 * `.sig` manifests carry an image config, so the config is not what decides.
 */
async function isSignatureArtifact(m: ParsedManifest, source: SignatureSource): Promise<boolean> {
  if (m.manifests.length > 0) return m.layers.length === 0 && m.manifests.every((d) => d.artifactType !== undefined && d.platform === undefined);
  if (m.layers.length === 0 || m.layers.length > MAX_SIGNATURE_LAYERS) return false;
  if (!m.layers.every((l) => SIGNATURE_LAYER_TYPES.has(l.mediaType) && l.size <= MAX_PAYLOAD_BYTES)) return false;
  for (const layer of m.layers) {
    const bytes = await source.blob(layer.digest, MAX_PAYLOAD_BYTES);
    if (!bytes || !isJsonObject(parseJsonBytes(bytes))) return false;
  }
  return true;
}


