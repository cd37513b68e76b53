export { createPool, getConnection, type ClientOptions, type PoolClient, type PoolTarget } from "./pool.ts";
export { Connection } from "./connection.ts";
export { DatabaseError, PoolError, type PoolErrorCode, type PostgresErrorFields } from "./errors.ts";
export type { Column, Result } from "./result.ts";
export { connect, pgOptions, postgresOptions, type WireOptions } from "./wire.ts";
export { WireSocket, type Tunnel } from "./socket.ts";
export type { WireMode, WireTarget } from "./protocol.ts";
