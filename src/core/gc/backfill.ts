import { MAX_LIST_KEYS } from '../../ports/blob-store.js';
import type { Item, ItemKey, Json } from '../../ports/meta-index.js';
import { parseDigest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.js';
import type { BlobLink } from '../registry/blobs.js';
import { keys, objects } from '../registry/keys.js';
import { namedDigests, tooLarge, type ManifestRecord } from '../registry/manifests.js';
import { allItems } from '../registry/pages.js';
import { readCapped } from '../streams.js';
import { addReference, firstReference, noteCandidate, references, removeReference, type GcPorts } from './references.js';

/**
 * The references of content stored before references existed, made once per store before any
 * collecting run may delete (run.ts). Without them a link or a manifest record written by an
 * older Outpost would hold nothing, and the first run after an unlink elsewhere would delete
 * bytes it names. Upgrade every instance before the first run: an older one still writes links
 * without references.
 *
 *   if get(gc/backfill) is done: return
 *   for each repository in the catalog:
 *     each link without `ref`:    w = addReference(d, link ref); CAS(link -> { size, ref: w })
 *     each record without nonce:  the references of what it names (a fresh nonce), w = its link
 *                                 reference; CAS(record -> { ..., nonce, ref: w })
 *     a CAS that fails: the item changed (deleted, or written again by a writer that makes its own
 *     references); if it is gone, the references just made are taken away at their versions
 *   every object under blobs/ that no reference holds: a candidate since it was written (content
 *   that nothing names, from crashed writes, is collected after the grace)
 *   put(gc/backfill, done)
 *
 * Idempotent and safe beside writers, which make their own references; a crash leaves the
 * marker unwritten, and the next run starts again (what was done is skipped). Reads the whole
 * catalog and lists the whole store: once, not on every run.
 */

const MARKER: ItemKey = { pk: 'gc', sk: 'backfill' };

export interface BackfillReport {
  links: number;
  manifests: number;
  /** Objects under blobs/ that nothing references, noted as candidates. */
  objects: number;
}

/** Makes the missing references, unless a run did already; undefined when it had. */
export async function backfill(ports: GcPorts): Promise<BackfillReport | undefined> {
  if (await ports.index.get(MARKER)) return undefined;
  const report: BackfillReport = { links: 0, manifests: 0, objects: 0 };
  for await (const repository of allItems<Json>(ports.index, keys.reposPartition)) {
    for await (const link of allItems<BlobLink & Json>(ports.index, keys.blobLink(repository.sk, '').pk)) {
      if (link.item.value.ref === undefined && (await backfillLink(ports, repository.sk, link))) report.links++;
    }
    // A record from before references has no link reference (a mirrored one has no nonce, by design).
    for await (const record of allItems<ManifestRecord & Json>(ports.index, keys.manifest(repository.sk, '').pk)) {
      if (record.item.value.ref === undefined && (await backfillRecord(ports, repository.sk, record))) report.manifests++;
    }
  }
  let after: string | undefined;
  for (;;) {
    const page = await ports.store.list('blobs/', { after, limit: MAX_LIST_KEYS });
    for (const object of page.keys) {
      const digest = digestOfKey(object.key);
      // Unreferenced since it was written, as far as anyone can tell; a note already there
      // (a reference removed since) keeps its own time.
      // Only what nothing references: a referenced digest is noted when its last reference goes.
      if (!digest || (await firstReference(ports, digest)) !== undefined) continue;
      if (await noteCandidate(ports, digest, object.lastModified ?? ports.clock.now(), { ifAbsent: true })) report.objects++;
    }
    if (!page.next) break;
    after = page.next;
  }
  await ports.index.put(MARKER, { done: ports.clock.now() });
  return report;
}

async function backfillLink(ports: GcPorts, repository: string, { sk: digest, item: link }: Listed<BlobLink & Json>): Promise<boolean> {
  const ref = references.blobLink(repository);
  const added = await addReference(ports, digest, ref);
  if (!added.held) return false;
  const key = keys.blobLink(repository, digest);
  if ((await ports.index.compareAndSet(key, link.version, { ...(link.value as BlobLink), ref: added.version } as BlobLink & Json)) !== undefined) return true;
  if (!(await ports.index.get(key))) await removeReference(ports, digest, ref, added.version);
  return false;
}

async function backfillRecord(ports: GcPorts, repository: string, { sk: digest, item: record }: Listed<ManifestRecord & Json>): Promise<boolean> {
  const nonce = crypto.randomUUID().replace(/-/g, '').slice(0, 16);
  const object = await ports.store.get(objects.content(parseDigest(digest)));
  const named: Array<[string, number]> = [];
  if (object) {
    const parsed = parseManifest(await readCapped(object.body, MAX_MANIFEST_BYTES, tooLarge), record.value.mediaType);
    if (parsed.ok) {
      for (const d of namedDigests(parsed.manifest)) {
        const added = await addReference(ports, d, references.named(repository, digest, nonce));
        if (added.held) named.push([d, added.version]);
      }
    }
  }
  const link = await addReference(ports, digest, references.manifestLink(repository));
  const key = keys.manifest(repository, digest);
  const value = { ...(record.value as ManifestRecord), nonce, ...(link.held ? { ref: link.version } : {}) } as unknown as Json;
  if ((await ports.index.compareAndSet(key, record.version, value)) !== undefined) return true;
  for (const [d, v] of named) await removeReference(ports, d, references.named(repository, digest, nonce), v);
  // Written again meanwhile by a push, which made its own link reference (this same one, again).
  if (link.held && !(await ports.index.get(key))) await removeReference(ports, digest, references.manifestLink(repository), link.version);
  return false;
}

type Listed<T extends Json> = { sk: string; item: Item<T> };

/** blobs/<algorithm>/<two hex>/<hex> -> <algorithm>:<hex>; anything else (a stray object) is skipped. */
function digestOfKey(key: string): string | undefined {
  const m = /^blobs\/([a-z0-9]+)\/[0-9a-f]{2}\/([0-9a-f]+)$/.exec(key);
  return m ? `${m[1]}:${m[2]}` : undefined;
}

