"""Datastores for `query` rules: sqlite, postgres, mongo behind one small interface."""
