// Prisma 7 through edgepool (examples/prisma): @prisma/adapter-pg over pgOptions(),
// the client generated for workerd. Proved on the server's side: a created note is
// the row stored, findMany reads it back, an interactive transaction commits all its
// rows in one transaction or, on a throw, none; never more than maxConnections.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openPrisma } from "../../examples/prisma/index.ts";
import { addNotes, createNote, EmptyNote, ensureSchema, notesBy } from "../../examples/prisma/notes.ts";
import type { PrismaClient } from "../../examples/prisma/generated/client.ts";
import { configure, observer, sampled, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

const MAX_CONNECTIONS = 2;

/** Runs `body` with a Prisma client on a fresh tenant, sampling the tenant's server connections throughout. */
async function withPrisma<T>(body: (prisma: PrismaClient, tag: string) => Promise<T>) {
  const tenant = tenantName("orm-prisma");
  await configure(tenant, { maxConnections: MAX_CONNECTIONS });
  const { value, samples } = await sampled(sql, tenant, async () => {
    const prisma = openPrisma(testEnv.EDGEPOOL, tenant);
    try {
      return await body(prisma, tenant);
    } finally {
      await prisma.$disconnect();
    }
  });
  expect(samples.length).toBeGreaterThan(0);
  expect(Math.max(...samples)).toBeLessThanOrEqual(MAX_CONNECTIONS);
  return { result: value, tenant };
}

type Stored = { id: number; author: string; body: string; createdAt: Date; xmin: string };

function storedBy(author: string) {
  return sql<Stored[]>`select id, author, body, created_at as "createdAt", xmin::text from prisma_notes where author = ${author} order by id`;
}

beforeAll(async () => {
  const tenant = tenantName("orm-prisma-setup");
  await configure(tenant);
  const prisma = openPrisma(testEnv.EDGEPOOL, tenant);
  await ensureSchema(prisma);
  await prisma.$disconnect();
});

describe("Prisma with @prisma/adapter-pg through edgepool", () => {
  it("note.create answers the row the server stores, and note.findMany reads the author's rows back", async () => {
    const { result, tenant } = await withPrisma(async (prisma, tag) => {
      const first = await createNote(prisma, `author ${tag}`, "first");
      const second = await createNote(prisma, `author ${tag}`, "second");
      return { first, second, found: await notesBy(prisma, `author ${tag}`) };
    });
    const stored = (await storedBy(`author ${tenant}`)).map(({ xmin: _, ...row }) => row);
    expect(stored).toEqual([result.first, result.second]);
    expect(result.found).toEqual(stored);
  });

  it("an interactive transaction that succeeds commits all its notes, written by one transaction", async () => {
    const { result, tenant } = await withPrisma((prisma, tag) => addNotes(prisma, `thread ${tag}`, ["one", "two", "three"]));
    const stored = await storedBy(`thread ${tenant}`);
    expect(stored.map(({ xmin: _, ...row }) => row)).toEqual(result);
    expect(stored.map((r) => r.body)).toEqual(["one", "two", "three"]);
    expect(new Set(stored.map((r) => r.xmin)).size).toBe(1);
  });

  it("an interactive transaction that throws after two inserts leaves none of them, and the client stays usable", async () => {
    const { result, tenant } = await withPrisma(async (prisma, tag) => {
      const error = await addNotes(prisma, `rolled back ${tag}`, ["one", "two", "", "four"]).then(() => undefined, (e: unknown) => e);
      return { error, after: await addNotes(prisma, `after ${tag}`, ["kept"]) };
    });
    expect(result.error).toBeInstanceOf(EmptyNote);
    expect(await storedBy(`rolled back ${tenant}`)).toEqual([]);
    expect((await storedBy(`after ${tenant}`)).map((r) => r.body)).toEqual(["kept"]);
  });

  it(`8 request-scoped clients at once never hold more than ${MAX_CONNECTIONS} server connections, and each commits its own notes`, async () => {
    const tenant = tenantName("orm-prisma-many");
    await configure(tenant, { maxConnections: MAX_CONNECTIONS, acquireTimeoutMs: 20_000 });
    const { samples } = await sampled(sql, tenant, () =>
      Promise.all(
        Array.from({ length: 8 }, async (_, n) => {
          const prisma = openPrisma(testEnv.EDGEPOOL, tenant);
          try {
            await addNotes(prisma, `many ${n} ${tenant}`, [`a${n}`, `b${n}`]);
          } finally {
            await prisma.$disconnect();
          }
        }),
      ),
    );
    for (let n = 0; n < 8; n++) expect((await storedBy(`many ${n} ${tenant}`)).map((r) => r.body)).toEqual([`a${n}`, `b${n}`]);
    expect(Math.max(...samples)).toBeGreaterThan(0);
    expect(Math.max(...samples)).toBeLessThanOrEqual(MAX_CONNECTIONS);
  });
});
