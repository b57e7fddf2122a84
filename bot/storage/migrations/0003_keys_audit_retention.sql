-- Version 3: data keys wrapped per staff member, an append-only audit trail.

-- Every sealed record (report, alert snapshot, follow-up, note) is encrypted once under a fresh
-- data key; the data key is sealed (HPKE) to each staff member's public key, one row each.
-- Removing a leaver deletes their rows; adding a newcomer adds rows; erasing a case deletes
-- all its rows first (crypto-shredding), so its content cannot be opened from any leftover
-- page, WAL frame or copy of the file.
CREATE TABLE sealed_keys (
    key_id     BLOB NOT NULL,            -- the id in the sealed record's header
    case_ref   TEXT NOT NULL REFERENCES cases(ref) ON DELETE CASCADE,
    recipient  TEXT NOT NULL,            -- the staff key's fingerprint
    wrapped    BLOB NOT NULL,            -- the data key, HPKE-sealed to that staff key
    PRIMARY KEY (key_id, recipient)
);
CREATE INDEX sealed_keys_by_recipient ON sealed_keys(recipient);
CREATE INDEX sealed_keys_by_case ON sealed_keys(case_ref);

-- Records sealed before version 3 (to the single shared staff key) are left as they were:
-- nothing is deleted by a migration. The bot refuses that old key layout with a clear message.

-- Who did what to which case, and every key operation; never content. Each entry's MAC covers
-- the previous entry's MAC, so an edited, removed or reordered entry breaks the chain
-- (`safeguard audit verify`). It outlives the cases it names: no foreign key.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,             -- a rota or key name, 'reporter', 'bot', 'operator'
    action    TEXT NOT NULL,
    case_ref  TEXT,
    detail    TEXT,                      -- an outcome, a level, a fingerprint: never text
    mac       BLOB NOT NULL              -- HMAC-SHA256(audit key, previous mac || entry)
);

CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_is_append_only_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
