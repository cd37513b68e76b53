import { describe, expect, it } from "vitest";
import { seeded } from "./helpers.ts";
import { concat, fe, makeWire, type TestClient, type Wire } from "./wire-helpers.ts";

/** One Sync or Query: the rows it yields, the statement names it parses. */
interface Request {
  tags: string[];
  parses: string[];
}

interface Batch {
  /** Byte parts, sent in separate steps (a Parse/Describe/Flush exchange, then Bind/Execute/Sync). */
  parts: Uint8Array[];
  requests: Request[];
}

interface Sim {
  id: number;
  client: TestClient;
  todo: { part: Uint8Array; batch?: Batch }[];
  /** Requests sent and not yet answered by a ReadyForQuery, in order. */
  inflight: Request[];
  seen: number;
  n: number;
  parsed: Set<string>;
  failed: boolean;
  /** A one-shot session (the built-in client's): its self-contained batches may ride a busy backend. */
  shared: boolean;
}

const MAX = 3;
const DEPTH = 3;

function makeBatch(sim: Sim, random: () => number): Batch {
  const tag = () => `s${sim.id}:${sim.n++}`;
  const r = (tags: string[], parses: string[] = []): Request => ({ tags, parses });
  let kind = Math.floor(random() * 6);
  // A named statement is used only when nothing is in flight, so the test knows whether its Parse was refused.
  if (kind === 2 && sim.inflight.length > 0) kind = 0;
  if (kind === 0) {
    const t = tag();
    return { parts: [fe.query(`select '${t}'`)], requests: [r([t])] };
  }
  if (kind === 1) {
    const t = tag();
    return { parts: [concat([fe.parse("", "select $1"), fe.bind("", [t]), fe.execute(), fe.sync()])], requests: [r([t])] };
  }
  if (kind === 2) {
    // A few names per session, a few texts across sessions: shared server-side names, re-prepares, evictions.
    const name = `st${Math.floor(random() * 3)}`;
    const t = tag();
    const parse = sim.parsed.has(name) ? [] : [fe.parse(name, `select $1::text${name.slice(-1)}`)];
    sim.parsed.add(name);
    return { parts: [concat([...parse, fe.bind(name, [t]), fe.execute(), fe.sync()])], requests: [r([t], parse.length > 0 ? [name] : [])] };
  }
  if (kind === 3) {
    const t = tag();
    return { parts: [concat([fe.parse("", "select $1"), fe.describe("S", ""), fe.flush()]), concat([fe.bind("", [t]), fe.execute(), fe.sync()])], requests: [r([t])] };
  }
  if (kind === 4) {
    const t1 = tag();
    const t2 = tag();
    return { parts: [concat([fe.query("begin"), fe.query(`select '${t1}'`)]), fe.query(`select '${t2}'`), fe.query("commit")], requests: [r([]), r([t1]), r([t2]), r([])] };
  }
  const t = tag();
  return { parts: [concat([fe.query(`select '${t}'`), fe.parse("", "select $1"), fe.bind("", [t + "b"]), fe.execute(), fe.sync()])], requests: [r([t]), r([t + "b"])] };
}

/** Checks every message a session got since last time against its own requests, in order. */
function check(sim: Sim): void {
  const received = sim.client.received;
  for (; sim.seen < received.length; sim.seen++) {
    const m = received[sim.seen]!;
    const request = sim.inflight[0];
    if (!request) throw new Error(`session ${sim.id} got ${m.type} "${m.text}" with nothing in flight`);
    if (m.type === "D") {
      const want = request.tags.shift();
      if (m.text !== want) throw new Error(`session ${sim.id} got row "${m.text}", expected "${want}"`);
    } else if (m.type === "E") {
      const code = m.fields!.get("C");
      if (code !== "53300") throw new Error(`session ${sim.id} got error ${code}: ${m.text}`);
      sim.failed = true;
      for (const name of request.parses) sim.parsed.delete(name);
    } else if (m.type === "Z") {
      sim.inflight.shift();
      if (!sim.failed && request.tags.length > 0) throw new Error(`session ${sim.id}: request ended with rows missing: ${request.tags.join(",")}`);
      sim.failed = false;
    }
  }
}

function invariants(wire: Wire, sims: Sim[]): void {
  const attached = sims.filter((s) => s.client.session.backend !== undefined);
  const byBackend = Map.groupBy(attached, (s) => s.client.session.backend!);
  for (const on of byBackend.values()) {
    if (on.length === 1) continue;
    // Several sessions on one backend: only one-shot riders of one shared lease, within pipelineDepth.
    expect(on.every((s) => s.shared), `backend on sessions ${on.map((s) => s.id).join(",")}`).toBe(true);
    expect(new Set(on.map((s) => s.client.session.lease)).size).toBe(1);
    expect(on.length).toBeLessThanOrEqual(DEPTH);
  }
  expect(wire.pool.total).toBeLessThanOrEqual(MAX);
  expect(wire.driver.backends.filter((b) => !b.closed).length).toBeLessThanOrEqual(MAX);
  for (const b of wire.driver.backends) expect(b.orphans).toBe(0);
  expect(wire.stats.clientsActive).toBe(attached.length);
}

/** `riders`: which sessions are one-shot sessions; `holds`: backends stop answering for a while (busy connections, so one-shots ride). */
async function run(seed: number, riders: (id: number) => boolean, holds = false): Promise<number> {
  const random = seeded(seed);
  const wire = makeWire({ maxConnections: MAX, maxWaiters: 4, pipelineDepth: DEPTH }, { maxPreparedStatements: 2, random });
  const sims: Sim[] = Array.from({ length: 8 }, (_, id) => {
    const shared = riders(id);
    const client = wire.client({ acquireTimeoutMs: 5 + Math.floor(random() * 60), shared });
    return { id, client, todo: [], inflight: [], seen: 0, n: 0, parsed: new Set(), failed: false, shared };
  });
  for (let step = 0; step < 400; step++) {
    const sim = sims[Math.floor(random() * sims.length)]!;
    if (random() < 0.25) {
      await wire.clock.advance(Math.floor(random() * 40));
    } else if (holds && random() < 0.15) {
      const backend = wire.driver.backends[Math.floor(random() * wire.driver.backends.length)];
      if (backend?.held) backend.resume();
      else if (backend) backend.held = true;
      await wire.clock.advance(0);
    } else {
      if (sim.todo.length === 0 && sim.inflight.length < 2) {
        const batch = makeBatch(sim, random);
        sim.todo.push(...batch.parts.map((part, i) => ({ part, batch: i === 0 ? batch : undefined })));
      }
      const next = sim.todo.shift();
      if (next) {
        if (next.batch) sim.inflight.push(...next.batch.requests);
        // Random chunking, one byte at a time included; a one-shot session mostly sends whole batches, as the built-in client does.
        const whole = sim.shared && random() < 0.7;
        let at = 0;
        while (at < next.part.length) {
          const size = whole ? next.part.length : random() < 0.2 ? 1 : 1 + Math.floor(random() * next.part.length);
          void sim.client.session.receive(next.part.subarray(at, at + size));
          at += size;
        }
      }
      await wire.clock.advance(0);
    }
    for (const s of sims) check(s);
    invariants(wire, sims);
  }
  // Finish: send what is left, let every wait time out or be served.
  for (const backend of wire.driver.backends) backend.resume();
  for (let round = 0; round < 50; round++) {
    for (const sim of sims) {
      const next = sim.todo.shift();
      if (next) {
        if (next.batch) sim.inflight.push(...next.batch.requests);
        void sim.client.session.receive(next.part);
      }
    }
    await wire.clock.advance(100);
    for (const s of sims) check(s);
    invariants(wire, sims);
  }
  for (const sim of sims) {
    expect(sim.inflight, `session ${sim.id} has unanswered requests`).toEqual([]);
    expect(sim.client.closed).toBe(false);
  }
  for (const sim of sims) sim.client.session.end();
  await wire.clock.advance(0);
  expect(wire.pool.stats().leased).toBe(0);
  expect(wire.stats).toMatchObject({ clients: 0, clientsActive: 0, clientsWaiting: 0 });
  return wire.pool.stats().pipelined;
}

describe("randomized wire sessions", () => {
  let pipelined = 0;
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`seed ${seed}, half one-shot sessions: every response goes to the session that asked, in order; a backend on two sessions only for one-shot riders of one lease; never above max`, async () => {
      pipelined += await run(seed, (id) => id % 2 === 0);
    });
  }
  for (const seed of [9, 10, 11, 12, 13, 14, 15, 16]) {
    it(`seed ${seed}, all one-shot sessions, backends that stall: the same`, async () => {
      pipelined += await run(seed, () => true, true);
    });
  }

  it("one-shot sessions did ride busy backends", () => {
    expect(pipelined).toBeGreaterThan(0);
  });
});
