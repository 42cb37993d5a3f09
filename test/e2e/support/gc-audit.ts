import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import Database from 'better-sqlite3';

/**
 * An audit of a local store (files + SQLite index) at rest, against the reference model of
 * src/core/gc/references.ts, read straight from <data>/index.db (the schema is in
 * src/adapters/local/sqlite-meta-index.ts; the key layout in src/core/registry/keys.ts):
 *
 *   present   every linked blob and every manifest record has its bytes, byte-identical, and so
 *             has everything a hosted manifest names (a mirrored one may name content not filled yet)
 *   held      every link and record stands on its reference (ref#d / link:R:blob|manifest), and
 *             every digest a hosted record names on the record's own (ref#n / manifest:R:m/<nonce>);
 *             a mirrored record names nothing (what it names is fetched, kept and evicted on its own)
 *   collected every stored object is referenced by a live item, or held by a reference no live
 *             item stands on (a leak a crash may leave: kept longer, never lost), or in deletion
 *             (a collecting run was killed); anything else survived the collection: garbage
 */

export interface Ref {
  kind: string;
  repository: string;
  from: string;
  expiresAt: number | null;
}

export interface IndexSnapshot {
  /** repository -> digest -> link */
  links: Map<string, Map<string, { size: number; ref?: number }>>;
  /** repository -> digest -> record */
  records: Map<string, Map<string, { nonce?: string; ref?: number; mediaType: string }>>;
  tags: Map<string, Map<string, string>>;
  refs: Map<string, Ref[]>;
  states: Map<string, { state: string; done?: boolean; since: number }>;
  candidates: Set<string>;
}

export function readIndex(file: string, now = Date.now()): IndexSnapshot {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const rows = db
      .prepare(`SELECT pk, sk, value, expires_at FROM items WHERE value IS NOT NULL AND (expires_at IS NULL OR expires_at > ?)`)
      .all(now) as Array<{ pk: string; sk: string; value: string; expires_at: number | null }>;
    const snap: IndexSnapshot = { links: new Map(), records: new Map(), tags: new Map(), refs: new Map(), states: new Map(), candidates: new Set() };
    const inRepo = <V>(map: Map<string, Map<string, V>>, repo: string) => map.get(repo) ?? map.set(repo, new Map()).get(repo)!;
    for (const row of rows) {
      const value = JSON.parse(row.value) as Record<string, unknown>;
      if (row.pk.startsWith('blob#')) inRepo(snap.links, row.pk.slice(5)).set(row.sk, value as { size: number; ref?: number });
      else if (row.pk.startsWith('manifest#')) inRepo(snap.records, row.pk.slice(9)).set(row.sk, value as { nonce?: string; ref?: number; mediaType: string });
      else if (row.pk.startsWith('tag#')) inRepo(snap.tags, row.pk.slice(4)).set(row.sk, String(value.digest));
      // The note of when a digest's last reference went sits beside its references; it is none.
      else if (row.pk.startsWith('ref#') && row.sk === '~unreferenced') continue;
      else if (row.pk.startsWith('ref#')) {
        const a = row.sk.indexOf(':');
        const b = row.sk.indexOf(':', a + 1);
        const ref = { kind: row.sk.slice(0, a), repository: decodeURIComponent(row.sk.slice(a + 1, b)), from: row.sk.slice(b + 1), expiresAt: row.expires_at };
        const digest = row.pk.slice(4);
        (snap.refs.get(digest) ?? snap.refs.set(digest, []).get(digest)!).push(ref);
      } else if (row.pk === 'content') snap.states.set(row.sk, value as { state: string; done?: boolean; since: number });
      // Candidates live in buckets of five minutes (core/gc/references.ts).
      else if (row.pk.startsWith('gc#candidates#')) snap.candidates.add(row.sk);
    }
    return snap;
  } finally {
    db.close();
  }
}

/** Every object under <data>/blobs/sha256/: digest -> file. */
export function storedObjects(dataDir: string): Map<string, string> {
  const out = new Map<string, string>();
  const root = join(dataDir, 'blobs', 'sha256');
  let prefixes: string[] = [];
  try {
    prefixes = readdirSync(root);
  } catch {
    return out;
  }
  for (const p of prefixes) for (const hex of readdirSync(join(root, p))) out.set(`sha256:${hex}`, join(root, p, hex));
  return out;
}

export function contentFile(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

/**
 * The bytes of the object file at `path`, read from the disk as it lies, not through the store:
 * a plain file, or a composed object (a link to a directory of pieces and their sizes, see
 * FsBlobStore.compose), whose pieces must add up to the sizes listed.
 */
export function readStoredFile(path: string): Buffer {
  if (!lstatSync(path).isSymbolicLink()) return readFileSync(path);
  const dir = resolve(dirname(path), readlinkSync(path));
  const sizes = JSON.parse(readFileSync(join(dir, 'sizes.json'), 'utf8')) as number[];
  const pieces = sizes.map((n, i) => {
    const piece = readFileSync(join(dir, String(i).padStart(6, '0')));
    if (piece.byteLength !== n) throw new Error(`piece ${i} of ${path} has ${piece.byteLength} bytes, not ${n}`);
    return piece;
  });
  return Buffer.concat(pieces);
}

/** The bytes stored for `digest` when they are there and hash to it; why not otherwise. */
export function readContent(dataDir: string, digest: string): { ok: true; bytes: Buffer } | { ok: false; why: string } {
  let bytes: Buffer;
  try {
    bytes = readStoredFile(contentFile(dataDir, digest));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !existsLink(contentFile(dataDir, digest))) return { ok: false, why: 'no file' };
    return { ok: false, why: `unreadable: ${(err as Error).message}` };
  }
  const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  return actual === digest ? { ok: true, bytes } : { ok: false, why: `file hashes to ${actual} (${bytes.length} bytes)` };
}

/** Config, layers and child manifests a manifest names (what its record references). */
export function namedBy(manifest: Buffer): string[] {
  const doc = JSON.parse(manifest.toString('utf8')) as { config?: { digest: string }; layers?: Array<{ digest: string }>; manifests?: Array<{ digest: string }> };
  return [...new Set([...(doc.config ? [doc.config.digest] : []), ...(doc.layers ?? []).map((l) => l.digest), ...(doc.manifests ?? []).map((m) => m.digest)])];
}

export interface StoreAudit {
  objects: number;
  /** Referenced content that is missing or not byte-identical. */
  missing: string[];
  /** Links and records without the reference they stand on, named digests without the record's reference. */
  unheld: string[];
  /** Referenced content whose state says deleted. */
  deletedButReferenced: string[];
  /** References no live item stands on, by digest (leaks). */
  orphanRefs: Map<string, Ref[]>;
  /** Stored objects held only by orphan references. */
  leaked: string[];
  /** Stored objects in deletion (deleting, or deleted and not done): a collecting run was cut. */
  inDeletion: string[];
  /** Stored objects nothing references and no run is deleting: they survived the collection. */
  garbage: string[];
  /** Digests a live item references (links, records, what records name). */
  referenced: Set<string>;
}

/** `mirrored(repo)`: a mirrored repository, whose records may name content not filled yet. */
export function auditStore(dataDir: string, snap: IndexSnapshot, mirrored: (repository: string) => boolean): StoreAudit {
  const audit: StoreAudit = { objects: 0, missing: [], unheld: [], deletedButReferenced: [], orphanRefs: new Map(), leaked: [], inDeletion: [], garbage: [], referenced: new Set() };
  const stood = new Set<string>(); // "<digest> <kind>:<repo>:<from>" of every reference a live item stands on
  const hasRef = (digest: string, kind: string, repository: string, from: string) =>
    (snap.refs.get(digest) ?? []).some((r) => r.kind === kind && r.repository === repository && (from === '*' ? true : r.from === from));
  const need = (digest: string, what: string) => {
    audit.referenced.add(digest);
    const found = readContent(dataDir, digest);
    if (!found.ok) audit.missing.push(`${digest} (${what}): ${found.why}`);
    return found.ok ? found.bytes : undefined;
  };

  for (const [repo, links] of snap.links) {
    for (const [digest] of links) {
      need(digest, `linked in ${repo}`);
      stood.add(`${digest} link:${repo}:blob`);
      if (!hasRef(digest, 'link', repo, 'blob')) audit.unheld.push(`link ${repo}@${digest} has no reference`);
    }
  }
  for (const [repo, records] of snap.records) {
    for (const [digest, record] of records) {
      const bytes = need(digest, `manifest record in ${repo}`);
      stood.add(`${digest} link:${repo}:manifest`);
      if (!hasRef(digest, 'link', repo, 'manifest')) audit.unheld.push(`record ${repo}@${digest} has no link reference`);
      if (!bytes) continue;
      // A mirrored record names nothing (no nonce): what it names is fetched and kept on its own.
      if (!record.nonce) {
        if (!mirrored(repo)) audit.unheld.push(`record ${repo}@${digest} has no nonce: nothing holds what it names`);
        continue;
      }
      for (const named of namedBy(bytes)) {
        audit.referenced.add(named);
        stood.add(`${named} manifest:${repo}:${digest}/${record.nonce}`);
        if (!hasRef(named, 'manifest', repo, `${digest}/${record.nonce}`)) audit.unheld.push(`${named} named by ${repo}@${digest} (nonce ${record.nonce}) has no reference`);
        if (!mirrored(repo)) need(named, `named by ${repo}@${digest}`);
        else {
          // A mirrored manifest may name content no pull has filled yet; what is there must be right.
          const found = readContent(dataDir, named);
          if (!found.ok && found.why !== 'no file') audit.missing.push(`${named} (named by ${repo}@${digest}): ${found.why}`);
        }
      }
    }
  }
  for (const digest of audit.referenced) {
    const s = snap.states.get(digest);
    if (s?.state === 'deleted') audit.deletedButReferenced.push(`${digest}: state ${JSON.stringify(s)}`);
  }
  for (const [digest, refs] of snap.refs) {
    const orphans = refs.filter((r) => r.kind === 'writer' || !stood.has(`${digest} ${r.kind}:${r.repository}:${r.from}`));
    if (orphans.length > 0) audit.orphanRefs.set(digest, orphans);
  }

  const stored = storedObjects(dataDir);
  audit.objects = stored.size;
  for (const digest of stored.keys()) {
    if (audit.referenced.has(digest)) continue;
    const found = readContent(dataDir, digest);
    if (!found.ok) audit.missing.push(`${digest} (unreferenced object): ${found.why}`);
    const s = snap.states.get(digest);
    if ((snap.refs.get(digest) ?? []).length > 0) audit.leaked.push(digest);
    else if (s && (s.state === 'deleting' || (s.state === 'deleted' && !s.done))) audit.inDeletion.push(`${digest}: ${JSON.stringify(s)}`);
    else audit.garbage.push(`${digest}: state ${JSON.stringify(s)}, candidate ${snap.candidates.has(digest)}`);
  }
  return audit;
}

/** Whether anything (a file, or a link even when dangling) lies at `path`. */
function existsLink(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
