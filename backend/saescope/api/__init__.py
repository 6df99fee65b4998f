"""saescope.api stage: the FastAPI application (`app.create_app(ApiSettings)`), its request/response
shapes (`schemas`), routers per resource, error mapping and the model worker.

Read-only over the store (through `saescope.store.reader`); live work goes through `saescope.engine`.
"""
