/** A column of a result, as Postgres describes it (`type` is the type OID). */
export interface Column {
  name: string;
  type: number;
}

/** Rows with `count`, `command` and `columns`, like a postgres.js result. */
export type Result<Row = Record<string, unknown>> = Row[] & {
  count: number;
  command: string;
  columns: Column[];
};
