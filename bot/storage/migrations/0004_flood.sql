-- Version 4: staff are told when one sender floods the bot (kind 'flood'; `detail` says what:
-- 'messages' or 'reports', never content). SQLite cannot change a CHECK, so the table is
-- rebuilt with its rows and indexes.

CREATE TABLE deliveries_v4 (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('alert', 'followup', 'digest', 'flood')),
    escalation_id    INTEGER REFERENCES escalations(id) ON DELETE CASCADE,
    case_ref         TEXT REFERENCES cases(ref) ON DELETE CASCADE,
    recipient        TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    body_sealed      BLOB,
    created_at       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    sending_since    TEXT,
    sent_at          TEXT,
    cancelled_at     TEXT,
    message_id       INTEGER,
    last_error       TEXT,
    detail           TEXT
);

INSERT INTO deliveries_v4 (id, kind, escalation_id, case_ref, recipient, priority, body_sealed,
                           created_at, attempts, next_attempt_at, sending_since, sent_at,
                           cancelled_at, message_id, last_error)
SELECT id, kind, escalation_id, case_ref, recipient, priority, body_sealed, created_at,
       attempts, next_attempt_at, sending_since, sent_at, cancelled_at, message_id, last_error
FROM deliveries;

DROP TABLE deliveries;
ALTER TABLE deliveries_v4 RENAME TO deliveries;
CREATE INDEX deliveries_pending ON deliveries(sent_at, cancelled_at, next_attempt_at);
CREATE INDEX deliveries_by_escalation ON deliveries(escalation_id);
CREATE INDEX deliveries_by_message ON deliveries(recipient, message_id);
