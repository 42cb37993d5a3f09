import { S3Client } from '@aws-sdk/client-s3';

export interface S3Connection {
  endpoint?: string;
  region: string;
  forcePathStyle: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
}

/** An S3 client set up the way every S3-compatible server Outpost supports accepts. */
export function createS3Client(c: S3Connection): S3Client {
  return new S3Client({
    endpoint: c.endpoint,
    region: c.region,
    forcePathStyle: c.forcePathStyle,
    credentials: c.accessKeyId && c.secretAccessKey ? { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey } : undefined,
    // The default aws-chunked checksum trailer is stored inside the object by some S3-compatible
    // servers and refused by others; checksums are only sent where an API requires them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}
