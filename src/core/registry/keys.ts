import type { ItemKey } from '../../ports/meta-index.js';
import type { Digest } from '../oci/digest.js';

/**
 * Where registry state lives: the key layout of the MetaIndex and of the BlobStore, in one
 * place. Any adapter stores these as opaque strings.
 *
 * MetaIndex (pk / sk -> value):
 *   repos                      / <name>          -> { created }                catalog
 *   blob#<name>                / <digest>        -> { size }                   blob linked into a repository
 *   manifest#<name>            / <digest>        -> ManifestRecord             manifest present in a repository
 *   tag#<name>                 / <tag>           -> { digest }                 tag -> manifest digest
 *   referrer#<name>#<subject>  / <digest>        -> Descriptor                 manifests whose subject is <subject>
 *   upload                     / <id>            -> UploadState (expires)      blob upload in progress
 *   refcount                   / <digest>        -> number                     repositories linking the blob (GC)
 *
 * BlobStore:
 *   blobs/<algorithm>/<first two hex>/<hex>        verified content, blobs and manifests alike
 *   uploads/<id>/<part>-<nonce>                    bytes of one upload request, not yet verified
 */
export const keys = {
  repo: (name: string): ItemKey => ({ pk: 'repos', sk: name }),
  reposPartition: 'repos',
  blobLink: (name: string, digest: string): ItemKey => ({ pk: `blob#${name}`, sk: digest }),
  manifest: (name: string, digest: string): ItemKey => ({ pk: `manifest#${name}`, sk: digest }),
  tag: (name: string, tag: string): ItemKey => ({ pk: `tag#${name}`, sk: tag }),
  tagPartition: (name: string) => `tag#${name}`,
  referrer: (name: string, subject: string, digest: string): ItemKey => ({ pk: `referrer#${name}#${subject}`, sk: digest }),
  referrerPartition: (name: string, subject: string) => `referrer#${name}#${subject}`,
  upload: (id: string): ItemKey => ({ pk: 'upload', sk: id }),
  refcount: (digest: string): ItemKey => ({ pk: 'refcount', sk: digest }),
};

export const objects = {
  content: (digest: Digest) => `blobs/${digest.algorithm}/${digest.encoded.slice(0, 2)}/${digest.encoded}`,
  uploadPart: (id: string, part: number) => `uploads/${id}/${part}-${crypto.randomUUID()}`,
};
