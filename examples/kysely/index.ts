// Kysely through edgepool: its PostgresDialect over a pg.Pool built from
// pgOptions(). One Kysely instance per request (design §7: a Worker cannot
// keep I/O objects across requests).
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { pgOptions, type PoolTarget } from "../../src/index.ts";
import { accountsOf, ensureSchema, openAccount, transfer, type Database } from "./bank.ts";

interface Env {
  /** The coordinator's Durable Object namespace (bound from the "edgepool" Worker). */
  EDGEPOOL: PoolTarget;
}

/** A Kysely instance whose pg connections are sessions tunnelled to `tenant`'s coordinator; `destroy()` ends them. */
export function openKysely(target: PoolTarget, tenant: string): Kysely<Database> {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool(pgOptions(target, { tenant })) }) });
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const url = new URL(request.url);
    const db = openKysely(env.EDGEPOOL, "default");
    try {
      // A query per request, to keep the example self-contained: a real app creates its tables with migrations.
      await ensureSchema(db);
      if (url.pathname === "/") {
        const alice = await openAccount(db, "alice", 100);
        const bob = await openAccount(db, "bob", 0);
        const moved = await transfer(db, alice.id, bob.id, 40);
        return Response.json({ moved, alice: await accountsOf(db, "alice") });
      }
      return new Response("not found\n", { status: 404 });
    } finally {
      ctx.waitUntil(db.destroy());
    }
  },
};
