import { describe, expect, it } from 'vitest';
import { ConfigError, readConfig } from '../../src/entry/config.js';

function problems(env: Record<string, string>, runtime: 'node' | 'workers' = 'node'): string[] {
  try {
    readConfig(env, runtime);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe('readConfig', () => {
  it('defaults to the local store on 127.0.0.1:5000 under ./data', () => {
    expect(readConfig({ PATH: '/usr/bin' })).toEqual({
      host: '127.0.0.1',
      port: 5000,
      store: { kind: 'local', dataDir: './data' },
      uploadTtlSeconds: 86_400,
      redirectSeconds: 0,
      chunkMinBytes: 0,
      mirror: { upstreams: [], hosted: [], fillPartBytes: 2 * 1024 * 1024, fillLeaseMs: 10_000, fillMemoryBytes: 256 * 1024 * 1024 },
      gc: { graceMs: 24 * 60 * 60_000, intervalMs: 60 * 60_000, mirror: {}, hosted: [] },
      policies: [],
      immutableTags: [],
      shutdownSeconds: 25,
      logLevel: 'info',
      maxBlobBytes: 64 * 1024 ** 3,
    });
  });

  it('reads the shutdown deadline and the log level, and refuses values that are neither', () => {
    expect(readConfig({ OUTPOST_SHUTDOWN_SECONDS: '0', OUTPOST_LOG_LEVEL: 'off' })).toMatchObject({ shutdownSeconds: 0, logLevel: 'off' });
    expect(readConfig({ OUTPOST_SHUTDOWN_SECONDS: '3600', OUTPOST_LOG_LEVEL: 'debug' })).toMatchObject({ shutdownSeconds: 3600, logLevel: 'debug' });
    const found = problems({ OUTPOST_SHUTDOWN_SECONDS: '25s', OUTPOST_LOG_LEVEL: 'verbose' }).join('\n');
    expect(found).toMatch(/OUTPOST_SHUTDOWN_SECONDS must be an integer from 0 to 3600, got "25s"/);
    expect(found).toMatch(/OUTPOST_LOG_LEVEL must be one of debug, info, warn, error, off, got "verbose"/);
    expect(problems({ OUTPOST_SHUTDOWN_SECONDS: '3601' })).toHaveLength(1);
    // Workers have no process to stop; the log level applies there too.
    const cloud = { OUTPOST_S3_BUCKET: 'b', OUTPOST_DYNAMODB_TABLE: 't' };
    expect(problems({ ...cloud, OUTPOST_SHUTDOWN_SECONDS: '5' }, 'workers').join('\n')).toMatch(/OUTPOST_SHUTDOWN_SECONDS does not apply on Workers/);
    expect(readConfig({ ...cloud, OUTPOST_LOG_LEVEL: 'warn' }, 'workers').logLevel).toBe('warn');
  });

  it('reports every problem at once, naming the variable', () => {
    const found = problems({ OUTPOST_PORT: 'http', OUTPOST_DATA_DRI: '/srv', OUTPOST_UPLOAD_TTL_SECONDS: '5', OUTPOST_STORE: 'ftp' });
    expect(found).toHaveLength(4);
    expect(found.join('\n')).toMatch(/OUTPOST_DATA_DRI is not a known setting/);
    expect(found.join('\n')).toMatch(/OUTPOST_PORT must be an integer from 0 to 65535, got "http"/);
    expect(found.join('\n')).toMatch(/OUTPOST_UPLOAD_TTL_SECONDS must be an integer from 60/);
    expect(found.join('\n')).toMatch(/OUTPOST_STORE must be "local" or "cloud"/);
  });

  it('requires a bucket and a table for the cloud store, and keys in pairs', () => {
    const found = problems({ OUTPOST_S3_ACCESS_KEY_ID: 'AK', OUTPOST_S3_ENDPOINT: 'not a url' }, 'workers');
    expect(found.join('\n')).toMatch(/OUTPOST_S3_BUCKET is required/);
    expect(found.join('\n')).toMatch(/OUTPOST_DYNAMODB_TABLE is required/);
    expect(found.join('\n')).toMatch(/OUTPOST_S3_ACCESS_KEY_ID and OUTPOST_S3_SECRET_ACCESS_KEY must be set together/);
    expect(found.join('\n')).toMatch(/OUTPOST_S3_ENDPOINT must be an http\(s\) URL/);
  });

  it('reads a complete cloud configuration; DynamoDB falls back to the S3 keys', () => {
    const config = readConfig(
      {
        OUTPOST_S3_ENDPOINT: 'http://127.0.0.1:7480',
        OUTPOST_S3_BUCKET: 'blobs',
        OUTPOST_S3_ACCESS_KEY_ID: 'AK',
        OUTPOST_S3_SECRET_ACCESS_KEY: 'SK',
        OUTPOST_DYNAMODB_TABLE: 'index',
        OUTPOST_REDIRECT_SECONDS: '300',
        // Bindings that are not strings (Workers) are not settings.
        SOME_BINDING: {} as unknown as string,
      },
      'workers',
    );
    expect(config.redirectSeconds).toBe(300);
    expect(config.store).toMatchObject({
      kind: 'cloud',
      s3: { endpoint: 'http://127.0.0.1:7480', bucket: 'blobs', forcePathStyle: true, accessKeyId: 'AK', partBytes: 8 * 1024 * 1024 },
      dynamodb: { table: 'index', region: 'us-east-1', accessKeyId: 'AK', secretAccessKey: 'SK' },
    });
  });

  it('refuses settings that do not apply on Workers, and a host that is not one', () => {
    const found = problems({ OUTPOST_PORT: '8080', OUTPOST_DATA_DIR: '/srv', OUTPOST_STORE: 'local' }, 'workers').join('\n');
    expect(found).toMatch(/OUTPOST_PORT does not apply on Workers/);
    expect(found).toMatch(/OUTPOST_DATA_DIR does not apply on Workers/);
    expect(found).toMatch(/OUTPOST_STORE must be "cloud" on Workers/);
    expect(problems({ OUTPOST_HOST: 'a host' }).join('\n')).toMatch(/OUTPOST_HOST must be an IP address or host name/);
    expect(problems({ OUTPOST_HOST: '::1' })).toEqual([]);
  });
});
