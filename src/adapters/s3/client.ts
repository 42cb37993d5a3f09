import { S3Client } from '@aws-sdk/client-s3';
import { createHash, createHmac } from 'node:crypto';

export interface S3Connection {
  endpoint?: string;
  region: string;
  forcePathStyle: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
}

/** An S3 client set up the way every S3-compatible server Outpost supports accepts. */
export function createS3Client(c: S3Connection): S3Client {
  const client = new S3Client({
    endpoint: c.endpoint,
    region: c.region,
    forcePathStyle: c.forcePathStyle,
    credentials: c.accessKeyId && c.secretAccessKey ? { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey } : undefined,
    // The default aws-chunked checksum trailer is stored inside the object by some S3-compatible
    // servers and refused by others; checksums are only sent where an API requires them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Expect: 100-continue costs every part upload a round trip before its body is sent; it only
    // saves sending a body the server would refuse, which a signed request almost never is.
    expectContinueHeader: false,
    sha256: NativeSha256,
  });
  // Object bytes are sent as UNSIGNED-PAYLOAD, as the SDK itself does for any streamed body: the
  // request (headers, key, length) is still signed, only the body is not hashed into the
  // signature. Hashing it cost every byte a SHA-256 pass in Outpost and another in the server,
  // which held pushes far below the server's speed. Nothing is lost: over HTTPS, TLS protects the
  // body; over plain HTTP, responses are unauthenticated anyway, so stored content rests, as it
  // always does, on the digests core verifies before a write commits and clients verify on pull.
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string> } | undefined;
      if (BYTE_BODIES.has(context.commandName ?? '') && request?.headers) request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      return next(args);
    },
    { step: 'build', name: 'outpostUnsignedPayload' },
  );
  return client;
}

/** The commands whose bodies are object bytes. */
const BYTE_BODIES = new Set(['PutObjectCommand', 'UploadPartCommand']);

type SourceData = string | ArrayBuffer | ArrayBufferView;

/**
 * SigV4 hashes every request body. The SDK's browser build, which Workers bundles get, falls
 * back to a pure-JS SHA-256 where there is no `window.crypto` (workerd), and that capped
 * uploads through a Worker at ~20 MiB/s. node:crypto is native on Node and on Workers
 * (nodejs_compat).
 */
class NativeSha256 {
  private hash: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;

  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }

  update(data: Uint8Array): void {
    this.hash.update(data);
  }

  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }

  reset(): void {
    this.hash = this.fresh();
  }

  private fresh() {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(this.secret));
  }
}

function bytes(data: SourceData): Uint8Array {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}
