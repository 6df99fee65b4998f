"""saescope.store stage: the atlas database (SQLite or PostgreSQL) and the only code that speaks SQL.

`schema` (tables), `database` (create_database, init_schema), `writer` (bulk writes, atomic
swaps), `publish` (precompute_and_publish, stale_dictionaries) and `reader` (queries the API runs).
"""
