import { decodeBase64, isJsonObject } from './encoding.js';

/**
 * The transparency logs' public keys of a Sigstore trusted root (trusted_root.json, the
 * `application/vnd.dev.sigstore.trustedroot+json` format): `tlogs[].publicKey.rawBytes`, DER
 * SubjectPublicKeyInfo in base64. Key-based cosign signatures carry a Rekor SET, which one of
 * these keys must have signed (rekor-set.ts). A log whose key is not valid yet, or not any more,
 * by its `validFor` window is still listed: the SET's own time is what cosign checks.
 */

/** A trusted root is a few tens of kilobytes; this bounds what is parsed at start-up. */
export const MAX_TRUSTED_ROOT_CHARS = 1024 * 1024;
const MAX_LOGS = 64;
const MAX_KEY_CHARS = 16 * 1024;

export class TrustedRootError extends Error {}

/** What a trusted root holds that a policy's checks depend on. */
export interface TrustedRootContents {
  /**
   * The DER keys of its transparency logs, none for a root of a Sigstore without a log (a
   * private Fulcio and timestamp authority, `cosign sign --tlog-upload=false`).
   */
  readonly logKeys: Uint8Array[];
  /** It lists a certificate authority (Fulcio), which keyless signatures chain to. */
  readonly certificateAuthorities: boolean;
  /** It lists a timestamp authority (RFC 3161), whose timestamps can give a keyless signature its signing time. */
  readonly timestampAuthorities: boolean;
}

/** The root parsed once; throws TrustedRootError naming what is wrong. */
export function readTrustedRootContents(text: string): TrustedRootContents {
  if (text.length > MAX_TRUSTED_ROOT_CHARS) throw new TrustedRootError(`a trusted root is at most ${MAX_TRUSTED_ROOT_CHARS} characters`);
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch {
    throw new TrustedRootError('the trusted root is not JSON');
  }
  if (!isJsonObject(root) || !Array.isArray(root.tlogs)) throw new TrustedRootError('the trusted root has no tlogs list');
  const logKeys: Uint8Array[] = [];
  for (const log of root.tlogs.slice(0, MAX_LOGS)) {
    const raw = isJsonObject(log) && isJsonObject(log.publicKey) ? log.publicKey.rawBytes : undefined;
    const der = typeof raw === 'string' ? decodeBase64(raw, MAX_KEY_CHARS) : undefined;
    if (!der) throw new TrustedRootError('a transparency log of the trusted root has no readable publicKey.rawBytes');
    logKeys.push(der);
  }
  const listsSome = (key: string) => Array.isArray(root[key]) && root[key].length > 0;
  return { logKeys, certificateAuthorities: listsSome('certificateAuthorities'), timestampAuthorities: listsSome('timestampAuthorities') };
}

/** The DER keys of the root's transparency logs (readTrustedRootContents). */
export function trustedLogKeys(text: string): Uint8Array[] {
  return readTrustedRootContents(text).logKeys;
}
