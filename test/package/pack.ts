// Vitest globalSetup of the `package` project: builds and packs the package once, as
// `npm publish` would (`prepack` runs the build), and provides the tarball's path.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    /** The packed package (`npm pack`), edgepool-<version>.tgz. */
    tarball: string;
    /** The files the tarball holds, as `npm pack` reports them. */
    packedFiles: string[];
  }
}

export default async function setup(project: TestProject) {
  const dir = mkdtempSync(join(tmpdir(), "edgepool-pack-"));
  const { stdout } = await promisify(execFile)("npm", ["pack", "--json", "--pack-destination", dir], {
    cwd: project.config.root,
    env: { ...process.env, NO_COLOR: "1" },
    maxBuffer: 16 * 1024 * 1024,
  });
  // `prepack` (the build) prints to the same stdout before npm's JSON.
  const [packed] = JSON.parse(stdout.slice(stdout.lastIndexOf("\n[") + 1)) as { filename: string; files: { path: string }[] }[];
  project.provide("tarball", join(dir, packed!.filename));
  project.provide("packedFiles", packed!.files.map((f) => f.path).sort());
  return () => rmSync(dir, { recursive: true, force: true });
}
