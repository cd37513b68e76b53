// Fails to compile if an edgepool export's type did not resolve (became `any`) or lost its shape.
import { connect, createPool, getConnection, pgOptions, PoolError, postgresOptions, type PoolClient, type Result } from "edgepool";

type IsAny<T> = 0 extends 1 & T ? true : false;
export const resolved: [IsAny<typeof createPool>, IsAny<typeof getConnection>, IsAny<typeof connect>, IsAny<typeof postgresOptions>, IsAny<typeof pgOptions>, IsAny<PoolError>, IsAny<PoolClient>] =
  [false, false, false, false, false, false, false];
export const code: PoolError["code"] = "ACQUIRE_TIMEOUT";
export const rows = (db: PoolClient): Promise<Result<{ n: number }>> => db.sql<{ n: number }>`select 1 as n`;
