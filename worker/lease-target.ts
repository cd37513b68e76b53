import { RpcTarget } from "cloudflare:workers";
import type { CallOptions, LeaseApi, Reply } from "../src/protocol.ts";
import type { QueryResult } from "../src/result.ts";
import type { PgHandle } from "./driver.ts";
import type { Lease } from "./pool/connection.ts";
import type { Pool } from "./pool/pool.ts";
import { checkQuery, execute } from "./query.ts";
import { queryLimits, reply } from "./reply.ts";

/** A lease as the borrower holds it: an RPC target whose disposal releases it. */
export class LeaseTarget extends RpcTarget implements LeaseApi {
  readonly #pool: Pool<PgHandle>;
  readonly #lease: Lease<PgHandle>;

  constructor(pool: Pool<PgHandle>, lease: Lease<PgHandle>) {
    super();
    this.#pool = pool;
    this.#lease = lease;
  }

  async query(text: string, params?: unknown[], options?: CallOptions): Promise<Reply<QueryResult>> {
    const pool = this.#pool;
    return reply(pool.tenant, async () => {
      checkQuery(pool.tenant, text, params);
      const limits = queryLimits(pool, options);
      return pool.use(this.#lease, (handle) => execute(handle, text, params, limits));
    });
  }

  async release(): Promise<Reply<null>> {
    this.#pool.release(this.#lease);
    return { ok: true, value: null };
  }

  /** Runs when the borrower disposes its stub or its request ends. */
  [Symbol.dispose](): void {
    this.#pool.release(this.#lease);
  }
}
