-- Kest's SQLite span store (SPEC §9), schema version 1: one row per span,
-- the Kest attributes as columns, everything else as JSON. Read by
-- `kest audit`; written by the `sqlite` exporter in WAL mode.
CREATE TABLE IF NOT EXISTS kest_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS spans (
  trace_id TEXT NOT NULL,
  span_id TEXT NOT NULL,
  parent_span_id TEXT,
  name TEXT NOT NULL,
  service_name TEXT,
  scope_name TEXT,
  start_time_unix_nano INTEGER NOT NULL,
  end_time_unix_nano INTEGER NOT NULL,
  status_code INTEGER NOT NULL,
  status_message TEXT,
  kest_entry_hash TEXT,
  kest_signature TEXT,
  kest_parent_hash TEXT,
  kest_passport TEXT,
  kest_chain_tip TEXT,
  kest_claim_check TEXT,
  kest_entry_id TEXT,
  kest_workload_id TEXT,
  kest_trust_score INTEGER,
  kest_operation TEXT,
  kest_decision TEXT,
  kest_denied_policy TEXT,
  kest_denied_tier TEXT,
  attributes TEXT NOT NULL,
  resource TEXT NOT NULL,
  PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans(trace_id);
CREATE INDEX IF NOT EXISTS spans_entry_hash ON spans(kest_entry_hash);
