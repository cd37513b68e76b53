// The example's queries, written once for any Drizzle Postgres driver.
import { asc, eq } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { createTables, posts, users } from "./schema.ts";

/** A Drizzle database on either driver (postgres-js or node-postgres). */
export type Db = PgDatabase<PgQueryResultHKT>;

/** Creates the example's tables if they are missing. */
export async function ensureSchema(db: Db): Promise<void> {
  await db.execute(createTables);
}

/** Inserts an author; `insert … returning` gives back the stored row. */
export async function createUser(db: Db, name: string) {
  const [user] = await db.insert(users).values({ name }).returning();
  return user!;
}

/** Inserts a post by `userId`. */
export async function createPost(db: Db, userId: number, name: string) {
  const [post] = await db.insert(posts).values({ userId, name }).returning();
  return post!;
}

/**
 * Posts with their authors: the SQL selects `drizzle_posts.name` and
 * `drizzle_users.name`, two result columns both called `name`.
 */
export async function postsWithAuthors(db: Db, userId: number) {
  return db
    .select({ postId: posts.id, title: posts.name, authorId: users.id, author: users.name })
    .from(posts)
    .innerJoin(users, eq(posts.userId, users.id))
    .where(eq(users.id, userId))
    .orderBy(asc(posts.id));
}

/** Thrown inside the savepoint to discard the draft. */
export class DraftDiscarded extends Error {}

/**
 * One transaction: an author and a published post are committed together;
 * the draft is written inside a nested transaction (a savepoint) that throws,
 * so only the draft is rolled back.
 */
export async function publishWithDraft(db: Db, author: string, title: string, draft: string) {
  return db.transaction(async (tx) => {
    const [user] = await tx.insert(users).values({ name: author }).returning();
    const [post] = await tx.insert(posts).values({ userId: user!.id, name: title }).returning();
    try {
      await tx.transaction(async (sp) => {
        await sp.insert(posts).values({ userId: user!.id, name: draft });
        throw new DraftDiscarded(`draft "${draft}" discarded`);
      });
    } catch (error) {
      if (!(error instanceof DraftDiscarded)) throw error;
    }
    return { user: user!, post: post! };
  });
}

/**
 * An author and all their posts in one transaction: if any post is refused
 * (an empty title breaks the check constraint), nothing is stored.
 */
export async function registerAuthor(db: Db, author: string, titles: string[]) {
  return db.transaction(async (tx) => {
    const [user] = await tx.insert(users).values({ name: author }).returning();
    const stored = await tx.insert(posts).values(titles.map((name) => ({ userId: user!.id, name }))).returning();
    return { user: user!, posts: stored };
  });
}
