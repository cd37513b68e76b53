// The example's queries: a model query and an interactive transaction.
import type { PrismaClient } from "./generated/client.ts";

/** Creates the example's table if it is missing (the example ships no migrations). */
export async function ensureSchema(prisma: PrismaClient): Promise<void> {
  await prisma.$executeRawUnsafe(
    `create table if not exists prisma_notes (id serial primary key, author text not null, body text not null, created_at timestamptz(3) not null default now())`,
  );
}

/** Stores a note and answers it as stored. */
export async function createNote(prisma: PrismaClient, author: string, body: string) {
  return prisma.note.create({ data: { author, body } });
}

/** An author's notes, oldest first. */
export async function notesBy(prisma: PrismaClient, author: string) {
  return prisma.note.findMany({ where: { author }, orderBy: { id: "asc" } });
}

/** Thrown inside the transaction when a note is empty, after the notes before it were written. */
export class EmptyNote extends Error {}

/**
 * All of `bodies` as notes by `author` in one interactive transaction: an
 * empty body is refused by the application after earlier notes were inserted,
 * and the throw rolls every one of them back.
 */
export async function addNotes(prisma: PrismaClient, author: string, bodies: string[]) {
  return prisma.$transaction(async (tx) => {
    const notes = [];
    for (const [index, body] of bodies.entries()) {
      if (body === "") throw new EmptyNote(`note ${index} by "${author}" is empty: none of the ${bodies.length} notes is stored`);
      notes.push(await tx.note.create({ data: { author, body } }));
    }
    return notes;
  });
}
