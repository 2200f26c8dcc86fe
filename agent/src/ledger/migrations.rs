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
    // 2: the deploy journal. `state` moves by compare-and-set only, so the agent and its dead-man
    // switch can never both act on one deploy.
    "CREATE TABLE deploys (
        id              INTEGER PRIMARY KEY,
        kind            TEXT NOT NULL,          -- deploy | rollback
        state           TEXT NOT NULL,
        outcome         TEXT,                   -- NULL while running
        started_at      TEXT NOT NULL,
        finished_at     TEXT,
        pid             INTEGER NOT NULL,
        flake           TEXT,
        flake_commit    TEXT,
        flake_lock      TEXT,                   -- git object id of flake.lock at that commit
        from_generation INTEGER,
        from_path       TEXT,
        to_generation   INTEGER,
        to_path         TEXT,
        failed_before   TEXT NOT NULL DEFAULT '[]',   -- JSON: units failing before activation
        checks          TEXT NOT NULL DEFAULT '[]',   -- JSON: the last verification
        rollback_checks TEXT NOT NULL DEFAULT '[]',   -- JSON: verification of the rollback
        deadman_unit    TEXT,
        build_ms        INTEGER,
        activate_ms     INTEGER,
        verify_ms       INTEGER,
        message         TEXT
    ) STRICT;
    CREATE INDEX deploys_unfinished ON deploys (id) WHERE finished_at IS NULL;",
    // 3: mirrors: the last sync of each recipe, and what happened over time.
    "CREATE TABLE mirror_state (
        recipe        TEXT PRIMARY KEY,
        synced_at     TEXT NOT NULL,
        result        TEXT NOT NULL,          -- in-sync | synced | created | failed
        error         TEXT,
        upstream_head TEXT,
        mirror_head   TEXT,
        tags          INTEGER
    ) STRICT;
    CREATE TABLE mirror_events (
        id     INTEGER PRIMARY KEY,
        recipe TEXT NOT NULL,
        at     TEXT NOT NULL,
        kind   TEXT NOT NULL,                 -- created | synced | rewritten | pr-closed | failed
        detail TEXT NOT NULL
    ) STRICT;
    CREATE INDEX mirror_events_recipe ON mirror_events (recipe, id);",
    // 4: the greenness ledger: what was tested, what it gave, and each recipe's canonical.
    "CREATE TABLE queues (
        id     INTEGER PRIMARY KEY,
        recipe TEXT NOT NULL,
        ref    TEXT NOT NULL,                 -- the branch whose releases are swept
        UNIQUE (recipe, ref)
    ) STRICT;
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        queue       INTEGER NOT NULL REFERENCES queues (id),
        commit_id   TEXT NOT NULL,
        tag         TEXT,
        version     TEXT,
        base        TEXT,                     -- the upgrade base handed to CI, if any
        result      TEXT NOT NULL,            -- running | green | red | error
        greenness   REAL,                     -- 0 green ... 1 broken
        cold        INTEGER NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        log_path    TEXT,
        trigger     TEXT NOT NULL,            -- sweep | forced
        exit_code   INTEGER,
        detail      TEXT
    ) STRICT;
    CREATE INDEX runs_by_commit ON runs (queue, commit_id);
    CREATE TABLE canonicals (
        recipe      TEXT PRIMARY KEY,
        version     TEXT NOT NULL,
        commit_id   TEXT NOT NULL,
        run         INTEGER REFERENCES runs (id),   -- NULL when imported
        promoted_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE sweep_state (
        recipe        TEXT PRIMARY KEY,
        refs_digest   TEXT NOT NULL,           -- branch head and tags when last looked at
        latest_tag    TEXT,
        latest_commit TEXT
    ) STRICT;
    CREATE TABLE sweeps (
        id          INTEGER PRIMARY KEY,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        outcome     TEXT,                     -- done | refused-busy | refused-ci-busy | failed
        detail      TEXT
    ) STRICT;",
    // 5: health reports waiting for the bridge, oldest first. A row leaves only once the bridge
    // has answered 2xx for it.
    "CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- rises, never reused
        id         TEXT NOT NULL UNIQUE,      -- the report's id; resends carry the same
        created_at TEXT NOT NULL,
        body       TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    ) STRICT;",
    // 6: warm-volume garbage collection: each run's figures, each deletion (written before the
    // volume is touched, finished after), and when a docker volume was last seen in use.
    "CREATE TABLE gc_runs (
        id              INTEGER PRIMARY KEY,
        started_at      TEXT NOT NULL,
        finished_at     TEXT,
        outcome         TEXT,                 -- ok | short | some-failed | refused-busy | failed
        budget          INTEGER,
        min_free        INTEGER,
        free_bytes      INTEGER,              -- before; NULL when it could not be read
        total_bytes     INTEGER,
        protected_bytes INTEGER,
        freed_bytes     INTEGER NOT NULL DEFAULT 0,
        shortfalls      TEXT NOT NULL DEFAULT '[]',  -- JSON: why the budget or min_free does not hold
        detail          TEXT
    ) STRICT;
    CREATE TABLE gc_deletions (
        id        INTEGER PRIMARY KEY,
        gc_run    INTEGER NOT NULL REFERENCES gc_runs (id),
        volume    TEXT NOT NULL,
        recipe    TEXT,
        version   TEXT,
        bytes     INTEGER NOT NULL,
        last_used TEXT NOT NULL,
        reason    TEXT NOT NULL,              -- over-budget | below-min-free
        state     TEXT NOT NULL,              -- deleting | deleted | failed | kept
        at        TEXT NOT NULL,
        error     TEXT
    ) STRICT;
    CREATE INDEX gc_deletions_unfinished ON gc_deletions (id) WHERE state = 'deleting';
    CREATE TABLE volume_use (
        volume    TEXT PRIMARY KEY,
        last_used TEXT NOT NULL
    ) STRICT;",
    // 7: `deploy --pull` and `--auto`: the commit the checkout was at before it fast-forwarded.
    "ALTER TABLE deploys ADD COLUMN pulled_from TEXT;",
    // 8: what the deploy changes: the closure diff and the units a switch starts, stops,
    // restarts and reloads (JSON), as read before activating.
    "ALTER TABLE deploys ADD COLUMN changes TEXT;",
    // 9: probes: per recipe, each attempt to prove that `!testme` on its mirror starts CI and
    // reports back. The head and the comment are written before the comment is posted.
    "CREATE TABLE probes (
        id           INTEGER PRIMARY KEY,
        recipe       TEXT NOT NULL,
        started_at   TEXT NOT NULL,
        finished_at  TEXT,
        outcome      TEXT,                    -- proven | stopped | deferred | failed | interrupted
        stopped_at   TEXT,                    -- the first stage that did not happen
        fingerprint  TEXT NOT NULL,           -- the enrollment, mirror and bridge it proved
        pull         INTEGER,
        head         TEXT,
        comment_id   INTEGER,
        commented_at TEXT,
        picked_up_at TEXT,
        build_started_at TEXT,
        reported_at  TEXT,
        ci_state     TEXT,                    -- the final status the CI set
        evidence     TEXT NOT NULL DEFAULT '[]',  -- JSON: what was seen at each stage
        detail       TEXT
    ) STRICT;
    CREATE INDEX probes_by_recipe ON probes (recipe, id);",
    // 10: greenness as a degree: each run's tiers, as its JUnit results gave them. A tier
    // expected of the recipe but never reported has a row with reported = 0. Older runs have
    // none and keep the degree they were given.
    "CREATE TABLE run_tiers (
        run           INTEGER NOT NULL REFERENCES runs (id),
        tier          TEXT NOT NULL,
        place         INTEGER NOT NULL,       -- its place in the recipe's tiers, then the rest
        expected      INTEGER NOT NULL,       -- 1: in the recipe's tiers; 0: reported beyond them
        reported      INTEGER NOT NULL,       -- 0: expected, never in the results
        tests         INTEGER NOT NULL,
        failures      INTEGER NOT NULL,
        errors        INTEGER NOT NULL,
        skipped       INTEGER NOT NULL,
        seconds       REAL NOT NULL,
        green         INTEGER NOT NULL,
        first_failure TEXT,                   -- the first failing test's name, cut to a bound
        first_message TEXT,                   -- and what it said
        PRIMARY KEY (run, place)
    ) STRICT, WITHOUT ROWID;
    -- A recipe's newest runs, read for its history, its health and its status page, without
    -- a scan of every run (1,000 recipes of 50 runs: 0.4 s of scanning before it).
    CREATE INDEX runs_by_queue ON runs (queue, id);",
    // 11: the end of each run's log as the sweep recorded it (its last 4 KiB, the agent's tokens
    // taken out): what the status page shows. The page reads no file a run names: `log_path`
    // is in a database the job user can write, and root may write the page.
    "ALTER TABLE runs ADD COLUMN log_tail TEXT;",
];
