import { AbortMultipartUploadCommand, ListMultipartUploadsCommand, ListPartsCommand, type S3Client } from '@aws-sdk/client-s3';

/**
 * The S3 store's temporaries: multipart uploads that were never completed or aborted, because
 * the process writing them died (a put, a compose or a move in progress). S3 keeps their parts,
 * billed and invisible to ListObjectsV2, until someone aborts them; an
 * AbortIncompleteMultipartUpload lifecycle rule on the bucket does the same job where the
 * operator can set one.
 *
 *   for each upload under the prefix (ListMultipartUploads, paged):
 *     initiated within the grace                       -> alive, keep
 *     newest part (ListParts, paged) within the grace  -> alive, keep (a long write keeps sending parts)
 *     otherwise                                        -> AbortMultipartUpload
 *
 * "Within the grace" compares the server's timestamps with this instance's clock, so the grace
 * must dwarf any clock skew (DEFAULT_RECLAIM_AGE_MS is an hour). A write whose source stalls
 * for longer than the grace between two parts loses its upload and fails cleanly: its
 * UploadPart or CompleteMultipartUpload is refused (NoSuchUpload) and nothing becomes visible.
 */

export interface StaleUploads {
  client: S3Client;
  bucket: string;
  /** The store's key prefix: only uploads below it are looked at (with none, the whole bucket). */
  prefix: string;
}

/** Aborts the multipart uploads below the prefix untouched for longer than `olderThanMs`; returns how many. */
export async function abortStaleUploads({ client, bucket, prefix }: StaleUploads, olderThanMs: number): Promise<number> {
  const cutoff = Date.now() - olderThanMs;
  let aborted = 0;
  let KeyMarker: string | undefined;
  let UploadIdMarker: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix === '' ? undefined : prefix, KeyMarker, UploadIdMarker }),
    );
    for (const upload of page.Uploads ?? []) {
      const { Key, UploadId } = upload;
      if (!Key || !UploadId || !Key.startsWith(prefix)) continue;
      if ((upload.Initiated?.getTime() ?? 0) >= cutoff) continue;
      const touched = await newestPart(client, bucket, Key, UploadId);
      if (touched === undefined || touched >= cutoff) continue;
      try {
        await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key, UploadId }));
        aborted++;
      } catch (err) {
        // Completed or aborted meanwhile (by its writer or another sweep): nothing left to do.
        if (!isNoSuchUpload(err)) throw err;
      }
    }
    if (!page.IsTruncated || (page.NextKeyMarker === undefined && page.NextUploadIdMarker === undefined)) return aborted;
    KeyMarker = page.NextKeyMarker;
    UploadIdMarker = page.NextUploadIdMarker;
  }
}

/**
 * When the upload last received a part, in epoch ms (-Infinity without parts); undefined when
 * the upload is gone already.
 */
async function newestPart(client: S3Client, bucket: string, key: string, uploadId: string): Promise<number | undefined> {
  let newest = -Infinity;
  let PartNumberMarker: string | undefined;
  for (;;) {
    let page;
    try {
      page = await client.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumberMarker }));
    } catch (err) {
      if (isNoSuchUpload(err)) return undefined;
      throw err;
    }
    for (const part of page.Parts ?? []) newest = Math.max(newest, part.LastModified?.getTime() ?? -Infinity);
    if (!page.IsTruncated || page.NextPartNumberMarker === undefined) return newest;
    PartNumberMarker = page.NextPartNumberMarker;
  }
}

function isNoSuchUpload(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchUpload' || e?.$metadata?.httpStatusCode === 404;
}
