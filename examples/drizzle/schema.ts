// Two tables whose columns share names (id, name): a join selecting both `name`
// columns is what a pooler that decodes rows by column name would get wrong.
import { sql } from "drizzle-orm";
import { check, integer, pgTable, serial, text } from "drizzle-orm/pg-core";

/** Authors. */
export const users = pgTable("drizzle_users", {
  id: serial("id").primaryKey(),
  name: text("name").notNull(),
});

/** Posts; a post's `name` is its title and may not be empty. */
export const posts = pgTable(
  "drizzle_posts",
  {
    id: serial("id").primaryKey(),
    userId: integer("user_id").notNull().references(() => users.id),
    name: text("name").notNull(),
  },
  (table) => [check("drizzle_posts_name_not_empty", sql`${table.name} <> ''`)],
);

/** The DDL for both tables (the example ships no migration tool). */
export const createTables = sql`
  create table if not exists drizzle_users (id serial primary key, name text not null);
  create table if not exists drizzle_posts (
    id serial primary key,
    user_id integer not null references drizzle_users (id),
    name text not null constraint drizzle_posts_name_not_empty check (name <> '')
  )`;
