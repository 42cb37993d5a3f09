import { randomUUID } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { link, lstat, lutimes, mkdir, open, readdir, readFile, readlink, rename, rm, rmdir, stat, symlink, utimes, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import {
  MAX_LIST_KEYS,
  type BlobStore,
  type ByteStream,
  type ListedObject,
  type ObjectBody,
  type ObjectInfo,
  type ObjectListOptions,
  type ObjectPage,
  type ObjectRange,
  type PutOptions,
  type StoreReclaimReport,
} from '../../ports/blob-store.js';
import { fileBody, segmentsBody, type FileSegment } from './file-body.js';

/** Bytes a write gathers from its source's chunks before handing them to the file in one writev. */
const WRITE_BATCH_BYTES = 1024 * 1024;
/** And at most this many chunks (a client may send tiny ones): well under any system's IOV_MAX. */
const WRITE_BATCH_CHUNKS = 256;
/**
 * How often a write touches its temporary file while it is open, so that the file's mtime says
 * the writer is alive even while its source stalls: `reclaim` removes only temporaries untouched
 * for far longer (DEFAULT_RECLAIM_AGE_MS is sixty of these).
 */
const TEMP_HEARTBEAT_MS = 60_000;

export interface FsBlobStoreOptions {
  /** Interval of the temporary-file heartbeat (default one minute; tests shorten it). */
  heartbeatMs?: number;
}

/**
 * BlobStore on a local directory. Writes go to a private temporary file and are renamed into
 * place after the body has ended cleanly, so readers (in this process or another one sharing
 * the directory) never see a partial object. Reads open the file first and stream from the
 * open descriptor, so a concurrent delete or replace cannot tear a response; a composed object's
 * pieces are opened one after another, and kept for the reclaim grace (an hour by default)
 * after a delete or replace, so only a read slower than that is cut (an error, never a clean
 * short body).
 *
 * A key is a path below root; `list` walks the tree depth first, one directory at a time,
 * visiting each directory's entries in key order (a directory sorts as its name + "/", which is
 * where its keys fall among its siblings' keys). The staging directory <root>/.tmp is never
 * listed, and no key may lie in it.
 *
 * A composed object (compose) is a symbolic link at its key to <root>/.pieces/<uuid>.<size>,
 * a directory of hard links to the parts it was composed from and the list of their sizes:
 * assembling a fill copies no byte. Reads of it open the pieces one after another. The
 * directory <root>/.pieces is never listed either, and no key lies in it.
 *
 * Leftovers, for processes that share the directory and may die at any instant:
 *   write:   open .tmp/<uuid> -> write (touching it every TEMP_HEARTBEAT_MS) -> fsync -> close
 *            -> mkdir -p dirname(key) -> (retire) -> rename onto key; a rename that finds the
 *            directory gone (a concurrent delete pruned it) makes it again and retries
 *   compose: link the parts into .pieces/<uuid>.<size> -> fsync them -> write the sizes ->
 *            symlink .tmp/<uuid> -> rename onto key, as a write
 *   delete:  (retire) -> unlink key -> rmdir each parent up to root, stopping at the first that
 *            is not empty (rmdir refuses a non-empty directory, so it never removes another's
 *            object)
 *   retire:  before a delete, replace or move takes a composed object's link away, touch its
 *            pieces directory, so that a read that found the link keeps its pieces for the grace
 *   reclaim: unlink .tmp files untouched for longer than the grace (their writer is dead: a
 *            live one touches its file); rmdir every empty directory, deepest first, noting the
 *            pieces every link names; then remove the pieces directories no link names and
 *            untouched for longer than the grace
 * A killed process leaves at most its open temporaries, a pieces directory no link names, and
 * the empty directories it was pruning; `reclaim` removes them all.
 */
export class FsBlobStore implements BlobStore {
  /** Absolute, so that pruning can tell where root is. */
  private readonly root: string;
  private readonly tmp: string;
  private readonly pieces: string;
  private readonly heartbeatMs: number;

  constructor(root: string, options: FsBlobStoreOptions = {}) {
    this.root = resolve(root);
    this.tmp = join(this.root, '.tmp');
    this.pieces = join(this.root, PIECES);
    this.heartbeatMs = options.heartbeatMs ?? TEMP_HEARTBEAT_MS;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const path = this.path(key);
    try {
      let s = await lstat(path);
      if (s.isSymbolicLink()) {
        const composed = await this.composedAt(path, s);
        if (composed) return { size: composed.size, lastModified: composed.lastModified };
        s = await stat(path);
      }
      // A directory here only holds other keys (keys are flat): no object at this key.
      return s.isFile() ? { size: s.size, lastModified: Math.trunc(s.mtimeMs) } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async get(key: string, range?: ObjectRange): Promise<ObjectBody | undefined> {
    const path = this.path(key);
    let file;
    try {
      // Not following a link: a composed object is one (see compose), read piece by piece.
      file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      if ((err as NodeJS.ErrnoException)?.code !== 'ELOOP') throw err;
      const composed = await this.composedAt(path);
      if (composed) return this.getComposed(key, composed, range);
      // Any other link is followed, as stat and list follow it.
      file = await open(path, 'r').catch((e: unknown) => {
        if (isNotFound(e)) return undefined;
        throw e;
      });
      if (!file) return undefined;
    }
    const info = await file.stat();
    if (!info.isFile()) {
      await file.close();
      return undefined;
    }
    const size = info.size;
    // Clamped to the open file's size, as every adapter's get is (a key's object is only ever
    // replaced whole, by rename, so the open file keeps its size; if it shrank all the same, the
    // read finds it ending early and the body errors: never a clean short one).
    const start = Math.min(range?.offset ?? 0, size);
    return { body: fileBody(file, start, range ? Math.min(size, start + range.length) : size), size };
  }

  /** [start, end) of a composed object: the pieces it spans, each opened when the body reaches it. */
  private async getComposed(key: string, composed: Composed, range: ObjectRange | undefined): Promise<ObjectBody> {
    const sizes = await this.pieceSizes(key, composed);
    const start = Math.min(range?.offset ?? 0, composed.size);
    const end = range ? Math.min(composed.size, start + range.length) : composed.size;
    const segments: FileSegment[] = [];
    let offset = 0;
    for (const [i, n] of sizes.entries()) {
      const from = Math.max(start, offset);
      const to = Math.min(end, offset + n);
      if (from < to) segments.push({ file: () => open(join(composed.dir, pieceName(i)), 'r'), start: from - offset, end: to - offset });
      offset += n;
    }
    return { body: segmentsBody(segments), size: composed.size };
  }

  /** The sizes of a composed object's pieces, in order, from the list compose wrote beside them. */
  private async pieceSizes(key: string, composed: Composed): Promise<number[]> {
    let sizes: unknown;
    try {
      sizes = JSON.parse(await readFile(join(composed.dir, SIZES), 'utf8'));
    } catch (err) {
      throw new Error(`the pieces of ${key} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    if (!Array.isArray(sizes) || !sizes.every((n) => Number.isSafeInteger(n) && n >= 0) || sizes.reduce((a: number, b: number) => a + b, 0) !== composed.size) {
      throw new Error(`the pieces of ${key} do not add up to its ${composed.size} bytes`);
    }
    return sizes as number[];
  }

  /**
   * The composed object at `path` (a symbolic link to its pieces: see compose), or undefined
   * when there is none there (nothing, a file, a directory, or a link of someone else's).
   * `known`: the lstat of `path` the caller has already made.
   */
  private async composedAt(path: string, known?: Stats): Promise<Composed | undefined> {
    let info = known;
    try {
      info ??= await lstat(path);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    if (!info.isSymbolicLink()) return undefined;
    const target = await readlink(path).catch(() => undefined);
    const name = target === undefined ? undefined : basename(target);
    const m = name === undefined || basename(dirname(target!)) !== PIECES ? null : PIECES_NAME.exec(name);
    if (!m) return undefined;
    // Wherever the link's own path resolves (a move keeps its text), the pieces are under root.
    return { dir: join(this.pieces, name!), size: Number(m[1]), lastModified: Math.trunc(info.mtimeMs) };
  }

  async put(key: string, body: ByteStream, size?: number, options: PutOptions = {}): Promise<ObjectInfo> {
    return this.writeAtomically(key, options.scratch === true, async (file) => {
      let written = 0;
      const reader = body.getReader();
      // Chunks are gathered into one writev of WRITE_BATCH_BYTES while the previous one is on
      // the thread pool: a write per 64 KiB chunk, each awaited, held a push to a few hundred
      // MiB/s in thread-pool round trips alone.
      let batch: Uint8Array[] = [];
      let batched = 0;
      let writing: Promise<void> = Promise.resolve();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          batch.push(value);
          batched += value.byteLength;
          written += value.byteLength;
          if (batched >= WRITE_BATCH_BYTES || batch.length >= WRITE_BATCH_CHUNKS) {
            await writing;
            writing = writeAll(file, batch);
            // Awaited before the next batch or at the end; until then not unhandled.
            writing.catch(() => undefined);
            batch = [];
            batched = 0;
          }
        }
        await writing;
        if (batch.length > 0) await writeAll(file, batch);
      } catch (err) {
        await writing.catch(() => undefined);
        await reader.cancel(err).catch(() => undefined);
        throw err;
      }
      if (size !== undefined && written !== size) throw new Error(`short write: ${written} of ${size} bytes`);
      return written;
    });
  }

  /**
   * Makes `to` the concatenation of the parts without copying a byte: the part files are
   * hard-linked as the pieces of a new directory under <root>/.pieces, flushed to disk, and a
   * symbolic link to that directory is renamed onto `to` (readers see the previous object or
   * the whole new one). Deleting or replacing a part afterwards changes no piece (a put renames
   * a new file onto the part's name; the piece keeps the old one). Each part is opened first and
   * must still be the same file when linked, so a part deleted or replaced meanwhile fails the
   * whole compose and nothing appears at `to`. No parts, a part that is not a plain file, or a
   * file system that refuses hard links: the bytes are copied into one file instead.
   *
   *   open and fstat every part -> mkdir .pieces/<uuid>.<total size>
   *   -> link each part as <index> (and check it is the file opened) -> fsync each
   *   -> write the sizes (fsync) -> symlink .tmp/<uuid> -> that directory -> rename onto `to`
   * A compose that dies leaves a directory no link names: reclaim removes it after the grace.
   */
  async compose(parts: string[], to: string): Promise<ObjectInfo> {
    if (parts.length === 0) return this.composeByCopy(parts, to);
    const target = this.path(to);
    const opened: Array<{ key: string; path: string; file: FileHandle; dev: number; ino: number; size: number }> = [];
    let dir: string | undefined;
    let temp: string | undefined;
    try {
      for (const key of parts) {
        const path = this.path(key);
        let file;
        try {
          file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
        } catch (err) {
          // A link (a composed part, or one of someone else's): copy instead.
          if ((err as NodeJS.ErrnoException)?.code === 'ELOOP') return await this.composeByCopy(parts, to);
          throw err;
        }
        const info = await file.stat().catch(async (err: unknown) => {
          await file.close();
          throw err;
        });
        opened.push({ key, path, file, dev: info.dev, ino: info.ino, size: info.size });
        // A directory only holds other keys (keys are flat): no object there.
        if (!info.isFile()) throw new Error(`no object at ${key}`);
      }
      const size = opened.reduce((n, p) => n + p.size, 0);
      dir = join(this.pieces, `${randomUUID()}.${size}`);
      await mkdir(dir, { recursive: true });
      for (const [i, part] of opened.entries()) {
        const piece = join(dir, pieceName(i));
        try {
          await link(part.path, piece);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException)?.code;
          if (code === 'EXDEV' || code === 'EPERM' || code === 'ENOTSUP' || code === 'EMLINK') return await this.composeByCopy(parts, to);
          throw err;
        }
        const linked = await lstat(piece);
        if (linked.ino !== part.ino || linked.dev !== part.dev) throw new Error(`${part.key} was replaced while it was composed`);
      }
      // Parts are written as scratch: their bytes become the object's only now.
      await Promise.all(opened.map((p) => p.file.sync()));
      const sizes = await open(join(dir, SIZES), 'wx');
      try {
        await sizes.writeFile(JSON.stringify(opened.map((p) => p.size)));
        await sizes.sync();
      } finally {
        await sizes.close();
      }
      await mkdir(this.tmp, { recursive: true });
      temp = join(this.tmp, randomUUID());
      await symlink(relative(dirname(target), dir), temp);
      // Fresh for reclaim until the link is in place, however long this compose was paused.
      const now = new Date();
      await utimes(dir, now, now);
      await this.place(temp, target);
      temp = undefined;
      const pieces = dir;
      dir = undefined;
      // Paused for longer than the grace before the touch, the pieces may be gone already: then
      // this compose fails, and takes back its link (unless another write replaced it since).
      if (!(await exists(join(pieces, SIZES)))) {
        if ((await this.composedAt(target))?.dir === pieces) await rm(target, { force: true });
        throw new Error(`the pieces of ${to} were reclaimed while it was composed`);
      }
      return { size };
    } finally {
      await Promise.all(opened.map((p) => p.file.close().catch(() => undefined)));
      if (temp) await rm(temp, { force: true });
      if (dir) await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Copies the parts into a temporary file and renames it onto `to`, like put. Each part is
   * opened (get) before it is read, so a part deleted meanwhile fails the whole compose (no
   * object) and nothing appears at `to`; a composed part is read piece by piece.
   */
  private async composeByCopy(parts: string[], to: string): Promise<ObjectInfo> {
    return this.writeAtomically(to, false, async (file) => {
      let written = 0;
      for (const key of parts) {
        const part = await this.get(key);
        if (!part) throw new Error(`no object at ${key}`);
        const reader = part.body.getReader();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            await writeAll(file, [value]);
            written += value.byteLength;
          }
        } catch (err) {
          await reader.cancel(err).catch(() => undefined);
          throw err;
        }
      }
      return written;
    });
  }

  /**
   * Runs `write` on a new private temporary file, then flushes it to disk (unless `scratch`)
   * and renames it onto `key`, so readers see the previous object or the whole new one. If
   * `write` throws, the temporary file is removed and nothing changes at `key`.
   */
  private async writeAtomically(key: string, scratch: boolean, write: (file: FileHandle) => Promise<number>): Promise<ObjectInfo> {
    const target = this.path(key);
    await mkdir(this.tmp, { recursive: true });
    const temp = join(this.tmp, randomUUID());
    const file = await open(temp, 'wx');
    // The mtime says "alive" to reclaim in every process, however long the source stalls.
    const heartbeat = setInterval(() => {
      const now = new Date();
      file.utimes(now, now).catch(() => undefined);
    }, this.heartbeatMs);
    heartbeat.unref?.();
    try {
      const size = await write(file);
      if (!scratch) await file.sync();
      clearInterval(heartbeat);
      await file.close();
      await this.place(temp, target);
      return { size };
    } catch (err) {
      clearInterval(heartbeat);
      await file.close().catch(() => undefined);
      await rm(temp, { force: true });
      throw err;
    }
  }

  /**
   * Renames `from` onto `target`, making its directory first. A delete in another request or
   * process may prune that directory between the mkdir and the rename (it was empty): then the
   * rename fails with ENOENT and is tried again. ENOENT while `from` itself is gone is real (a
   * move of a missing key, or a temporary reclaimed from under a writer frozen for an hour).
   */
  private async place(from: string, target: string): Promise<void> {
    await this.retire(target);
    for (let attempt = 1; ; attempt++) {
      try {
        await mkdir(dirname(target), { recursive: true });
        await rename(from, target);
        return;
      } catch (err) {
        if (!isNotFound(err) || attempt >= MAX_PLACE_ATTEMPTS || !(await exists(from))) throw err;
      }
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    await this.retire(path);
    try {
      await rm(path, { force: true });
    } catch (err) {
      // A directory only holds other keys: there is no object to remove.
      if ((err as NodeJS.ErrnoException)?.code !== 'ERR_FS_EISDIR') throw err;
      return;
    }
    await this.prune(dirname(path));
  }

  /**
   * Removes `dir` and its parents below root while they are empty. rmdir refuses a directory
   * that holds anything, so an object another writer renamed in meanwhile stays, and that
   * writer's rename retries if it came a moment later (see place).
   */
  private async prune(dir: string): Promise<void> {
    while (dir.length > this.root.length && dir.startsWith(this.root + sep)) {
      try {
        await rmdir(dir);
      } catch {
        // Not empty (ENOTEMPTY, EEXIST), already gone, or not ours to remove: stop here.
        return;
      }
      dir = dirname(dir);
    }
  }

  /**
   * Touches the pieces of the composed object at `path`, if one is there, before a delete, a
   * replace or a move takes its link away: reclaim removes pieces no link names only once they
   * are untouched for longer than the grace, so a read that opened the link before then still
   * finds every piece.
   */
  private async retire(path: string): Promise<void> {
    const composed = await this.composedAt(path);
    if (!composed) return;
    const now = new Date();
    await utimes(composed.dir, now, now).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /**
   * Removes temporaries of writes that died (untouched for longer than `olderThanMs`; a live
   * write touches its file every heartbeat), every empty directory (see the port), and pieces
   * no composed object's link names (counted with the temporaries).
   */
  async reclaim(olderThanMs: number): Promise<StoreReclaimReport> {
    const temporary = await this.sweepStale(this.tmp, olderThanMs);
    const linked = new Set<string>();
    const directories = await this.sweepDirectories(this.root, linked);
    const pieces = await this.sweepStale(this.pieces, olderThanMs, linked);
    return { temporary: temporary + pieces, directories: directories.removed };
  }

  /**
   * Removes the entries of `dir`, one of this store's own directories where no key lies (.tmp,
   * .pieces), untouched for longer than `olderThanMs`, except those `keep` names. In .tmp: the
   * temporaries of writes that died (a live one touches its file). In .pieces: the pieces no
   * link found by the walk names (`keep`, collected before): of a composed object deleted or
   * replaced (retire touched them then), or of a compose that died before its rename. A link
   * made or moved during the walk names pieces that are fresh (just made, or touched by the move).
   */
  private async sweepStale(dir: string, olderThanMs: number, keep?: Set<string>): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (isNotFound(err)) return 0;
      throw err;
    }
    let removed = 0;
    for (const name of names) {
      if (keep?.has(name)) continue;
      const path = join(dir, name);
      // Gone meanwhile: renamed into place, or removed by its writer or another sweep.
      const info = await lstat(path).catch(() => undefined);
      if (!info || info.mtimeMs >= cutoff) continue;
      await rm(path, { force: true, recursive: info.isDirectory() });
      removed++;
    }
    return removed;
  }

  /**
   * Removes the empty directories below `dir`, deepest first, and `dir` itself when it ends up
   * empty (never root, .tmp or .pieces). Symbolic links are not followed; the names their
   * targets end in are added to `linked`.
   */
  private async sweepDirectories(dir: string, linked: Set<string>): Promise<{ removed: number; empty: boolean }> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isNotFound(err) || (err as NodeJS.ErrnoException)?.code === 'ENOTDIR') return { removed: 0, empty: false };
      throw err;
    }
    let removed = 0;
    let left = entries.length;
    for (const entry of entries) {
      if (entry.isSymbolicLink()) {
        // A composed object's link: its pieces stay.
        const target = await readlink(join(dir, entry.name)).catch(() => undefined);
        if (target !== undefined) linked.add(basename(target));
        continue;
      }
      if (!entry.isDirectory() || (dir === this.root && (entry.name === '.tmp' || entry.name === PIECES))) continue;
      const below = await this.sweepDirectories(join(dir, entry.name), linked);
      removed += below.removed;
      if (below.empty) left--;
    }
    if (left > 0 || dir === this.root) return { removed, empty: false };
    try {
      await rmdir(dir);
    } catch {
      // A put renamed an object in meanwhile (ENOTEMPTY), or another sweep was first.
      return { removed, empty: false };
    }
    return { removed: removed + 1, empty: true };
  }

  async list(prefix: string, options: ObjectListOptions): Promise<ObjectPage> {
    const limit = Math.min(Math.max(1, Math.floor(options.limit)), MAX_LIST_KEYS);
    // The directory holding every key with this prefix, and what its entries' names must start with.
    const cut = prefix.lastIndexOf('/') + 1;
    const dir = prefix.slice(0, cut);
    if (dir.startsWith('.tmp/') || dir.startsWith(`${PIECES}/`)) return { keys: [] };
    if (dir !== '') this.path(dir.slice(0, -1));
    // One more than asked for tells whether anything follows.
    const found: ListedObject[] = [];
    await this.walk(dir, prefix.slice(cut), options.after, limit + 1, found);
    if (found.length <= limit) return { keys: found };
    found.length = limit;
    return { keys: found, next: found[limit - 1]!.key };
  }

  /**
   * Appends to `found`, in key order, the objects below the directory `dir` (a key prefix ending
   * in "/", or "" for root) whose next path segment starts with `name` and whose key is after
   * `after`, until `found` holds `want`. Returns false once it does.
   */
  private async walk(dir: string, name: string, after: string | undefined, want: number, found: ListedObject[]): Promise<boolean> {
    for (const entry of await this.entries(dir)) {
      if (!entry.name.startsWith(name)) continue;
      const key = dir + entry.name;
      if (entry.directory) {
        // Every key below lies after key + "/" and starts with it: skip subtrees wholly at or before `after`.
        const below = key + '/';
        if (after !== undefined && !after.startsWith(below) && below < after) continue;
        if (!(await this.walk(below, '', after, want, found))) return false;
        continue;
      }
      if (after !== undefined && key <= after) continue;
      const info = await this.stat(key);
      // Deleted or replaced by a directory since readdir: not there any more.
      if (!info) continue;
      found.push({ key, ...info });
      if (found.length >= want) return false;
    }
    return true;
  }

  /**
   * The entries of the directory `dir` that can be keys, in key order: a directory sorts as its
   * name + "/". Names outside the key grammar (nothing this store wrote) and .tmp are left out.
   * Keys are ASCII (see path), so comparing strings compares their bytes.
   */
  private async entries(dir: string): Promise<Array<{ name: string; directory: boolean }>> {
    let dirents;
    try {
      dirents = await readdir(join(this.root, dir), { withFileTypes: true });
    } catch (err) {
      if (isNotFound(err) || (err as NodeJS.ErrnoException)?.code === 'ENOTDIR') return [];
      throw err;
    }
    const out: Array<{ name: string; directory: boolean; order: string }> = [];
    for (const d of dirents) {
      if ((dir === '' && (d.name === '.tmp' || d.name === PIECES)) || !SEGMENT.test(d.name)) continue;
      let directory = d.isDirectory();
      if (d.isSymbolicLink() && (await this.composedAt(join(this.root, dir, d.name)))) {
        directory = false;
      } else if (d.isSymbolicLink()) {
        // stat and get follow links, so list does too (a loop ends in ELOOP, thrown).
        const s = await stat(join(this.root, dir, d.name)).catch(() => undefined);
        if (!s) continue;
        directory = s.isDirectory();
      } else if (!directory && !d.isFile()) continue;
      out.push({ name: d.name, directory, order: directory ? `${d.name}/` : d.name });
    }
    return out.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
  }

  /**
   * Touches the source first, so the object appears at `to` with the time of the move (see the
   * port); then prunes the source's directory, which the move may have emptied.
   */
  async move(from: string, to: string): Promise<void> {
    const source = this.path(from);
    const target = this.path(to);
    const now = new Date();
    if (await this.composedAt(source)) {
      // The link itself is moved (its text is never followed by this store: see composedAt),
      // and its pieces touched, so that a reclaim walking meanwhile keeps them.
      await this.retire(source);
      await lutimes(source, now, now);
    } else {
      await utimes(source, now, now);
    }
    await this.place(source, target);
    await this.prune(dirname(source));
  }

  private path(key: string): string {
    // Keys are chosen by core (digests, upload ids); refuse anything that could escape root,
    // and the staging and pieces directories, which this store owns.
    const first = key.split('/')[0];
    if (!KEY.test(key) || key.split('/').some((p) => p === '.' || p === '..') || first === '.tmp' || first === PIECES) {
      throw new Error(`invalid object key ${JSON.stringify(key)}`);
    }
    return join(this.root, key);
  }
}

/**
 * Tries of one rename into a directory that concurrent deletes keep pruning. Each lost race
 * needs a delete to empty and remove the directory inside the gap between our mkdir and
 * rename, so this many in a row only happens when something is badly wrong.
 */
const MAX_PLACE_ATTEMPTS = 100;

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** The directory of composed objects' pieces (see compose): never listed; no key lies in it. */
const PIECES = '.pieces';
/** A pieces directory's name: a UUID and the object's size in bytes. */
const PIECES_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(\d{1,16})$/;
/** The file beside the pieces that lists their sizes, in order (a JSON array). */
const SIZES = 'sizes.json';

/** The name of a composed object's piece `i`: digits, so the pieces sort in order. */
function pieceName(i: number): string {
  return String(i).padStart(6, '0');
}

/** A composed object: its pieces directory, size and time (the link's). */
interface Composed {
  dir: string;
  size: number;
  lastModified: number;
}

/** Keys are ASCII path segments (besides "." and ".."), so no key can escape root. */
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const KEY = /^[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/;

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** Appends `chunks` to `file` at its position, however few bytes each writev takes. */
async function writeAll(file: FileHandle, chunks: Uint8Array[]): Promise<void> {
  let left = chunks;
  while (left.length > 0) {
    const { bytesWritten } = await file.writev(left);
    let n = bytesWritten;
    let i = 0;
    while (i < left.length && n >= left[i]!.byteLength) n -= left[i++]!.byteLength;
    left = left.slice(i);
    if (n > 0) left[0] = left[0]!.subarray(n);
  }
}
