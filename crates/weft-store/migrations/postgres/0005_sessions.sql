-- The dashboard's sessions: each a random id (stored as its SHA-256, so
-- the table gives no one a live cookie), made for one API key (a key
-- changed ends them all), until it expires or is signed out.
CREATE TABLE sessions (
    id text PRIMARY KEY,
    key_tag text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
