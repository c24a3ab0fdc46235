"""Durable storage shared by the server and the apps: SQL engines (SQLite by default, PostgreSQL by URL) and
webhook delivery of stored alerts."""
