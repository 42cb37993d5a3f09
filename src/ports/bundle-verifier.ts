/**
 * Verification of one Sigstore bundle (sigstore/protobuf-specs bundle.proto, media types v0.1 to
 * v0.3): the signing key or certificate, the certificate's chain to a Fulcio CA of the trusted
 * root valid at the signing time, its SCTs, the transparency-log entries (SET or inclusion proof,
 * and that the entry is this signature), RFC 3161 timestamps, and the signature over the artifact
 * (message signature) or over the DSSE pre-authentication encoding. Core cannot verify X.509 on
 * its own, so the entry point hands one in (adapters/sigstore over @sigstore/verify).
 *
 * What it does not decide: whose identity is acceptable and what the bundle says (the in-toto
 * statement, the digest signed); the gate checks those against its policy (core/gate/bundles.ts).
 */

export interface BundleRequest {
  /** The bundle, parsed from its JSON. */
  readonly bundle: unknown;
  /** The bytes a message signature is over (a simple-signing payload, a manifest); DSSE bundles carry theirs. */
  readonly artifact?: Uint8Array;
  /** A trusted_root.json's text (Fulcio CAs, Rekor and CT logs, timestamp authorities); undefined: none, so no log entry can verify. */
  readonly trustedRoot: string | undefined;
  /** PEM public keys that may have made a bundle whose verification material is a public key. */
  readonly keys: ReadonlyArray<{ readonly label: string; readonly pem: string }>;
  /** At least one transparency-log entry must verify; otherwise entries are checked only when there is a root. */
  readonly requireTransparencyLog: boolean;
}

export type BundleSigner =
  | { readonly kind: 'key'; readonly label: string }
  /** A Fulcio certificate: its SAN, and its issuer (extension 1.3.6.1.4.1.57264.1.8, else .1.1). */
  | { readonly kind: 'certificate'; readonly subject: string | undefined; readonly issuer: string | undefined };

export type BundleVerdict = { readonly ok: true; readonly signer: BundleSigner } | { readonly ok: false; readonly detail: string };

export interface BundleVerifier {
  /** Never throws for a bad bundle: a refusal is a verdict with a short reason. */
  verify(request: BundleRequest): Promise<BundleVerdict>;
}
