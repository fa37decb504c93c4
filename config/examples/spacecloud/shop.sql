-- The tables the example's `social.profile` rule queries, in the schema Space Cloud's
-- db-config names (`name: shop`; the import puts it on the connection's search_path):
--   psql postgresql://postgres@127.0.0.1:5432/test -f config/examples/spacecloud/shop.sql
CREATE SCHEMA IF NOT EXISTS shop;
SET search_path TO shop;
CREATE TABLE IF NOT EXISTS profiles (
  userId   TEXT PRIMARY KEY,
  name     TEXT NOT NULL,
  isPublic BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS followers (
  userId     TEXT NOT NULL,  -- the profile followed
  followerId TEXT NOT NULL,  -- who follows it
  PRIMARY KEY (userId, followerId)
);
INSERT INTO profiles VALUES ('alice', 'Alice', TRUE), ('bob', 'Bob', FALSE)
  ON CONFLICT DO NOTHING;
INSERT INTO followers VALUES ('bob', 'alice') ON CONFLICT DO NOTHING;
