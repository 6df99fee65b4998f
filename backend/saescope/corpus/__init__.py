"""saescope.corpus: text sources and packing into fixed-length contexts.

`documents` (Document, load_documents: folders, globs, .jsonl, .parquet, Hugging Face datasets),
`stdlib` (the built-in offline corpus: the running interpreter's standard library) and `packing`
(PackedContexts, pack_documents). The first stage: imports no other stage.
"""
