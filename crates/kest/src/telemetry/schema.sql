-- The Kest SQLite span store (SPEC §9), schema version 1: one row per span,
-- the kest.* attributes as columns, every other attribute as JSON. Written
-- by `kest::telemetry` (feature `sqlite`) and read by `kest audit`.
CREATE TABLE IF NOT EXISTS kest_schema (version INTEGER NOT NULL);  -- one row, version 1
CREATE TABLE IF NOT EXISTS spans (
  trace_id TEXT NOT NULL,            -- 32 lowercase hex
  span_id TEXT NOT NULL,             -- 16 lowercase hex
  parent_span_id TEXT,               -- NULL for a root span
  name TEXT NOT NULL,
  service_name TEXT,                 -- resource attribute service.name
  scope_name TEXT,
  start_time_unix_nano INTEGER NOT NULL,
  end_time_unix_nano INTEGER NOT NULL,
  status_code INTEGER NOT NULL,      -- 0 unset, 1 ok, 2 error (OTLP)
  status_message TEXT,
  kest_entry_hash TEXT,              -- attribute kest.entry_hash
  kest_signature TEXT,               -- kest.signature (entry JWS)
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
  attributes TEXT NOT NULL,          -- JSON object of all OTHER span attributes
  resource TEXT NOT NULL,            -- JSON object of resource attributes
  PRIMARY KEY (trace_id, span_id)
);
-- Lookups by trace use the primary key, whose first column is trace_id.
CREATE INDEX IF NOT EXISTS spans_entry_hash ON spans(kest_entry_hash);
