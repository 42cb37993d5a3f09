/**
 * The Sigstore public-good trusted root (`trustedRoot: sigstore-public-good`): the
 * trusted_root.json that @sigstore/tuf ships as its TUF seed for tuf-repo-cdn.sigstore.dev, the
 * same file cosign fetches, read from the package (bundled into the Worker). It changes when
 * Sigstore rotates a key: upgrading @sigstore/tuf brings the new one, or name a trusted_root.json
 * file instead.
 */
import seeds from '@sigstore/tuf/seeds.json' with { type: 'json' };

const REPOSITORY = 'https://tuf-repo-cdn.sigstore.dev';

export function publicGoodTrustedRoot(): string {
  const encoded = (seeds as Record<string, { targets?: Record<string, string> }>)[REPOSITORY]?.targets?.['trusted_root.json'];
  if (!encoded) throw new Error('@sigstore/tuf no longer ships the public-good trusted_root.json');
  return new TextDecoder().decode(Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0)));
}
