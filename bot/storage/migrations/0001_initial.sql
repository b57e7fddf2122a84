-- Version 1. Nothing here holds a Telegram id, a username or report text in the clear:
-- reporters are keyed pseudonyms, drafts and report content are sealed blobs.

CREATE TABLE conversations (
    pseudonym   TEXT PRIMARY KEY,          -- HMAC of the Telegram user id, never the id
    sealed      BLOB NOT NULL,             -- the draft, AES-GCM under the bot's draft key
    updated_at  TEXT NOT NULL
);

-- Telegram may deliver an update twice; an update id seen here is not acted on again.
CREATE TABLE processed_updates (
    update_id     INTEGER PRIMARY KEY,
    processed_at  TEXT NOT NULL
);

CREATE TABLE cases (
    ref           TEXT PRIMARY KEY,        -- the reference code given to the reporter
    reporter      TEXT NOT NULL,           -- pseudonym
    audience      TEXT,
    level         TEXT NOT NULL DEFAULT 'routine'
                  CHECK (level IN ('immediate', 'high', 'routine', 'none')),
    status        TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at    TEXT NOT NULL,
    submitted_at  TEXT,
    reply_handle  BLOB                     -- sealed chat id, only while replies are allowed
);

-- Report content, alert snapshots and follow-ups: HPKE-sealed to the staff key.
CREATE TABLE records (
    id          INTEGER PRIMARY KEY,
    case_ref    TEXT NOT NULL REFERENCES cases(ref) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('report', 'alert', 'followup')),
    created_at  TEXT NOT NULL,
    sealed      BLOB NOT NULL
);
CREATE INDEX records_by_case ON records(case_ref, id);

CREATE TABLE escalations (
    id               INTEGER PRIMARY KEY,
    case_ref         TEXT NOT NULL REFERENCES cases(ref) ON DELETE CASCADE,
    level            TEXT NOT NULL CHECK (level IN ('immediate', 'high')),
    reasons          TEXT NOT NULL,        -- JSON list of rule/answer ids, never message text
    created_at       TEXT NOT NULL,
    acknowledged_at  TEXT,
    acknowledged_by  TEXT                  -- staff member's display name at the time
);

-- Written in the same transaction as the escalation, delivered by a worker: an alert is on disk
-- before anything is sent, so a crash cannot lose it.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    escalation_id    INTEGER NOT NULL REFERENCES escalations(id) ON DELETE CASCADE,
    created_at       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    sent_at          TEXT,
    message_id       INTEGER,              -- the staff-chat message, for editing on acknowledge
    last_error       TEXT                  -- an error class name, never content
);
CREATE INDEX outbox_pending ON outbox(sent_at, next_attempt_at);
