-- The ledger of record: every entry of the users' and rooms' ledger streams and every room
-- event, copied from Valkey by the archiver. A row is keyed by its Valkey stream key and entry
-- id, so a batch copied twice changes nothing; request ids are indexed for phase 2 (answering a
-- replayed request from here once Valkey has dropped its stored answer).

CREATE TABLE ledger_entries (
    stream      text        NOT NULL,  -- the Valkey stream key, e.g. gs:{u:<id>}:ledger
    entry_ms    bigint      NOT NULL,  -- the entry id '<ms>-<seq>'
    entry_seq   bigint      NOT NULL,
    owner_kind  text        NOT NULL CHECK (owner_kind IN ('user', 'room')),
    owner       text        NOT NULL,  -- the user id, or the room id (a host's diamonds)
    kind        text        NOT NULL,  -- grant, purchase, refund, gift, credit, payout, ...
    ref         text        NOT NULL,  -- the entry's reference: event id, receipt, request id
    balance     bigint      NOT NULL,  -- the owner's balance after the entry (coins or diamonds)
    coins       bigint      NOT NULL,  -- change of the owner's coins
    diamonds    bigint      NOT NULL,  -- change of the host's diamonds
    points      bigint      NOT NULL,  -- change of the owner's points
    postings    text        NOT NULL,  -- 'account asset amount;...' (double entry, sums to zero)
    room        text,
    host        text,
    sender      text,                  -- the gifter, on a host's credit
    gift        text,
    gift_count  integer,
    gift_coins  bigint,                -- coins of the gift, on a host's credit
    request_id  text,
    amount      text,                  -- money: a purchase's price, a cash-out's amount (decimal)
    currency    text,
    channel     text,
    region      text,
    at          timestamptz NOT NULL,
    fields      jsonb       NOT NULL,  -- the entry as Valkey held it
    PRIMARY KEY (stream, entry_ms, entry_seq)
);
CREATE INDEX ledger_entries_request ON ledger_entries (owner, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX ledger_entries_ref ON ledger_entries (ref);
CREATE INDEX ledger_entries_at ON ledger_entries (at);

CREATE TABLE room_events (
    stream    text        NOT NULL,  -- gs:{r:<id>}:events
    "offset"  bigint      NOT NULL,  -- the entry id '<offset>-0'
    room      text        NOT NULL,
    type      text        NOT NULL,  -- gift, credit
    event     text,                  -- the gift's event id (shared by its gift and credit)
    sender    text,
    gift      text,
    coins     bigint,
    diamonds  bigint,
    at        timestamptz,
    payload   jsonb       NOT NULL,  -- the event as its frame carries it
    PRIMARY KEY (stream, "offset")
);
CREATE INDEX room_events_event ON room_events (event);

-- How far the archiver has copied each stream; written in the same transaction as the rows.
CREATE TABLE archive_cursors (
    stream      text        PRIMARY KEY,
    last_ms     bigint      NOT NULL,
    last_seq    bigint      NOT NULL,
    entries     bigint      NOT NULL,  -- entries copied so far
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The fencing token of the archiver that last wrote: a batch from an older lease is refused.
CREATE TABLE archive_fence (
    id     integer PRIMARY KEY CHECK (id = 1),
    fence  bigint  NOT NULL
);
INSERT INTO archive_fence VALUES (1, 0);
