// Prisma 7 through edgepool: the pg driver adapter over pgOptions(), with the
// client generated for workerd (query compiler in WebAssembly, no Rust engine).
// One client per request (design §7: a Worker cannot keep I/O objects across requests).
import { PrismaPg } from "@prisma/adapter-pg";
import { pgOptions, type PoolTarget } from "../../src/index.ts";
import { PrismaClient } from "./generated/client.ts";
import { addNotes, createNote, ensureSchema, notesBy } from "./notes.ts";

interface Env {
  /** The coordinator's Durable Object namespace (bound from the "edgepool" Worker). */
  EDGEPOOL: PoolTarget;
}

/** A Prisma client whose every connection is a session tunnelled to `tenant`'s coordinator. */
export function openPrisma(target: PoolTarget, tenant: string): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg(pgOptions(target, { tenant })) });
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const url = new URL(request.url);
    const prisma = openPrisma(env.EDGEPOOL, "default");
    try {
      // A query per request, to keep the example self-contained: a real app creates its tables with migrations.
      await ensureSchema(prisma);
      if (url.pathname === "/") {
        await createNote(prisma, "ada", `visited at ${new Date().toISOString()}`);
        return Response.json({ notes: await notesBy(prisma, "ada"), try: ["/thread"] });
      }
      if (url.pathname === "/thread") {
        return Response.json(await addNotes(prisma, "grace", ["first", "second", "third"]));
      }
      return new Response("not found\n", { status: 404 });
    } finally {
      ctx.waitUntil(prisma.$disconnect());
    }
  },
};
