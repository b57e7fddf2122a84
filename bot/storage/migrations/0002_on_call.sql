-- Version 2: the on-call queue. Staff appear by their rota name, never by a Telegram id.

ALTER TABLE cases ADD COLUMN assigned_to TEXT;     -- the staff member who took the case
ALTER TABLE cases ADD COLUMN outcome TEXT;         -- set by /close
ALTER TABLE cases ADD COLUMN closed_at TEXT;

-- The paging timer lives here, so a restart neither forgets nor repeats a step:
-- `step` counts the steps already fired, `next_step_at` is when the next one is due
-- (NULL once acknowledged or when the policy has no further steps).
ALTER TABLE escalations ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE escalations ADD COLUMN next_step_at TEXT;
ALTER TABLE escalations ADD COLUMN paging_from TEXT;     -- when step 0 was due: steps count from it
-- The words that raised the alert, only when escalation.alert_text = "full": sealed under
-- the bot's transit key and erased once the alert is acknowledged.
ALTER TABLE escalations ADD COLUMN trigger_sealed BLOB;
-- Alerts raised before this version were posted to the staff chat (step 0); any still
-- unacknowledged continue with the next step straight away.
UPDATE escalations SET step = 1, next_step_at = created_at, paging_from = created_at
WHERE acknowledged_at IS NULL;

-- Every message to staff, written before it is sent (replaces `outbox`). One row per message
-- per recipient; rows due together for one recipient may go out as one combined message, and
-- then share a message_id.
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('alert', 'followup', 'digest')),
    escalation_id    INTEGER REFERENCES escalations(id) ON DELETE CASCADE,
    case_ref         TEXT REFERENCES cases(ref) ON DELETE CASCADE,
    recipient        TEXT NOT NULL,        -- 'staff_chat' or 'dm:<rota name>'
    priority         INTEGER NOT NULL,     -- 0 immediate, 1 high, 2 routine, 3 notices
    body_sealed      BLOB,                 -- a follow-up's words (transit key), erased once sent
    created_at       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    sending_since    TEXT,                 -- set just before the request: a crash after it
                                           -- leaves the outcome unknown (see outbox.py)
    sent_at          TEXT,
    cancelled_at     TEXT,                 -- acknowledged before it went out: not needed
    message_id       INTEGER,
    last_error       TEXT                  -- an error class name, never content
);
CREATE INDEX deliveries_pending ON deliveries(sent_at, cancelled_at, next_attempt_at);
CREATE INDEX deliveries_by_escalation ON deliveries(escalation_id);
CREATE INDEX deliveries_by_message ON deliveries(recipient, message_id);

INSERT INTO deliveries (kind, escalation_id, case_ref, recipient, priority, created_at,
                        attempts, next_attempt_at, sent_at, message_id, last_error)
SELECT 'alert', o.escalation_id, e.case_ref, 'staff_chat',
       CASE e.level WHEN 'immediate' THEN 0 ELSE 1 END, o.created_at,
       o.attempts, o.next_attempt_at, o.sent_at, o.message_id, o.last_error
FROM outbox o JOIN escalations e ON e.id = o.escalation_id;
DROP TABLE outbox;

-- The case timeline and the record of staff actions (who, what, which case, when).
-- Never content in the clear: notes and replies are sealed.
CREATE TABLE case_events (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    case_ref    TEXT REFERENCES cases(ref) ON DELETE CASCADE,
    actor       TEXT NOT NULL,             -- a rota name, 'reporter', 'bot' or 'not_staff'
    action      TEXT NOT NULL,
    detail      TEXT,                      -- an outcome, a level, a name: never message text
    sealed      BLOB,                      -- a note: HPKE to the staff key
    for_reporter BLOB                      -- a staff reply the reporter can read again with
                                           -- /followup: transit key, erased when the case closes
);
CREATE INDEX case_events_by_case ON case_events(case_ref, id);

-- Who took the pager with /oncall or /handover, until the next rota change.
CREATE TABLE pager (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    name   TEXT NOT NULL,
    since  TEXT NOT NULL,
    until  TEXT NOT NULL
);

-- Named timers and check-ins: the daily digest, the worker's heartbeat.
CREATE TABLE clock (
    name   TEXT PRIMARY KEY,
    at     TEXT NOT NULL
);
