-- The archiver deletes the stored answers of gift requests from Valkey once their gift is
-- archived and older than the hot window (two-tier idempotency): it walks the archived gifts in
-- time order, from a position it keeps in Valkey. A replay past the hot window is answered from
-- ledger_entries_request (owner, request_id), with the `fp` hash of the entry's fields.
CREATE INDEX ledger_entries_gifts ON ledger_entries (entry_ms, entry_seq, stream)
    WHERE kind = 'gift' AND owner_kind = 'user';
