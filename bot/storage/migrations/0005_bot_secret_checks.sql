-- Version 5: the database remembers which bot secrets it was used with, so a swapped or
-- edited keys/bot_secrets.json is refused at start-up instead of silently computing other
-- pseudonyms, failing to open drafts and extending the audit chain under another key.
-- One row per secret per generation (the audit key, never rotated, as generation 0): a check
-- value derived from the secret under a fixed label (see bot/crypto.py), never the secret and
-- nothing it could be recovered from. Rows are only added (first use, after `keys rotate`);
-- a database from before version 5 records them the first time it is opened with the keys.
CREATE TABLE bot_secret_checks (
    generation   INTEGER NOT NULL,
    secret       TEXT NOT NULL,         -- the field name in bot_secrets.json, e.g. 'draft_key'
    check_value  TEXT NOT NULL,         -- hex
    recorded_at  TEXT NOT NULL,
    PRIMARY KEY (generation, secret)
);
