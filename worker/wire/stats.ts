/**
 * Counters of a coordinator's wire sessions (design §6, PgBouncer's `cl_*`
 * and prepared-statement counters). One object per coordinator; the
 * sessions and the prepared-statement registry update it, `stats()` reads it.
 */
export class WireStats {
  /** Client sessions open now. */
  clients = 0;
  /** Sessions holding a server connection now (`cl_active`). */
  clientsActive = 0;
  /** Sessions waiting for a server connection now (`cl_waiting`). */
  clientsWaiting = 0;
  /** Client Parses of a named statement the server connection already had: answered without a round trip. */
  preparedHits = 0;
  /** Named statements sent to a server connection that lacked them (a client Parse forwarded, or a Parse injected before Bind/Describe). */
  preparedParses = 0;
  /** Parses injected before a Bind/Describe/Close because the server connection lacked the statement. */
  preparedReprepares = 0;
  /** Statements closed on a server connection to stay within `maxPreparedStatements`. */
  preparedEvictions = 0;
}
