"""One schema for both backends: the migrations, written once in SQLite's dialect and rendered for PostgreSQL.

The SQL is plain and portable on purpose; :func:`render` rewrites the few type names that differ
(``id INTEGER PRIMARY KEY`` is an identity column, ``INTEGER`` a 64-bit ``BIGINT`` and ``REAL`` a ``DOUBLE
PRECISION`` on PostgreSQL). Migration N turns a version N-1 store into version N; both backends record the version
(SQLite in ``PRAGMA user_version``, PostgreSQL in the one-row table ``alwb_schema``).
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 11

SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT,
    size INTEGER,
    width INTEGER,
    height INTEGER,
    mode TEXT,
    format TEXT,
    grey INTEGER,
    status TEXT NOT NULL CHECK (status IN ('ok', 'rejected')),
    reason TEXT,
    split TEXT NOT NULL DEFAULT 'pool' CHECK (split IN ('pool', 'val')),
    added_at REAL NOT NULL
);
CREATE UNIQUE INDEX items_sha_ok ON items(sha256) WHERE status = 'ok';
CREATE INDEX items_status ON items(status, split);
CREATE TABLE classes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    position INTEGER NOT NULL UNIQUE
);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    class_id INTEGER REFERENCES classes(id),
    source TEXT NOT NULL CHECK (source IN ('human', 'import')),
    round INTEGER NOT NULL,
    annotator TEXT,
    batch_id TEXT,
    created_at REAL NOT NULL,
    superseded_at REAL
);
CREATE UNIQUE INDEX labels_current ON labels(item_id) WHERE superseded_at IS NULL;
CREATE INDEX labels_batch ON labels(batch_id);
CREATE TABLE pseudo_labels (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    class_id INTEGER NOT NULL REFERENCES classes(id),
    confidence REAL NOT NULL,
    round INTEGER NOT NULL
);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    path TEXT NOT NULL,
    arch TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    number INTEGER NOT NULL UNIQUE,
    strategy TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    n_labeled INTEGER,
    n_pseudo INTEGER,
    n_val INTEGER,
    metrics TEXT,
    timings TEXT,
    model_id INTEGER REFERENCES models(id),
    error TEXT,
    started_at REAL NOT NULL,
    finished_at REAL
);
"""

#: v2: answers chosen in the workbench but not yet submitted, per annotator (they survive a reload or a lost
#: connection; submitting the batch writes the labels and drops its drafts in the same transaction).
SCHEMA_V2 = """
CREATE TABLE drafts (
    annotator TEXT NOT NULL,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    answer TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (annotator, item_id)
);
"""

#: v3: accounts (argon2 hashes, roles, consecutive failed sign-ins) and their sessions (only a SHA-256 of the
#: session token is stored).
SCHEMA_V3 = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('annotator', 'reviewer', 'admin')),
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failed_signins INTEGER NOT NULL DEFAULT 0,
    last_failed_at REAL,
    created_at REAL NOT NULL
);
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
"""

#: v4: leases, which annotator holds which item until when. ``slot`` 0 is an item's first holder, 1 the second
#: holder of an overlap item; the unique index makes two holders of one slot impossible whatever the code does.
SCHEMA_V4 = """
CREATE TABLE leases (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    annotator TEXT NOT NULL,
    slot INTEGER NOT NULL CHECK (slot IN (0, 1)),
    leased_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (item_id, annotator)
);
CREATE UNIQUE INDEX leases_slot ON leases(item_id, slot);
CREATE INDEX leases_annotator ON leases(annotator, expires_at);
"""

#: v5: a reviewer's decisions on disagreements. ``label_id`` is the label the decision wrote (NULL when the
#: decision confirmed the current label, which then stays as it is); those labels are not an annotator's answers.
SCHEMA_V5 = """
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    reviewer TEXT NOT NULL,
    class_id INTEGER REFERENCES classes(id),
    label_id INTEGER REFERENCES labels(id) ON DELETE SET NULL,
    decided_at REAL NOT NULL
);
CREATE INDEX reviews_item ON reviews(item_id);
"""

#: v6: the queue of training rounds asked for (``alwb train --queue``, a web server) and the workers that take them
#: (``alwb worker``); both carry a heartbeat, so that a request whose worker died can be failed with its reason.
SCHEMA_V6 = """
CREATE TABLE round_requests (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    options TEXT NOT NULL,
    requested_by TEXT,
    requested_at REAL NOT NULL,
    worker TEXT,
    claimed_at REAL,
    heartbeat_at REAL,
    round INTEGER,
    error TEXT,
    finished_at REAL
);
CREATE INDEX round_requests_status ON round_requests(status, id);
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    host TEXT,
    pid INTEGER,
    device TEXT,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    request_id INTEGER
);
"""

#: v7: a running request's progress as the worker last reported it (JSON: phase, done, total, at), so that a web
#: server on another machine can show how far the round is.
SCHEMA_V7 = """
ALTER TABLE round_requests ADD COLUMN progress TEXT;
"""

#: v8: failed sign-ins counted per key (a name, an address, a name at an address, everyone), so that the check
#: and the count are one step in one transaction (alwb.team.users.sign_in); ``users.failed_signins`` is no longer
# written.
SCHEMA_V8 = """
CREATE TABLE signin_throttle (
    key TEXT PRIMARY KEY,
    name TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    last_failed_at REAL
);
"""

#: v9: reviewers' verdicts on the flags of :mod:`alwb.insight` (a likely wrong label, a near-duplicate, an outlier):
#: ``verdict`` ``kept`` (the label was right), ``changed`` (it was wrong; ``label_id`` is the label written),
#: ``none`` ("none of these") or ``removed`` (the item was rejected); ``given``/``suggested``/``score`` are what the
#: flag said, so that alwb can report the precision of its own flags.
SCHEMA_V9 = """
CREATE TABLE flag_verdicts (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('label', 'duplicate', 'outlier')),
    given TEXT,
    suggested TEXT,
    score REAL,
    verdict TEXT NOT NULL CHECK (verdict IN ('kept', 'changed', 'none', 'removed')),
    label_id INTEGER REFERENCES labels(id) ON DELETE SET NULL,
    reviewer TEXT,
    decided_at REAL NOT NULL
);
CREATE INDEX flag_verdicts_item ON flag_verdicts(kind, item_id);
"""

#: v10: whether a person chose an answer (0) or submitted the model's preselected guess untouched (1); labels
#: written before v10, imports and reviews count as chosen.
SCHEMA_V10 = """
ALTER TABLE labels ADD COLUMN accepted_guess INTEGER NOT NULL DEFAULT 0;
"""

#: v11: one channel for training progress, wherever the round runs: a row per runner (this machine's background
#: round ``local:HOST:FOLDER``, or a training worker by its name) with the phase and step it last reported
#: (:mod:`alwb.progress`); the v7 column ``round_requests.progress`` it replaces is dropped.
SCHEMA_V11 = """
CREATE TABLE round_progress (
    runner TEXT PRIMARY KEY,
    request_id INTEGER,
    phase TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
ALTER TABLE round_requests DROP COLUMN progress;
"""

#: Migrations from version N-1 to N, applied in order inside one transaction each.
MIGRATIONS: dict[int, str] = {
    1: SCHEMA_V1,
    2: SCHEMA_V2,
    3: SCHEMA_V3,
    4: SCHEMA_V4,
    5: SCHEMA_V5,
    6: SCHEMA_V6,
    7: SCHEMA_V7,
    8: SCHEMA_V8,
    9: SCHEMA_V9,
    10: SCHEMA_V10,
    11: SCHEMA_V11,
}


def render(sql: str, dialect: str) -> list[str]:
    """The statements of a migration for ``dialect`` (``sqlite`` or ``postgresql``)."""
    if dialect == "postgresql":
        sql = re.sub(r"\bid INTEGER PRIMARY KEY\b", "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
        sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
        sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    elif dialect != "sqlite":
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    return [s.strip() for s in sql.split(";") if s.strip()]


#: Tables with an identity ``id`` column (PostgreSQL's sequences follow copied ids).
IDENTITY_TABLES = (
    "items",
    "classes",
    "labels",
    "models",
    "rounds",
    "users",
    "reviews",
    "round_requests",
    "flag_verdicts",
)
