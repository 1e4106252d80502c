-- The archiver prunes the rooms' `credited` records (the dedupe of credits in Valkey) once their
-- credit is archived and older than the gift idempotency window: it walks the archived credits
-- in time order, from a position it keeps in Valkey.
CREATE INDEX ledger_entries_credits ON ledger_entries (entry_ms, entry_seq, stream)
    WHERE kind = 'credit' AND owner_kind = 'room';
