import { describe, expect, it } from "vitest";
import { BatchRunner, runBatch, type BatchDeps } from "../../worker/wire/batch.ts";
import { rejection } from "./helpers.ts";
import { concat, fe, makeWire, TestClient, type Wire, type FakeBackend } from "./wire-helpers.ts";

function deps(wire: Wire): BatchDeps<FakeBackend> {
  return {
    tenant: "acme", mode: "transaction", pool: wire.pool, clock: wire.clock, prepared: wire.prepared, stats: wire.stats,
    cancelKeys: wire.cancelKeys, parameters: () => new Map(),
  };
}

function types(bytes: Uint8Array): string {
  const t = new TestClient(makeWire(), {});
  t.take(bytes);
  return t.types();
}

describe("batches (the built-in client's path)", () => {
  it("runs one batch and resolves with every byte up to the last ReadyForQuery", async () => {
    const wire = makeWire();
    const answer = runBatch(deps(wire), concat([fe.parse("", "select $1"), fe.bind("", ["1"]), fe.execute(), fe.sync(), fe.query("select 'b'")]), 1 << 20);
    const bytes = await answer;
    expect(types(bytes)).toBe("1 2 D C Z T D C Z");
    await wire.clock.advance(0);
    expect(wire.pool.stats().leased).toBe(0);
    expect(wire.stats.clients).toBe(0);
  });

  it("a transaction spans batches of one runner on one backend", async () => {
    const wire = makeWire();
    const runner = new BatchRunner(deps(wire), 1 << 20);
    expect(types(await runner.run(fe.query("begin")))).toBe("C Z");
    expect(wire.pool.stats().leased).toBe(1);
    expect(types(await runner.run(fe.query("commit")))).toBe("C Z");
    expect(wire.pool.stats().leased).toBe(0);
    runner.end();
  });

  it("an answer over maxBytes fails with RESULT_TOO_LARGE; the rest is read and dropped, and the next batch is clean", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const runner = new BatchRunner(deps(wire), 100);
    const error = await rejection(runner.run(fe.query("rows 50")), "RESULT_TOO_LARGE");
    expect(error.message).toMatch(/^RESULT_TOO_LARGE: /);
    expect(types(await runner.run(fe.query("select 'next'")))).toBe("T D C Z");
    runner.end();
  });

  it("a FATAL error resolves with the ErrorResponse and ends the session", async () => {
    const wire = makeWire({ maxConnections: 0 });
    const runner = new BatchRunner(deps(wire), 1 << 20);
    expect(types(await runner.run(fe.query("select 1")))).toBe("E");
    await rejection(runner.run(fe.query("select 1")), "BAD_REQUEST");
  });
});
