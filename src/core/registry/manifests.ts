import { OciError } from '../errors.js';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, manifestError, parseManifest, type Descriptor, type ParsedManifest } from '../oci/manifest.js';
import { NONDISTRIBUTABLE_LAYER_TYPES } from '../oci/media-types.js';
import type { Reference } from '../oci/reference.js';
import { readCapped, streamOf, type ByteStream } from '../streams.js';
import type { Json } from '../../ports/meta-index.js';
import { addReference, noteCandidate, references, removeReference } from '../gc/references.js';
import type { Blobs } from './blobs.js';
import { gcPorts, storeContent } from './content.js';
import type { Ctx } from './context.js';
import { keys, objects } from './keys.js';
import { indexedAnnotations, type ReferrerEntry } from './referrers.js';
import type { Tags } from './tags.js';
import { immutableTagError } from './immutable-tags.js';

/**
 * Manifests of a repository (spec.md#pushing-manifests, #pulling-manifests, #deleting-manifests).
 *
 * Put protocol (single-item writes, ordered so that no reader ever follows a pointer to
 * something missing):
 *   validate; every referenced blob / child manifest must be in the repository
 *   store bytes under their digest (verified)  ->  put(manifest#repo/digest, record)
 *   -> [put(referrer#repo#subject/digest, descriptor)]  ->  [put(tag#repo/tag, digest)]
 * Delete by digest removes the record (compare-and-delete on the version it read), then the
 * tags that point at it and its referrer entry; the bytes stay for GC, since other
 * repositories may hold the same manifest. Between the two steps a tag may point at a deleted
 * manifest, which readers treat as a miss. A PUT racing the tag clean-up can lose its tag
 * (the delete saw it pointing at the digest being deleted); the record itself survives.
 */

export interface ManifestRecord {
  digest: string;
  mediaType: string;
  size: number;
  /** Made by the record's first write: names the references to what it names (core/gc/references.ts). */
  nonce: string;
  /** The version of its link reference. Both are absent on records written before references, until the backfill. */
  ref?: number;
  artifactType?: string;
  subject?: string;
  /** Only when small enough for an index item (referrers.ts MAX_INDEXED_ANNOTATION_BYTES)... */
  annotations?: Record<string, string>;
  /** ...else this, and the annotations are in the manifest itself. */
  largeAnnotations?: true;
}

export interface ManifestRead {
  record: ManifestRecord;
  body: ByteStream;
}

/** How many existence checks (and references) a manifest PUT runs at once. */
const REFERENCE_CHECK_CONCURRENCY = 16;

/** Rounds of read-then-write of one record before giving up (each lost round is another writer's win). */
const RECORD_ROUNDS = 4;

/** The record changed between its read and its write (record's retry loop). */
class RecordRaced extends Error {}

/** Every digest a manifest names and the registry holds: config, layers, children; once each. */
export function namedDigests(manifest: ParsedManifest): string[] {
  const layers = manifest.layers.filter((d) => !(d.urls && d.urls.length > 0 && NONDISTRIBUTABLE_LAYER_TYPES.has(d.mediaType)));
  return [...new Set([...(manifest.config ? [manifest.config] : []), ...layers, ...manifest.manifests].map((d) => d.digest))];
}

function newNonce(): string {
  return crypto.randomUUID().replace(/-/g, '').slice(0, 16);
}

export class Manifests {
  constructor(
    private readonly ctx: Ctx,
    private readonly blobs: Blobs,
    private readonly tags: Tags,
  ) {}

  /** Resolves a reference to the manifest record; a miss is undefined. */
  async resolve(name: string, reference: Reference): Promise<ManifestRecord | undefined> {
    const digest = reference.kind === 'digest' ? reference.digest.value : await this.tags.resolve(name, reference.tag);
    if (!digest) return undefined;
    return (await this.ctx.index.get<ManifestRecord & Json>(keys.manifest(name, digest)))?.value;
  }

  async stat(name: string, reference: Reference): Promise<ManifestRecord> {
    const record = await this.resolve(name, reference);
    if (!record) throw unknown(reference);
    return record;
  }

  async read(name: string, reference: Reference): Promise<ManifestRead> {
    const record = await this.stat(name, reference);
    const object = await this.ctx.store.get(objects.content(parseDigest(record.digest)));
    if (!object) throw unknown(reference);
    return { record, body: object.body };
  }

  async put(name: string, reference: Reference, bytes: Uint8Array, contentType: string | undefined): Promise<ManifestRecord> {
    if (bytes.byteLength > MAX_MANIFEST_BYTES) throw tooLarge();
    const parsed = parseManifest(bytes, contentType);
    if (!parsed.ok) throw manifestError(parsed);
    const manifest = parsed.manifest;
    const digest = this.digestFor(reference, bytes);
    const immutable = reference.kind === 'tag' ? this.ctx.immutable.rule(name, reference.tag) : undefined;
    // Refused before anything is stored when the tag already names another manifest.
    if (immutable && reference.kind === 'tag') {
      const current = await this.tags.resolve(name, reference.tag);
      if (current !== undefined && current !== digest.value) throw immutableTagError(immutable, name, reference.tag, 'moved');
    }
    await this.checkReferences(name, manifest);

    const record = await this.record(name, digest, bytes, manifest.mediaType, manifest, 'first');
    if (reference.kind === 'tag') {
      if (!immutable) await this.tags.set(name, reference.tag, digest.value);
      else if (!(await this.tags.create(name, reference.tag, digest.value)) && (await this.tags.resolve(name, reference.tag)) !== digest.value) {
        throw immutableTagError(immutable, name, reference.tag, 'moved');
      }
    }
    return record;
  }

  /**
   * The write path of mirrored manifests: bytes exactly as the upstream served them (verified
   * against `digest` before they become visible) with the media type it sent, and none of the
   * reference checks of a push, since a mirror fetches only what clients ask for: the blobs and
   * child manifests it names arrive later, or never. Tags are the mirror's business.
   */
  async putMirrored(name: string, digest: Digest, bytes: Uint8Array, mediaType: string, manifest: ParsedManifest): Promise<ManifestRecord> {
    if (bytes.byteLength > MAX_MANIFEST_BYTES) throw tooLarge();
    return this.record(name, digest, bytes, mediaType, manifest, 'upstream');
  }

  /**
   * Stores the bytes, then the record, then the referrer entry (the put protocol above). A
   * push never changes the record of a digest already in the repository: the bytes are the
   * same, so only the media type could differ (a body without `mediaType` pushed again with
   * another Content-Type), and the type a digest is served with is fixed by its first push. Of
   * two racing first pushes exactly one type wins and the other push is refused. A mirrored
   * manifest takes whatever its upstream says now.
   */
  private async record(
    name: string,
    digest: Digest,
    bytes: Uint8Array,
    mediaType: string,
    manifest: ParsedManifest,
    type: 'first' | 'upstream',
  ): Promise<ManifestRecord> {
    // The size first: a store's runtime may take over (detach) the buffer it is handed.
    const size = bytes.byteLength;
    const record: ManifestRecord = { digest: digest.value, mediaType, size, nonce: '' };
    if (manifest.artifactType) record.artifactType = manifest.artifactType;
    if (manifest.subject) record.subject = manifest.subject.digest;
    Object.assign(record, indexedAnnotations(manifest.annotations));
    const key = keys.manifest(name, digest.value);
    const named = namedDigests(manifest);
    for (let round = 0; round < RECORD_ROUNDS; round++) {
      const existing = await this.ctx.index.get<ManifestRecord & Json>(key);
      if (existing && type === 'first' && existing.value.mediaType !== mediaType) throw typeFixed(digest.value, existing.value.mediaType, mediaType);
      // A record written again keeps its nonce: the references its first write made stay its own.
      // A mirrored manifest names nothing (no nonce): what it names is fetched, kept and evicted
      // on its own (core/mirror/retention.ts), and refilled from the upstream when missing.
      record.nonce = type === 'upstream' ? '' : existing?.value.nonce || newNonce();
      const made = type === 'upstream' ? new Map<string, number>() : await this.holdNamed(name, digest.value, record.nonce, named);
      const written = await storeContent(
        this.ctx,
        digest,
        // Stored again in every round, each inside its own hold: between two holds the bytes
        // are held by nothing. A copy each time, since a store's runtime may detach what it is handed.
        () => this.blobs.store(digest, streamOf(bytes.slice()), size),
        async () => {
          const link = await addReference(gcPorts(this.ctx), digest.value, references.manifestLink(name));
          if (!link.held) throw new Error(`the reference to ${digest.value} was refused inside a writer's hold`);
          record.ref = link.version;
          // Written again (a new version) even when unchanged: a DELETE that read the record before
          // this push then fails its compare-and-delete, and the manifest this push answers 201 for stays.
          const value = record as unknown as Json;
          const ok = existing ? (await this.ctx.index.compareAndSet(key, existing.version, value)) !== undefined : await this.ctx.index.putIfAbsent(key, value);
          if (!ok) throw new RecordRaced();
        },
      ).then(
        () => true,
        async (err: unknown) => {
          if (err instanceof RecordRaced) return false;
          // Refused or failed (content being collected, a store or index fault): the references
          // this round made are nobody's, unless a record with this nonce stands on them.
          const now = await this.ctx.index.get<ManifestRecord & Json>(key).catch(() => undefined);
          if (now?.value.nonce !== record.nonce) await this.releaseNamed(name, digest.value, record.nonce, made).catch(() => undefined);
          throw err;
        },
      );
      if (written) break;
      // Another write of the record came first. One with the same nonce stands on these same
      // references; otherwise (deleted, or made anew) the ones this round made are nobody's.
      const now = await this.ctx.index.get<ManifestRecord & Json>(key);
      if (now?.value.nonce !== record.nonce) await this.releaseNamed(name, digest.value, record.nonce, made);
      if (round === RECORD_ROUNDS - 1) throw new Error(`the record of ${digest.value} in ${name} kept changing through ${RECORD_ROUNDS} rounds`);
    }
    if (manifest.subject) {
      await this.ctx.index.put(keys.referrer(name, manifest.subject.digest, digest.value), referrerDescriptor(record) as unknown as Json);
    }
    await this.blobs.noteRepository(name);
    return record;
  }

  /**
   * The references of the record (`nonce`) to each digest it names. A push names only content
   * its existence checks found, so a refusal means it was collected meanwhile:
   * MANIFEST_BLOB_UNKNOWN, as if the check had missed it.
   */
  private async holdNamed(name: string, manifest: string, nonce: string, named: string[]): Promise<Map<string, number>> {
    const made = new Map<string, number>();
    const ports = gcPorts(this.ctx);
    let refused: string | undefined;
    for (let i = 0; i < named.length; i += REFERENCE_CHECK_CONCURRENCY) {
      await Promise.all(
        named.slice(i, i + REFERENCE_CHECK_CONCURRENCY).map(async (d) => {
          const added = await addReference(ports, d, references.named(name, manifest, nonce));
          if (added.held) made.set(d, added.version);
          else refused ??= d;
        }),
      );
    }
    if (refused) {
      await this.releaseNamed(name, manifest, nonce, made);
      throw new OciError('MANIFEST_BLOB_UNKNOWN', `blob ${refused} was deleted while this manifest was pushed; push it again`, { digest: refused });
    }
    return made;
  }

  /** Takes away references this write made (each at the version it made), or all of the nonce's. */
  private async releaseNamed(name: string, manifest: string, nonce: string, made: Map<string, number | undefined>): Promise<void> {
    const ports = gcPorts(this.ctx);
    const list = [...made];
    for (let i = 0; i < list.length; i += REFERENCE_CHECK_CONCURRENCY) {
      await Promise.all(list.slice(i, i + REFERENCE_CHECK_CONCURRENCY).map(([d, v]) => removeReference(ports, d, references.named(name, manifest, nonce), v)));
    }
  }

  /**
   * DELETE by digest removes the manifest (and its tags); DELETE by tag removes only the tag.
   * With `version`, by digest only if the record is still the one at that version (retention).
   */
  async delete(name: string, reference: Reference, version?: number): Promise<void> {
    const { immutable } = this.ctx;
    if (reference.kind === 'tag') {
      const rule = immutable.rule(name, reference.tag);
      // A covered tag is never deleted: not even one a push creates between a check and a delete.
      if (rule) throw (await this.tags.resolve(name, reference.tag)) !== undefined ? immutableTagError(rule, name, reference.tag, 'deleted') : unknown(reference);
      if (!(await this.tags.delete(name, reference.tag))) throw unknown(reference);
      return;
    }
    const digest = reference.digest.value;
    if (immutable.covers(name)) {
      // Deleting by digest takes the manifest's tags with it.
      for (const tag of await this.tags.pointingAt(name, digest)) {
        const rule = immutable.rule(name, tag);
        if (rule) throw immutableTagError(rule, name, tag, 'deleted');
      }
    }
    const item = await this.ctx.index.get<ManifestRecord & Json>(keys.manifest(name, digest));
    // The record goes first and only in the version read: a PUT of the same manifest that
    // lands meanwhile wins, and its tags and referrer entry stay.
    if (!item || (version !== undefined && item.version !== version)) throw unknown(reference);
    // What the record names, and the record's own digest, are noted first: a crash before its
    // references are all taken away leaves them dangling, and the runs that visit these
    // candidates remove them (collect.ts).
    const named = await this.namedBy(item.value);
    const ports = gcPorts(this.ctx);
    for (let i = 0; i < named.length; i += REFERENCE_CHECK_CONCURRENCY) {
      await Promise.all(named.slice(i, i + REFERENCE_CHECK_CONCURRENCY).map((d) => noteCandidate(ports, d)));
    }
    await noteCandidate(ports, digest);
    if (!(await this.ctx.index.delete(keys.manifest(name, digest), item.version))) throw unknown(reference);
    // An immutable tag that a push created since the check above stays (immutable-tags.ts).
    await this.tags.deletePointingAt(name, digest, (tag) => immutable.rule(name, tag) !== undefined);
    if (item.value.subject) await this.ctx.index.delete(keys.referrer(name, item.value.subject, digest));
    await this.releaseRecord(name, item.value, named);
  }

  /** The digests whose references a record's nonce made: what its bytes name (none for a mirrored or an old record). */
  private async namedBy(record: ManifestRecord): Promise<string[]> {
    if (!record.nonce || record.ref === undefined) return [];
    const object = await this.ctx.store.get(objects.content(parseDigest(record.digest)));
    if (!object) return [];
    const parsed = parseManifest(await readCapped(object.body, MAX_MANIFEST_BYTES, tooLarge), record.mediaType);
    return parsed.ok ? namedDigests(parsed.manifest) : [];
  }

  /**
   * Takes away the references a deleted record stood on: those its nonce made to what it names
   * (`named`, read from its bytes before the delete), then its link. A PUT that read the record
   * before the delete and made some of them again finds the record gone and takes its own away
   * (record). A crash in between leaves dangling references on noted candidates: bytes kept
   * until a run repairs them, never lost.
   */
  private async releaseRecord(name: string, record: ManifestRecord, named: string[]): Promise<void> {
    // A record from before references stands on none (the backfill adds them); a mirrored one names nothing.
    if (record.ref === undefined) return;
    if (record.nonce) await this.releaseNamed(name, record.digest, record.nonce, new Map(named.map((x) => [x, undefined])));
    await removeReference(gcPorts(this.ctx), record.digest, references.manifestLink(name), record.ref);
  }

  private digestFor(reference: Reference, bytes: Uint8Array): Digest {
    if (reference.kind === 'tag') return digestOf(this.ctx.hash, 'sha256', bytes);
    const computed = digestOf(this.ctx.hash, reference.digest.algorithm, bytes);
    if (computed.value !== reference.digest.value) {
      throw new OciError('DIGEST_INVALID', 'manifest digest in the URL does not match its content', {
        expected: reference.digest.value,
        computed: computed.value,
      });
    }
    return computed;
  }

  /** Every blob an image manifest names and every manifest an index names must be in the repository. */
  private async checkReferences(name: string, manifest: ParsedManifest): Promise<void> {
    const blobs = [
      ...(manifest.config ? [manifest.config] : []),
      // A non-distributable layer with URLs lives elsewhere by design (image-spec layer.md).
      ...manifest.layers.filter((d) => !(d.urls && d.urls.length > 0 && NONDISTRIBUTABLE_LAYER_TYPES.has(d.mediaType))),
    ];
    const checks: Array<() => Promise<void>> = [
      ...blobs.map((d) => async () => {
        const found = await this.blobs.stat(name, parseDigest(d.digest));
        mustMatch(d, found?.size, 'blob');
      }),
      ...manifest.manifests.map((d) => async () => {
        const key = keys.manifest(name, d.digest);
        // Written again (a new version), as a push of it would be: a delete that read the child
        // before (hosted retention of an untagged manifest) then fails at its version, and this
        // index never names a child that went meanwhile; one that went first fails this write.
        // A write that lost to another writer of the record (the child pushed again, another
        // index naming it) did what this one would: the version moved past any read before it.
        // Only a record that is gone refuses the push.
        const found = await this.ctx.index.get<ManifestRecord & Json>(key);
        mustMatch(d, found?.value.size, 'manifest');
        if ((await this.ctx.index.compareAndSet(key, found!.version, found!.value)) !== undefined) return;
        mustMatch(d, (await this.ctx.index.get<ManifestRecord & Json>(key))?.value.size, 'manifest');
      }),
    ];
    for (let i = 0; i < checks.length; i += REFERENCE_CHECK_CONCURRENCY) {
      await Promise.all(checks.slice(i, i + REFERENCE_CHECK_CONCURRENCY).map((check) => check()));
    }
  }
}

function mustMatch(d: Descriptor, size: number | undefined, what: 'blob' | 'manifest'): void {
  if (size === undefined) {
    throw new OciError('MANIFEST_BLOB_UNKNOWN', `${what} ${d.digest} is not in this repository; push it first`, {
      digest: d.digest,
    });
  }
  if (size !== d.size) {
    throw new OciError('MANIFEST_INVALID', `descriptor of ${d.digest} says ${d.size} bytes but the ${what} has ${size}`, {
      digest: d.digest,
      declared: d.size,
      actual: size,
    });
  }
}

export function referrerDescriptor(record: ManifestRecord): ReferrerEntry {
  const d: ReferrerEntry = { mediaType: record.mediaType, digest: record.digest, size: record.size };
  if (record.artifactType) d.artifactType = record.artifactType;
  if (record.annotations) d.annotations = record.annotations;
  if (record.largeAnnotations) d.largeAnnotations = true;
  return d;
}

function typeFixed(digest: string, stored: string, pushed: string): OciError {
  return new OciError(
    'MANIFEST_INVALID',
    `manifest ${digest} is stored as ${stored}, and a digest's media type is fixed by its first push; push it as ${stored} or add a mediaType to the manifest`,
    { digest, mediaType: stored, pushed: pushed.slice(0, 100) },
  );
}

function unknown(reference: Reference): OciError {
  return new OciError('MANIFEST_UNKNOWN', undefined, reference.kind === 'tag' ? { tag: reference.tag } : { digest: reference.digest.value });
}

export function tooLarge(): OciError {
  return new OciError('MANIFEST_TOO_LARGE', `manifest exceeds the ${MAX_MANIFEST_BYTES} byte (4 MiB) limit`, {
    limit: MAX_MANIFEST_BYTES,
  });
}
