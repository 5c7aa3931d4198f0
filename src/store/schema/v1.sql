CREATE TABLE history (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    at                   TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    action               TEXT NOT NULL,
    version              TEXT,
    security_patch_level TEXT,
    detail               TEXT NOT NULL,
    cves                 TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE installed (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    version              TEXT NOT NULL,
    feature_release      TEXT NOT NULL,
    security_patch_level TEXT NOT NULL,
    applied_at           TEXT
);
CREATE TABLE last_check (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    at       TEXT NOT NULL,
    verified INTEGER NOT NULL CHECK (verified IN (0, 1)),
    message  TEXT NOT NULL
);
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE sqlite_sequence(name,seq);
CREATE TABLE state (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
PRAGMA application_id = 1397970241;
PRAGMA user_version = 1;
