// Vitest globalSetup (runs in Node): provides `databaseUrl` to the test projects.
// DATABASE_URL, if set, is used as is; otherwise a throwaway embedded Postgres is started.
import type { TestProject } from "vitest/node";
import { startEmbeddedPostgres } from "./embedded.ts";

export default async function setup(project: TestProject) {
  if (process.env.DATABASE_URL) {
    project.provide("databaseUrl", process.env.DATABASE_URL);
    return;
  }
  const pg = await startEmbeddedPostgres();
  project.provide("databaseUrl", pg.url);
  return () => pg.stop();
}
