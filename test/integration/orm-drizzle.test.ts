// Drizzle through edgepool (examples/drizzle), with its postgres-js driver and its
// node-postgres driver (which reads rows with rowMode "array"), proved on the
// server's side: same-named join columns, insert … returning, a transaction with a
// rolled-back savepoint, a failed transaction, and never more than maxConnections.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPost, createUser, ensureSchema, postsWithAuthors, publishWithDraft, registerAuthor } from "../../examples/drizzle/blog.ts";
import { openNodePg, openPostgresJs, type Opened } from "../../examples/drizzle/index.ts";
import type { PoolTarget } from "../../src/index.ts";
import { configure, observer, sampled, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

const MAX_CONNECTIONS = 2;

/** Runs `body` with a Drizzle instance on a fresh tenant, sampling the tenant's server connections throughout. */
async function withDb<T>(open: (target: PoolTarget, tenant: string) => Opened, body: (db: Opened["db"], tag: string) => Promise<T>) {
  const tenant = tenantName("orm-drizzle");
  await configure(tenant, { maxConnections: MAX_CONNECTIONS });
  const { value, samples } = await sampled(sql, tenant, async () => {
    const { db, end } = open(testEnv.EDGEPOOL, tenant);
    try {
      return await body(db, tenant);
    } finally {
      await end();
    }
  });
  expect(samples.length).toBeGreaterThan(0);
  expect(Math.max(...samples)).toBeLessThanOrEqual(MAX_CONNECTIONS);
  return { result: value, tenant };
}

beforeAll(async () => {
  const tenant = tenantName("orm-drizzle-setup");
  await configure(tenant);
  const { db, end } = openNodePg(testEnv.EDGEPOOL, tenant);
  await ensureSchema(db);
  await end();
});

describe.each([
  ["postgres-js", openPostgresJs],
  ["node-postgres", openNodePg],
] as const)("Drizzle with its %s driver through edgepool", (_driver, open) => {
  it("a join selecting drizzle_posts.name and drizzle_users.name returns both same-named columns with their own values", async () => {
    const { result } = await withDb(open, async (db, tag) => {
      const user = await createUser(db, `author ${tag}`);
      const first = await createPost(db, user.id, `first post ${tag}`);
      const second = await createPost(db, user.id, `second post ${tag}`);
      return { user, first, second, rows: await postsWithAuthors(db, user.id) };
    });
    expect(result.rows).toEqual([
      { postId: result.first.id, title: result.first.name, authorId: result.user.id, author: result.user.name },
      { postId: result.second.id, title: result.second.name, authorId: result.user.id, author: result.user.name },
    ]);
    // The server holds the same pairs: post names are not author names.
    const server = await sql<{ title: string; author: string }[]>`
      select p.name as title, u.name as author from drizzle_posts p join drizzle_users u on u.id = p.user_id
      where u.id = ${result.user.id} order by p.id`;
    expect(server).toEqual(result.rows.map(({ title, author }) => ({ title, author })));
    expect(new Set(server.map((r) => r.title)).has(result.user.name)).toBe(false);
  });

  it("insert … returning gives the row the server stores", async () => {
    const { result, tenant } = await withDb(open, async (db, tag) => {
      const user = await createUser(db, `returning ${tag}`);
      return { user, post: await createPost(db, user.id, `returned ${tag}`) };
    });
    const [user] = await sql<{ id: number; name: string }[]>`select id, name from drizzle_users where name = ${`returning ${tenant}`}`;
    expect(user).toEqual(result.user);
    const [post] = await sql<{ id: number; userId: number; name: string }[]>`select id, user_id as "userId", name from drizzle_posts where id = ${result.post.id}`;
    expect(post).toEqual(result.post);
  });

  it("a transaction commits its author and post together in one transaction, and the rolled-back savepoint's draft is absent", async () => {
    const { result, tenant } = await withDb(open, (db, tag) => publishWithDraft(db, `publisher ${tag}`, `published ${tag}`, `draft ${tag}`));
    const rows = await sql<{ kind: string; id: number; name: string; xmin: string }[]>`
      select 'user' as kind, id, name, xmin::text from drizzle_users where id = ${result.user.id}
      union all
      select 'post', id, name, xmin::text from drizzle_posts where user_id = ${result.user.id}
      order by kind desc, id`;
    expect(rows.map(({ kind, id, name }) => ({ kind, id, name }))).toEqual([
      { kind: "user", id: result.user.id, name: `publisher ${tenant}` },
      { kind: "post", id: result.post.id, name: `published ${tenant}` },
    ]);
    // Both rows were written by the same (top-level) transaction.
    expect(rows[0]!.xmin).toBe(rows[1]!.xmin);
    const [drafts] = await sql<{ n: number }[]>`select count(*)::int as n from drizzle_posts where name = ${`draft ${tenant}`}`;
    expect(drafts!.n).toBe(0);
  });

  it("a transaction that fails midway (check constraint on its second post) leaves none of its rows", async () => {
    const { result, tenant } = await withDb(open, async (db, tag) => {
      const error = await registerAuthor(db, `failing ${tag}`, [`kept? ${tag}`, ""]).then(() => undefined, (e: unknown) => e);
      // The same instance stays usable after the rollback.
      const after = await registerAuthor(db, `succeeding ${tag}`, [`one ${tag}`, `two ${tag}`]);
      return { error, after };
    });
    // drizzle-orm wraps the driver's error; the server's SQLSTATE is on its cause.
    const cause = (result.error as { cause?: { code?: string } }).cause;
    expect(cause?.code).toBe("23514");
    const [failed] = await sql<{ users: number; posts: number }[]>`
      select (select count(*)::int from drizzle_users where name = ${`failing ${tenant}`}) as users,
             (select count(*)::int from drizzle_posts where name = ${`kept? ${tenant}`}) as posts`;
    expect(failed).toEqual({ users: 0, posts: 0 });
    const [ok] = await sql<{ n: number }[]>`select count(*)::int as n from drizzle_posts where user_id = ${result.after.user.id}`;
    expect(ok!.n).toBe(2);
  });

  it(`8 request-scoped instances at once never hold more than ${MAX_CONNECTIONS} server connections, and each sees its own rows`, async () => {
    const tenant = tenantName("orm-drizzle-many");
    await configure(tenant, { maxConnections: MAX_CONNECTIONS, acquireTimeoutMs: 20_000 });
    const { value: results, samples } = await sampled(sql, tenant, () =>
      Promise.all(
        Array.from({ length: 8 }, async (_, n) => {
          const { db, end } = open(testEnv.EDGEPOOL, tenant);
          try {
            const { user } = await publishWithDraft(db, `many ${n} ${tenant}`, `post ${n} ${tenant}`, `draft ${n} ${tenant}`);
            return { n, user, rows: await postsWithAuthors(db, user.id) };
          } finally {
            await end();
          }
        }),
      ),
    );
    for (const { n, rows } of results) {
      expect(rows.map(({ title, author }) => ({ title, author }))).toEqual([{ title: `post ${n} ${tenant}`, author: `many ${n} ${tenant}` }]);
    }
    expect(Math.max(...samples)).toBeGreaterThan(0);
    expect(Math.max(...samples)).toBeLessThanOrEqual(MAX_CONNECTIONS);
  });
});
