"""Versioned schema migrations: per backend, a list of small named steps applied in order, each exactly once.

Add a step at the end; never edit one that has shipped. `schema_migrations` records what a database has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import StoreError


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def plan(migrations: Sequence[Migration], current: int, target: int | None = None) -> list[Migration]:
    """The steps a database at version `current` lacks, up to `target` (default: all), in order.

    A database newer than this build is refused: its shape may mean something this code would get wrong.
    """
    latest = migrations[-1].version
    if current > latest:
        raise StoreError(f"database schema is version {current}, newer than this build's {latest}; upgrade contextfold")
    last = latest if target is None else target
    return [m for m in migrations if current < m.version <= last]


SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations and events",
        (
            """CREATE TABLE conversations (
                id TEXT PRIMARY KEY,
                created_at REAL NOT NULL,
                metadata TEXT NOT NULL DEFAULT '{}',
                head INTEGER NOT NULL DEFAULT 0,
                checkpoint INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE events (
                rowid INTEGER PRIMARY KEY,
                conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                id TEXT NOT NULL,
                type TEXT NOT NULL,
                body BLOB NOT NULL,
                search_text TEXT,
                UNIQUE (conversation_id, seq)
            )""",
            "CREATE UNIQUE INDEX events_by_id ON events(id)",
        ),
    ),
    Migration(
        2,
        "full-text search over event text",
        (
            """CREATE VIRTUAL TABLE events_fts USING fts5(
                search_text, content='events', content_rowid='rowid', tokenize='porter unicode61'
            )""",
            # Every row gets an index entry (NULL text indexes as empty): an external-content index must mirror
            # its table row for row, or FTS5 reports the index as corrupt.
            """CREATE TRIGGER events_fts_insert AFTER INSERT ON events BEGIN
                INSERT INTO events_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
            END""",
            """CREATE TRIGGER events_fts_delete AFTER DELETE ON events BEGIN
                INSERT INTO events_fts(events_fts, rowid, search_text)
                    VALUES ('delete', old.rowid, old.search_text);
            END""",
            """CREATE TRIGGER events_fts_update AFTER UPDATE OF search_text ON events BEGIN
                INSERT INTO events_fts(events_fts, rowid, search_text)
                    VALUES ('delete', old.rowid, old.search_text);
                INSERT INTO events_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
            END""",
            "INSERT INTO events_fts(events_fts) VALUES ('rebuild')",
        ),
    ),
    Migration(
        3,
        "tenants, stored responses, API keys and turn leases",
        (
            "ALTER TABLE conversations ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
            # Listing pages by (created_at, id), within a tenant or across all of them.
            "CREATE INDEX conversations_by_tenant ON conversations(tenant, created_at, id)",
            "CREATE INDEX conversations_by_created ON conversations(created_at, id)",
            """CREATE TABLE responses (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                created_at REAL NOT NULL,
                status TEXT NOT NULL,
                first_seq INTEGER NOT NULL,
                last_seq INTEGER NOT NULL,
                previous_response_id TEXT,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX responses_by_conversation ON responses(conversation_id, created_at, id)",
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                name TEXT NOT NULL,
                prefix TEXT NOT NULL,
                secret_hash TEXT NOT NULL,
                created_at REAL NOT NULL,
                revoked_at REAL
            )""",
            "CREATE UNIQUE INDEX api_keys_by_hash ON api_keys(secret_hash)",
            """CREATE TABLE turn_leases (
                conversation_id TEXT PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
                owner TEXT NOT NULL,
                expires_at REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "the proxy's anchors",
        (
            # WITHOUT ROWID: the table is its primary key, whose (tenant, key) prefix is the index `find` reads.
            """CREATE TABLE proxy_anchors (
                tenant TEXT NOT NULL,
                key TEXT NOT NULL,
                conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                created_at REAL NOT NULL,
                PRIMARY KEY (tenant, key, conversation_id)
            ) WITHOUT ROWID""",
            # Deleting a conversation cascades here; without this index every deletion would scan every anchor.
            "CREATE INDEX proxy_anchors_by_conversation ON proxy_anchors(conversation_id)",
        ),
    ),
    Migration(
        5,
        "files, vector stores and their chunks",
        (
            """CREATE TABLE files (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                filename TEXT NOT NULL,
                purpose TEXT NOT NULL,
                bytes INTEGER NOT NULL,
                created_at REAL NOT NULL,
                content BLOB NOT NULL
            )""",
            "CREATE INDEX files_by_tenant ON files(tenant, created_at, id)",
            """CREATE TABLE vector_stores (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                created_at REAL NOT NULL,
                name TEXT,
                metadata TEXT NOT NULL DEFAULT '{}',
                data TEXT NOT NULL DEFAULT '{}',
                last_active_at REAL NOT NULL
            )""",
            "CREATE INDEX vector_stores_by_tenant ON vector_stores(tenant, created_at, id)",
            """CREATE TABLE vector_store_files (
                vector_store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
                file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
                tenant TEXT NOT NULL,
                created_at REAL NOT NULL,
                status TEXT NOT NULL,
                attributes TEXT NOT NULL DEFAULT '{}',
                chunking TEXT NOT NULL,
                last_error TEXT,
                usage_bytes INTEGER NOT NULL DEFAULT 0,
                batch_id TEXT,
                PRIMARY KEY (vector_store_id, file_id)
            )""",
            # A deleted file cascades here, and ingestion asks for what is still in progress.
            "CREATE INDEX vector_store_files_by_file ON vector_store_files(file_id)",
            "CREATE INDEX vector_store_files_by_status ON vector_store_files(status, created_at)",
            """CREATE TABLE chunks (
                rowid INTEGER PRIMARY KEY,
                vector_store_id TEXT NOT NULL,
                file_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                text TEXT NOT NULL,
                FOREIGN KEY (vector_store_id, file_id)
                    REFERENCES vector_store_files(vector_store_id, file_id) ON DELETE CASCADE
            )""",
            "CREATE INDEX chunks_by_file ON chunks(vector_store_id, file_id)",
            """CREATE VIRTUAL TABLE chunks_fts USING fts5(
                text, content='chunks', content_rowid='rowid', tokenize='porter unicode61'
            )""",
            """CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
                INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
            END""",
            # Cascaded deletions fire this too, so a deleted file leaves nothing in the index.
            """CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
                INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
            END""",
        ),
    ),
    Migration(
        6,
        "background responses: their stream events and cancel requests",
        (
            """CREATE TABLE response_events (
                response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                event TEXT NOT NULL,
                PRIMARY KEY (response_id, seq)
            )""",
            """CREATE TABLE response_cancels (
                response_id TEXT PRIMARY KEY REFERENCES responses(id) ON DELETE CASCADE
            )""",
        ),
    ),
    Migration(
        7,
        "chunk embeddings and vector store expiry",
        # A chunk's vector (float32, unit length) when an embeddings upstream is configured; it goes with the chunk.
        (
            "ALTER TABLE chunks ADD COLUMN embedding BLOB",
            # expires_after: the policy, and when it falls (moved on as the store is used, for `last_active_at`).
            "ALTER TABLE vector_stores ADD COLUMN expires_anchor TEXT",
            "ALTER TABLE vector_stores ADD COLUMN expires_days INTEGER",
            "ALTER TABLE vector_stores ADD COLUMN expires_at REAL",
            "CREATE INDEX vector_stores_by_expiry ON vector_stores(expires_at)",
        ),
    ),
    Migration(
        8,
        "API key changes counted (SQLite) or notified (PostgreSQL), so caches of verified keys drop them at once",
        (
            "CREATE TABLE key_revision (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)",
            "INSERT INTO key_revision VALUES (1, 0)",
            "CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys BEGIN UPDATE key_revision SET n = n + 1; END",
            "CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys BEGIN UPDATE key_revision SET n = n + 1; END",
            "CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys BEGIN UPDATE key_revision SET n = n + 1; END",
        ),
    ),
    Migration(
        9,
        "file expiry",
        # A file's expires_after (created_at + seconds): past it, the file is missing, then swept with its chunks.
        (
            "ALTER TABLE files ADD COLUMN expires_at REAL",
            "CREATE INDEX files_by_expiry ON files(expires_at)",
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations and events",
        (
            """CREATE TABLE conversations (
                id TEXT PRIMARY KEY,
                created_at DOUBLE PRECISION NOT NULL,
                metadata TEXT NOT NULL DEFAULT '{}',
                head BIGINT NOT NULL DEFAULT 0,
                checkpoint BIGINT NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE events (
                conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                seq BIGINT NOT NULL,
                id TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL,
                body BYTEA NOT NULL,
                search_text TEXT,
                PRIMARY KEY (conversation_id, seq)
            )""",
        ),
    ),
    Migration(
        2,
        "full-text search over event text",
        (
            """ALTER TABLE events ADD COLUMN search_tsv tsvector
                GENERATED ALWAYS AS (to_tsvector('english', coalesce(search_text, ''))) STORED""",
            "CREATE INDEX events_search ON events USING GIN (search_tsv)",
        ),
    ),
    Migration(
        3,
        "tenants, stored responses, API keys and turn leases",
        (
            "ALTER TABLE conversations ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
            # Listing pages by (created_at, id), within a tenant or across all of them.
            "CREATE INDEX conversations_by_tenant ON conversations(tenant, created_at, id)",
            "CREATE INDEX conversations_by_created ON conversations(created_at, id)",
            """CREATE TABLE responses (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                created_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                first_seq BIGINT NOT NULL,
                last_seq BIGINT NOT NULL,
                previous_response_id TEXT,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX responses_by_conversation ON responses(conversation_id, created_at, id)",
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                name TEXT NOT NULL,
                prefix TEXT NOT NULL,
                secret_hash TEXT NOT NULL UNIQUE,
                created_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION
            )""",
            # Expiry on the database's clock, so replicas with skewed clocks agree on when a lease lapsed.
            """CREATE TABLE turn_leases (
                conversation_id TEXT PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
                owner TEXT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "the proxy's anchors",
        (
            # The primary key's (tenant, key) prefix is the index `find` reads.
            """CREATE TABLE proxy_anchors (
                tenant TEXT NOT NULL,
                key TEXT NOT NULL,
                conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                seq BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (tenant, key, conversation_id)
            )""",
            # Deleting a conversation cascades here; without this index every deletion would scan every anchor.
            "CREATE INDEX proxy_anchors_by_conversation ON proxy_anchors(conversation_id)",
        ),
    ),
    Migration(
        5,
        "files, vector stores and their chunks",
        (
            """CREATE TABLE files (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                filename TEXT NOT NULL,
                purpose TEXT NOT NULL,
                bytes BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                content BYTEA NOT NULL
            )""",
            "CREATE INDEX files_by_tenant ON files(tenant, created_at, id)",
            """CREATE TABLE vector_stores (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                name TEXT,
                metadata TEXT NOT NULL DEFAULT '{}',
                data TEXT NOT NULL DEFAULT '{}',
                last_active_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX vector_stores_by_tenant ON vector_stores(tenant, created_at, id)",
            """CREATE TABLE vector_store_files (
                vector_store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
                file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
                tenant TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                attributes TEXT NOT NULL DEFAULT '{}',
                chunking TEXT NOT NULL,
                last_error TEXT,
                usage_bytes BIGINT NOT NULL DEFAULT 0,
                batch_id TEXT,
                PRIMARY KEY (vector_store_id, file_id)
            )""",
            # A deleted file cascades here, and ingestion asks for what is still in progress.
            "CREATE INDEX vector_store_files_by_file ON vector_store_files(file_id)",
            "CREATE INDEX vector_store_files_by_status ON vector_store_files(status, created_at)",
            """CREATE TABLE chunks (
                id BIGSERIAL PRIMARY KEY,
                vector_store_id TEXT NOT NULL,
                file_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                text TEXT NOT NULL,
                tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
                FOREIGN KEY (vector_store_id, file_id)
                    REFERENCES vector_store_files(vector_store_id, file_id) ON DELETE CASCADE
            )""",
            "CREATE INDEX chunks_by_file ON chunks(vector_store_id, file_id)",
            # A small pending list: inserts stay batched (ingestion is several times faster than without one), and
            # it is merged often enough that the planner, which prices it as cost, keeps choosing the index.
            "CREATE INDEX chunks_search ON chunks USING GIN (tsv) WITH (gin_pending_list_limit = 256)",
        ),
    ),
    Migration(
        6,
        "background responses: their stream events and cancel requests",
        (
            """CREATE TABLE response_events (
                response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
                seq BIGINT NOT NULL,
                event TEXT NOT NULL,
                PRIMARY KEY (response_id, seq)
            )""",
            """CREATE TABLE response_cancels (
                response_id TEXT PRIMARY KEY REFERENCES responses(id) ON DELETE CASCADE
            )""",
        ),
    ),
    Migration(
        7,
        "chunk embeddings and vector store expiry",
        # A chunk's vector (float32, unit length) when an embeddings upstream is configured; it goes with the chunk.
        (
            "ALTER TABLE chunks ADD COLUMN embedding BYTEA",
            # expires_after: the policy, and when it falls (moved on as the store is used, for `last_active_at`).
            "ALTER TABLE vector_stores ADD COLUMN expires_anchor TEXT",
            "ALTER TABLE vector_stores ADD COLUMN expires_days INTEGER",
            "ALTER TABLE vector_stores ADD COLUMN expires_at DOUBLE PRECISION",
            "CREATE INDEX vector_stores_by_expiry ON vector_stores(expires_at)",
        ),
    ),
    Migration(
        8,
        "API key changes counted (SQLite) or notified (PostgreSQL), so caches of verified keys drop them at once",
        (
            """CREATE FUNCTION contextfold_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN PERFORM pg_notify('contextfold_keys', ''); RETURN NULL; END $$""",
            """CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
               FOR EACH STATEMENT EXECUTE FUNCTION contextfold_keys_changed()""",
        ),
    ),
    Migration(
        9,
        "file expiry",
        # A file's expires_after (created_at + seconds): past it, the file is missing, then swept with its chunks.
        (
            "ALTER TABLE files ADD COLUMN expires_at DOUBLE PRECISION",
            "CREATE INDEX files_by_expiry ON files(expires_at)",
        ),
    ),
)
