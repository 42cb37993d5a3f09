import { tryParseDigest } from './digest.js';
import {
  IMAGE_MANIFEST_TYPES,
  INDEX_MANIFEST_TYPES,
  MediaType,
  SCHEMA1_TYPES,
  essence,
  isValidMediaType,
} from './media-types.js';
import { OciError } from '../errors.js';

/**
 * Manifest parsing and validation, as a pure decision: `parseManifest` returns a tagged
 * result and `manifestError` is the one exhaustive switch from reasons to wire errors.
 */

/**
 * Manifests are read whole into memory to be parsed, so their size is capped. 4 MiB is the
 * limit the distribution spec names as the minimum a registry should accept
 * (spec.md#pushing-manifests); anything larger is refused before it is buffered, which
 * prevents a memory exhaustion attack through manifest PUTs.
 */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/**
 * Nesting depth a manifest may have. Real manifests nest five levels (index -> manifests ->
 * descriptor -> platform -> features); a document nested thousands of levels deep costs stack in
 * every recursive walk after the parse (serialising it, for one), so it is refused by a linear
 * scan before JSON.parse runs.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * JSON values (array elements, object members, containers) a manifest may hold. JSON.parse runs
 * synchronously and its cost follows the number of values, not the bytes (one measurement on the
 * 2-core development machine, not a benchmark: 4 MiB of `{}` took 0.2 s, 100,000 small values
 * 10 ms); a manifest naming 1000 descriptors with a few annotations each holds about 10,000.
 */
export const MAX_JSON_VALUES = 100_000;

/**
 * Descriptors (config, layers, child manifests) one manifest may name. Each costs an existence
 * check when it is pushed, so the count bounds the work one PUT can ask of the index: a 4 MiB
 * manifest could name 25,000 blobs, and eight of them at once stalled every other request for
 * about a second. Docker refuses images deeper than 125 layers and multi-platform indexes name a
 * few dozen manifests, so 1000 leaves room for every real image.
 */
export const MAX_DESCRIPTORS = 1000;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: unknown;
}

export interface ParsedManifest {
  mediaType: string;
  kind: 'image' | 'index';
  /** image manifests: the config descriptor */
  config?: Descriptor;
  /** image manifests: blobs it references (the layers) */
  layers: Descriptor[];
  /** indexes: manifests it references */
  manifests: Descriptor[];
  subject?: Descriptor;
  /** `artifactType`, else the config media type of an image manifest (spec.md#listing-referrers). */
  artifactType?: string;
  annotations?: Record<string, string>;
}

export type ManifestRejection =
  | { reason: 'not-json' }
  | { reason: 'too-deep' }
  | { reason: 'too-many-values' }
  | { reason: 'byte-order-mark' }
  | { reason: 'too-many-descriptors'; field: string; count: number }
  | { reason: 'not-object' }
  | { reason: 'schema1' }
  /** `found` describes the value (its JSON type, or the number), never echoes it. */
  | { reason: 'schema-version'; found: string }
  | { reason: 'media-type-mismatch'; header: string; body: string }
  | { reason: 'unknown-media-type'; mediaType: string | undefined }
  | { reason: 'bad-descriptor'; field: string; why: string }
  | { reason: 'bad-field'; field: string; why: string };

export type ManifestParse = { ok: true; manifest: ParsedManifest } | ({ ok: false } & ManifestRejection);

/** Content-Types that do not name a manifest type, so the body's own mediaType decides. */
const GENERIC_CONTENT_TYPES = new Set(['application/json', 'application/octet-stream']);

export function parseManifest(bytes: Uint8Array, contentType: string | undefined): ManifestParse {
  const header = essence(contentType);
  if (header && SCHEMA1_TYPES.has(header)) return { ok: false, reason: 'schema1' };
  // TextDecoder would drop it silently, and the manifest would be stored with it: Go's JSON
  // decoder (containerd, Docker, Distribution) refuses such a document.
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) return { ok: false, reason: 'byte-order-mark' };
  const shape = jsonShape(bytes, MAX_JSON_DEPTH, MAX_JSON_VALUES);
  if (shape !== 'ok') return { ok: false, reason: shape };
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return { ok: false, reason: 'not-json' };
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { ok: false, reason: 'not-object' };
  const m = doc as Record<string, unknown>;
  if (m.schemaVersion === 1) return { ok: false, reason: 'schema1' };
  if (m.schemaVersion !== 2) return { ok: false, reason: 'schema-version', found: describe(m.schemaVersion) };

  const bodyType = typeof m.mediaType === 'string' ? m.mediaType : undefined;
  if (m.mediaType !== undefined && bodyType === undefined) {
    return { ok: false, reason: 'bad-field', field: 'mediaType', why: 'must be a string' };
  }
  if (bodyType && SCHEMA1_TYPES.has(bodyType)) return { ok: false, reason: 'schema1' };
  const namedHeader = header && !GENERIC_CONTENT_TYPES.has(header) ? header : undefined;
  if (namedHeader && bodyType && namedHeader !== bodyType) {
    return { ok: false, reason: 'media-type-mismatch', header: namedHeader, body: bodyType };
  }
  // OCI manifests may omit mediaType (it is a SHOULD); then the structure decides.
  const mediaType = namedHeader ?? bodyType ?? (Array.isArray(m.manifests) ? MediaType.OciIndex : MediaType.OciManifest);

  const annotations = stringMap(m.annotations);
  if (annotations === null) return { ok: false, reason: 'bad-field', field: 'annotations', why: 'must map strings to strings' };
  let artifactType: string | undefined;
  if (m.artifactType !== undefined) {
    if (typeof m.artifactType !== 'string' || !isValidMediaType(m.artifactType)) {
      return { ok: false, reason: 'bad-field', field: 'artifactType', why: 'must be a media type' };
    }
    artifactType = m.artifactType;
  }
  let subject: Descriptor | undefined;
  if (m.subject !== undefined) {
    const parsed = descriptor(m.subject, 'subject');
    if ('reason' in parsed) return { ok: false, ...parsed };
    subject = parsed;
  }

  if (IMAGE_MANIFEST_TYPES.has(mediaType)) {
    const config = descriptor(m.config, 'config');
    if ('reason' in config) return { ok: false, ...config };
    if (!Array.isArray(m.layers)) return { ok: false, reason: 'bad-field', field: 'layers', why: 'must be an array' };
    if (m.layers.length + 1 > MAX_DESCRIPTORS) return { ok: false, reason: 'too-many-descriptors', field: 'layers', count: m.layers.length + 1 };
    const layers: Descriptor[] = [];
    for (const [i, layer] of m.layers.entries()) {
      const parsed = descriptor(layer, `layers[${i}]`);
      if ('reason' in parsed) return { ok: false, ...parsed };
      layers.push(parsed);
    }
    return {
      ok: true,
      manifest: {
        mediaType,
        kind: 'image',
        config,
        layers,
        manifests: [],
        subject,
        artifactType: artifactType ?? config.mediaType,
        annotations,
      },
    };
  }
  if (INDEX_MANIFEST_TYPES.has(mediaType)) {
    if (!Array.isArray(m.manifests)) return { ok: false, reason: 'bad-field', field: 'manifests', why: 'must be an array' };
    if (m.manifests.length > MAX_DESCRIPTORS) return { ok: false, reason: 'too-many-descriptors', field: 'manifests', count: m.manifests.length };
    const manifests: Descriptor[] = [];
    for (const [i, child] of m.manifests.entries()) {
      const parsed = descriptor(child, `manifests[${i}]`);
      if ('reason' in parsed) return { ok: false, ...parsed };
      manifests.push(parsed);
    }
    return { ok: true, manifest: { mediaType, kind: 'index', layers: [], manifests, subject, artifactType, annotations } };
  }
  return { ok: false, reason: 'unknown-media-type', mediaType };
}

export function manifestError(rejection: ManifestRejection): OciError {
  switch (rejection.reason) {
    case 'not-json':
      return new OciError('MANIFEST_INVALID', 'manifest is not valid UTF-8 JSON');
    case 'too-deep':
      return new OciError('MANIFEST_INVALID', `manifest JSON is nested deeper than ${MAX_JSON_DEPTH} levels`, { limit: MAX_JSON_DEPTH });
    case 'byte-order-mark':
      return new OciError('MANIFEST_INVALID', 'manifest starts with a byte order mark, which JSON text must not (RFC 8259 section 8.1)');
    case 'too-many-values':
      return new OciError('MANIFEST_INVALID', `manifest JSON holds more than ${MAX_JSON_VALUES} values`, { limit: MAX_JSON_VALUES });
    case 'too-many-descriptors':
      return new OciError('MANIFEST_INVALID', `a manifest may name at most ${MAX_DESCRIPTORS} descriptors; this one names ${rejection.count}`, {
        field: rejection.field,
        limit: MAX_DESCRIPTORS,
      });
    case 'not-object':
      return new OciError('MANIFEST_INVALID', 'manifest must be a JSON object');
    case 'schema1':
      return new OciError(
        'MANIFEST_INVALID',
        'Docker image manifest schema 1 is deprecated and not supported; push an OCI or Docker schema 2 manifest',
      );
    case 'schema-version':
      return new OciError('MANIFEST_INVALID', `schemaVersion must be 2, found ${rejection.found}`);
    case 'media-type-mismatch':
      return new OciError('MANIFEST_INVALID', 'Content-Type does not match the manifest mediaType', {
        contentType: rejection.header.slice(0, 100),
        mediaType: rejection.body.slice(0, 100),
      });
    case 'unknown-media-type':
      return new OciError('MANIFEST_INVALID', `unsupported manifest media type "${(rejection.mediaType ?? '').slice(0, 100)}"`, {
        supported: [MediaType.OciManifest, MediaType.OciIndex, MediaType.DockerManifest, MediaType.DockerManifestList],
      });
    case 'bad-descriptor':
      return new OciError('MANIFEST_INVALID', `invalid descriptor at ${rejection.field}: ${rejection.why}`, {
        field: rejection.field,
      });
    case 'bad-field':
      return new OciError('MANIFEST_INVALID', `invalid ${rejection.field}: ${rejection.why}`, { field: rejection.field });
  }
}

function descriptor(value: unknown, field: string): Descriptor | Extract<ManifestRejection, { reason: 'bad-descriptor' }> {
  const bad = (why: string) => ({ reason: 'bad-descriptor' as const, field, why });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return bad('must be an object');
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== 'string' || !isValidMediaType(d.mediaType)) return bad('mediaType must be a media type');
  if (typeof d.digest !== 'string' || !tryParseDigest(d.digest)) return bad('digest must be a sha256 or sha512 digest');
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) return bad('size must be a non-negative integer');
  const annotations = stringMap(d.annotations);
  if (annotations === null) return bad('annotations must map strings to strings');
  if (d.artifactType !== undefined && (typeof d.artifactType !== 'string' || !isValidMediaType(d.artifactType))) {
    return bad('artifactType must be a media type');
  }
  if (d.urls !== undefined) {
    const why = urlsProblem(d.urls);
    if (why) return bad(why);
  }
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (typeof d.artifactType === 'string') out.artifactType = d.artifactType;
  if (annotations) out.annotations = annotations;
  if (Array.isArray(d.urls)) out.urls = d.urls as string[];
  if (d.platform !== undefined) out.platform = d.platform;
  return out;
}

/** undefined when absent, null when malformed. */
function stringMap(value: unknown): Record<string, string> | undefined | null {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  for (const v of Object.values(value)) if (typeof v !== 'string') return null;
  return value as Record<string, string>;
}

/**
 * Foreign content is fetched from `urls` by clients (image-spec descriptor.md#properties): only
 * http and https URLs are meaningful there, and a descriptor names a few mirrors, not thousands.
 */
const MAX_DESCRIPTOR_URLS = 16;
const MAX_URL_LENGTH = 2048;

function urlsProblem(urls: unknown): string | undefined {
  if (!Array.isArray(urls) || !urls.every((u) => typeof u === 'string')) return 'urls must be an array of strings';
  if (urls.length > MAX_DESCRIPTOR_URLS) return `urls may list at most ${MAX_DESCRIPTOR_URLS} URLs`;
  for (const url of urls as string[]) {
    if (url.length > MAX_URL_LENGTH) return `urls must be at most ${MAX_URL_LENGTH} characters long`;
    if (!/^https?:\/\/[^\s/?#]+/i.test(url) || !URL.canParse(url)) return 'urls must be http or https URLs';
  }
  return undefined;
}

/** A client's value named without echoing it: its JSON type, or a number in short form. */
function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'number') return String(value).slice(0, 24);
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}

/**
 * Whether JSON text nests at most `maxDepth` arrays and objects deep and holds at most
 * `maxValues` values (counted as containers opened and separating commas): one pass over the
 * bytes, skipping strings (their brackets and commas are text), so the check costs what reading
 * the bytes costs, before JSON.parse pays for every value. Malformed text may pass; JSON.parse
 * refuses it next.
 */
export function jsonShape(bytes: Uint8Array, maxDepth: number, maxValues: number): 'ok' | 'too-deep' | 'too-many-values' {
  let depth = 0;
  let values = 1;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === 0x5c) i++; // backslash: the next byte is escaped
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x2c) {
      if (++values > maxValues) return 'too-many-values';
    } else if (b === 0x5b || b === 0x7b) {
      if (++depth > maxDepth) return 'too-deep';
      if (++values > maxValues) return 'too-many-values';
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return 'ok';
}
