import type { ItemKey } from '../../ports/meta-index.js';
import type { Digest } from '../oci/digest.js';

/**
 * Where registry state lives: the key layout of the MetaIndex and of the BlobStore, in one
 * place. Any adapter stores these as opaque strings.
 *
 * MetaIndex (pk / sk -> value):
 *   repos                      / <name>          -> { created }                catalog
 *   blob#<name>                / <digest>        -> BlobLink { size, ref }     blob linked into a repository (ref: its reference's version)
 *   manifest#<name>            / <digest>        -> ManifestRecord             manifest present in a repository (with nonce, ref)
 *   tag#<name>                 / <tag>           -> { digest, at }             tag -> manifest digest (hosted: when pushed)
 *   referrer#<name>#<subject>  / <digest>        -> Descriptor                 manifests whose subject is <subject>
 *   upload                     / <id>            -> UploadState (expires)      blob upload in progress (core/registry/uploads.ts)
 *   upload#<id>                / <slot>          -> UploadSlot (expires)       one chunk of the upload, or the claim of its commit;
 *                                                                              <slot> is an 8-digit zero-padded chunk number
 *   ref#<digest>               / <kind>:<repo>:<from> -> { at }             one reference holding the content (core/gc/references.ts)
 *   ref#<digest>               / ~unreferenced   -> { at }                     when its last reference went
 *   content                    / <digest>        -> ContentState               live | deleting | deleted (garbage collection)
 *   gc#candidates#<bucket>     / <digest>        -> { since }                  content that may be unreferenced (5-minute buckets)
 *   gc#buckets                 / <bucket>        -> {}                         the buckets that may hold candidates
 *   gc                         / backfill        -> { done }                   references of older content made (core/gc/backfill.ts)
 *   pulled#<name>              / <digest>        -> { at }                     last pull of a mirrored item (core/mirror/retention.ts)
 *   untagged#<name>            / <digest>        -> { since }                  a hosted manifest found untagged (core/registry/retention.ts)
 *   verdict#<policy>#<hash>    / <digest>        -> Verdict (expires)          the signature gate's verdict (core/gate/gate.ts)
 *   fill                       / <digest>        -> lease + FillState          one upstream download of a blob (core/mirror/fills.ts)
 *   mfetch                     / <name>:<ref>    -> lease + { error? }         one upstream fetch of a manifest (core/mirror/manifests.ts)
 *   vouch#<name>               / <digest>        -> { size }                   the upstream named this blob for the mirrored repository
 *
 * BlobStore:
 *   blobs/<algorithm>/<first two hex>/<hex>        verified content, blobs and manifests alike
 *   uploads/<id>/<slot>-<nonce>                    bytes of one chunk (PATCH), not yet verified; the nonce is named by
 *                                                  the slot's item, so a racing request's object is never taken for it
 *   fills/<algorithm>/<hex>/<offset>-<token>       bytes of one blob fill, not yet verified (16-digit zero-padded
 *                                                  decimals, so keys sort by offset, and a holder's token keeps a
 *                                                  stale holder from overwriting its successor's part)
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
  uploadSlot: (id: string, slot: number): ItemKey => ({ pk: `upload#${id}`, sk: String(slot).padStart(8, '0') }),
  uploadSlots: (id: string) => `upload#${id}`,
  fill: (digest: string): ItemKey => ({ pk: 'fill', sk: digest }),
  manifestFetch: (name: string, reference: string): ItemKey => ({ pk: 'mfetch', sk: `${name}:${reference}` }),
  vouch: (name: string, digest: string): ItemKey => ({ pk: `vouch#${name}`, sk: digest }),
};

export const objects = {
  content: (digest: Digest) => `blobs/${digest.algorithm}/${digest.encoded.slice(0, 2)}/${digest.encoded}`,
  uploadsPrefix: 'uploads/',
  uploadPart: (id: string, slot: number, nonce: string) => `uploads/${id}/${slot}-${nonce}`,
  fillPrefix: (digest: Digest) => `fills/${digest.algorithm}/${digest.encoded}/`,
  fillPart: (digest: Digest, offset: number, token: number) =>
    `fills/${digest.algorithm}/${digest.encoded}/${String(offset).padStart(16, '0')}-${String(token).padStart(16, '0')}`,
};
