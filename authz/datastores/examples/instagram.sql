-- The seeds' Instagram example: a profile is readable when it is public or the caller
-- follows it. SQLite (also valid PostgreSQL). Create with:
--   sqlite3 data/app.db < authz/datastores/examples/instagram.sql
CREATE TABLE profiles (
  userId   TEXT PRIMARY KEY,
  name     TEXT NOT NULL,
  isPublic BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE followers (
  userId     TEXT NOT NULL,  -- the profile followed
  followerId TEXT NOT NULL,  -- who follows it
  PRIMARY KEY (userId, followerId)
);
INSERT INTO profiles (userId, name, isPublic) VALUES
  ('alice', 'Alice', TRUE),
  ('bob',   'Bob',   FALSE),
  ('carol', 'Carol', FALSE);
INSERT INTO followers (userId, followerId) VALUES
  ('bob',   'alice'),   -- alice may read bob
  ('carol', 'bob');     -- bob may read carol
