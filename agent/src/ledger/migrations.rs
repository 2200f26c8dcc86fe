//! Schema migrations, applied in order; `PRAGMA user_version` counts how many have run.
//! Append only: a released migration is never edited.

pub const ALL: &[&str] = &[
    // 1: the journal of notable things jobs did, newest last.
    "CREATE TABLE events (
        id     INTEGER PRIMARY KEY,
        at     TEXT NOT NULL,          -- RFC 3339, UTC
        job    TEXT NOT NULL,          -- deploy, mirrors, sweep, health, gc, enrollment
        kind   TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'  -- JSON
    ) STRICT;",
];
