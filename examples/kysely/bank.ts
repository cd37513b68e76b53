// The example's queries: a select, an insert returning, and a transfer in one transaction.
import { sql, type Generated, type Kysely } from "kysely";

/** The example's tables, as Kysely sees them. */
export interface Database {
  kysely_accounts: {
    id: Generated<number>;
    owner: string;
    /** Never below zero (a check constraint). */
    balance: number;
  };
}

/** Creates the example's table if it is missing (the example ships no migrations). */
export async function ensureSchema(db: Kysely<Database>): Promise<void> {
  await sql`create table if not exists kysely_accounts (
    id serial primary key,
    owner text not null,
    balance integer not null constraint kysely_accounts_balance_not_negative check (balance >= 0)
  )`.execute(db);
}

/** Opens an account; `insert … returning` gives back the stored row. */
export async function openAccount(db: Kysely<Database>, owner: string, balance: number) {
  return db.insertInto("kysely_accounts").values({ owner, balance }).returningAll().executeTakeFirstOrThrow();
}

/** An owner's accounts, oldest first. */
export async function accountsOf(db: Kysely<Database>, owner: string) {
  return db.selectFrom("kysely_accounts").selectAll().where("owner", "=", owner).orderBy("id").execute();
}

/**
 * Moves `amount` from one account to another in one transaction. Both rows are
 * locked first, in id order, so opposite transfers queue instead of
 * deadlocking. The credit is written first: if the debit then breaks the
 * balance check, the credit is rolled back with it.
 */
export async function transfer(db: Kysely<Database>, fromId: number, toId: number, amount: number) {
  return db.transaction().execute(async (trx) => {
    await trx.selectFrom("kysely_accounts").select("id").where("id", "in", [fromId, toId]).orderBy("id").forUpdate().execute();
    const to = await trx.updateTable("kysely_accounts").set({ balance: sql`balance + ${amount}` }).where("id", "=", toId).returningAll().executeTakeFirstOrThrow();
    const from = await trx.updateTable("kysely_accounts").set({ balance: sql`balance - ${amount}` }).where("id", "=", fromId).returningAll().executeTakeFirstOrThrow();
    return { from, to };
  });
}
