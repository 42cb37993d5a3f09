import { DynamoDBClient } from '@aws-sdk/client-dynamodb';

export interface DynamoConnection {
  endpoint?: string;
  region: string;
  accessKeyId?: string;
  secretAccessKey?: string;
}

export function createDynamoClient(c: DynamoConnection): DynamoDBClient {
  return new DynamoDBClient({
    endpoint: c.endpoint,
    region: c.region,
    credentials: c.accessKeyId && c.secretAccessKey ? { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey } : undefined,
  });
}
