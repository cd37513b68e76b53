// Drizzle through edgepool, with either of its Postgres drivers: postgres-js
// over postgresOptions(), node-postgres over pgOptions(). One driver instance
// per request (design §7: a Worker cannot keep I/O objects across requests).
import { drizzle as drizzlePostgresJs } from "drizzle-orm/postgres-js";
import { drizzle as drizzleNodePg } from "drizzle-orm/node-postgres";
import pg from "pg";
import postgres from "postgres";
import { pgOptions, postgresOptions, type PoolTarget } from "../../src/index.ts";
import { createPost, createUser, ensureSchema, postsWithAuthors, publishWithDraft, type Db } from "./blog.ts";

interface Env {
  /** The coordinator's Durable Object namespace (bound from the "edgepool" Worker). */
  EDGEPOOL: PoolTarget;
}

/** A Drizzle database for one request, and the call that ends its driver. */
export interface Opened {
  db: Db;
  end(): Promise<void>;
}

/** Drizzle on postgres.js, tunnelled to `tenant`'s coordinator. */
export function openPostgresJs(target: PoolTarget, tenant: string): Opened {
  const client = postgres(postgresOptions(target, { tenant, onnotice: () => {} }));
  return { db: drizzlePostgresJs(client), end: () => client.end() };
}

/** Drizzle on node-postgres (it reads rows with `rowMode: "array"`), tunnelled to `tenant`'s coordinator. */
export function openNodePg(target: PoolTarget, tenant: string): Opened {
  const pool = new pg.Pool(pgOptions(target, { tenant }));
  return { db: drizzleNodePg(pool), end: () => pool.end() };
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const url = new URL(request.url);
    const open = url.searchParams.get("driver") === "node-postgres" ? openNodePg : openPostgresJs;
    const { db, end } = open(env.EDGEPOOL, "default");
    try {
      // A query per request, to keep the example self-contained: a real app creates its tables with migrations.
      await ensureSchema(db);
      if (url.pathname === "/publish") {
        const { user } = await publishWithDraft(db, "ada", `post at ${new Date().toISOString()}`, "a draft nobody sees");
        return Response.json(await postsWithAuthors(db, user.id));
      }
      if (url.pathname === "/") {
        const user = await createUser(db, "grace");
        await createPost(db, user.id, "hello from drizzle");
        return Response.json({ posts: await postsWithAuthors(db, user.id), try: ["/publish", "/?driver=node-postgres"] });
      }
      return new Response("not found\n", { status: 404 });
    } finally {
      ctx.waitUntil(end());
    }
  },
};
