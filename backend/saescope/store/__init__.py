"""saescope.store stage: the atlas database (SQLite or PostgreSQL) and the only code that speaks SQL.

Persistence only, no analysis: `schema` (tables), `database` (create_database, init_schema),
`writer` (bulk writes, atomic swaps), `publish` (the atomic publish of fully computed records),
`pages` (pre-rendered feature pages) and `reader` (queries the API runs). It imports no stage but
`errors` and the shared modules.
"""
