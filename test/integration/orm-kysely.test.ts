// Kysely through edgepool (examples/kysely): PostgresDialect over pg.Pool(pgOptions()).
// Proved on the server's side: select and insert … returning are the stored rows,
// a transfer commits both sides in one transaction or, when the debit is refused,
// neither; concurrent transfers keep the total; never more than maxConnections.
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { accountsOf, ensureSchema, openAccount, transfer, type Database } from "../../examples/kysely/bank.ts";
import { openKysely } from "../../examples/kysely/index.ts";
import { configure, observer, sampled, tenantName, testEnv } from "./helpers.ts";

const sql = observer();
afterAll(() => sql.end());

const MAX_CONNECTIONS = 2;

/** Runs `body` with a Kysely instance on a fresh tenant, sampling the tenant's server connections throughout. */
async function withKysely<T>(body: (db: Kysely<Database>, tag: string) => Promise<T>) {
  const tenant = tenantName("orm-kysely");
  await configure(tenant, { maxConnections: MAX_CONNECTIONS });
  const { value, samples } = await sampled(sql, tenant, async () => {
    const db = openKysely(testEnv.EDGEPOOL, tenant);
    try {
      return await body(db, tenant);
    } finally {
      await db.destroy();
    }
  });
  expect(samples.length).toBeGreaterThan(0);
  expect(Math.max(...samples)).toBeLessThanOrEqual(MAX_CONNECTIONS);
  return { result: value, tenant };
}

type Stored = { id: number; owner: string; balance: number; xmin: string };

function stored(ids: number[]) {
  return sql<Stored[]>`select id, owner, balance, xmin::text from kysely_accounts where id in ${sql(ids)} order by id`;
}

beforeAll(async () => {
  const tenant = tenantName("orm-kysely-setup");
  await configure(tenant);
  const db = openKysely(testEnv.EDGEPOOL, tenant);
  await ensureSchema(db);
  await db.destroy();
});

describe("Kysely with PostgresDialect through edgepool", () => {
  it("insert … returning answers the row the server stores, and a select reads the owner's rows back", async () => {
    const { result, tenant } = await withKysely(async (db, tag) => {
      const first = await openAccount(db, `owner ${tag}`, 10);
      const second = await openAccount(db, `owner ${tag}`, 20);
      return { first, second, selected: await accountsOf(db, `owner ${tag}`) };
    });
    const rows = (await sql<Stored[]>`select id, owner, balance from kysely_accounts where owner = ${`owner ${tenant}`} order by id`);
    expect(rows).toEqual([result.first, result.second]);
    expect(result.selected).toEqual(rows);
    expect(rows.map((r) => r.balance)).toEqual([10, 20]);
  });

  it("a transfer commits the credit and the debit together, in one transaction", async () => {
    const { result } = await withKysely(async (db, tag) => {
      const from = await openAccount(db, `payer ${tag}`, 100);
      const to = await openAccount(db, `payee ${tag}`, 5);
      return { from, to, moved: await transfer(db, from.id, to.id, 30) };
    });
    const [from, to] = await stored([result.from.id, result.to.id]);
    expect([from!.balance, to!.balance]).toEqual([70, 35]);
    expect(result.moved).toEqual({ from: { id: from!.id, owner: from!.owner, balance: 70 }, to: { id: to!.id, owner: to!.owner, balance: 35 } });
    expect(from!.xmin).toBe(to!.xmin);
  });

  it("a transfer whose debit breaks the balance check leaves both accounts as they were, and the instance stays usable", async () => {
    const { result } = await withKysely(async (db, tag) => {
      const from = await openAccount(db, `poor ${tag}`, 10);
      const to = await openAccount(db, `hopeful ${tag}`, 0);
      const error = await transfer(db, from.id, to.id, 11).then(() => undefined, (e: unknown) => e);
      const after = await transfer(db, from.id, to.id, 10);
      return { from, to, error, after };
    });
    expect((result.error as { code?: string }).code).toBe("23514");
    const [from, to] = await stored([result.from.id, result.to.id]);
    // Only the second transfer happened: the first one's credit was rolled back.
    expect([from!.balance, to!.balance]).toEqual([0, 10]);
    expect(result.after.to.balance).toBe(10);
  });

  it(`8 request-scoped instances transferring at once never hold more than ${MAX_CONNECTIONS} server connections, and the total is kept`, async () => {
    const tenant = tenantName("orm-kysely-many");
    await configure(tenant, { maxConnections: MAX_CONNECTIONS, acquireTimeoutMs: 20_000 });
    const setup = openKysely(testEnv.EDGEPOOL, tenant);
    const a = await openAccount(setup, `ring a ${tenant}`, 1_000);
    const b = await openAccount(setup, `ring b ${tenant}`, 1_000);
    await setup.destroy();
    // Opposite directions at once: the transfer's row locks (in id order) keep them from deadlocking.
    const { samples } = await sampled(sql, tenant, () =>
      Promise.all(
        Array.from({ length: 8 }, async (_, n) => {
          const db = openKysely(testEnv.EDGEPOOL, tenant);
          try {
            for (let i = 0; i < 3; i++) await (n % 2 ? transfer(db, a.id, b.id, n + 1) : transfer(db, b.id, a.id, n + 1));
          } finally {
            await db.destroy();
          }
        }),
      ),
    );
    const [ra, rb] = await stored([a.id, b.id]);
    // Odd n pay a→b (2+4+6+8)×3 = 60, even n pay b→a (1+3+5+7)×3 = 48.
    expect([ra!.balance, rb!.balance]).toEqual([1_000 - 60 + 48, 1_000 + 60 - 48]);
    expect(Math.max(...samples)).toBeGreaterThan(0);
    expect(Math.max(...samples)).toBeLessThanOrEqual(MAX_CONNECTIONS);
  });
});
