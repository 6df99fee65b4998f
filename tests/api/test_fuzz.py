"""Property-based fuzzing of the whole OpenAPI schema with schemathesis (valid and invalid data):
no input gives a 5xx, every status code is documented, and every response (errors included) matches
its documented schema. The same fuzz runs against the atlas in PostgreSQL (skipped when no server
answers on 127.0.0.1:5432): its driver refuses values SQLite takes, such as NUL characters."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import hypothesis_compat
from api_atlas import make_settings

hypothesis_compat.install()
schemathesis.experimental.OPEN_API_3_1.enable()  # FastAPI emits OpenAPI 3.1

pytestmark = pytest.mark.slow

# Not `negative_data_rejection`: every query value is a valid string for free-text parameters.
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
)


def _schema_of(atlas):
    from saescope.api.app import create_app

    app = create_app(make_settings(atlas))
    return schemathesis.from_asgi(
        "/openapi.json", app, data_generation_methods=schemathesis.DataGenerationMethod.all()
    )


@pytest.fixture(scope="module")
def fuzz_schema(random_sae_atlas):
    return _schema_of(random_sae_atlas)


@pytest.fixture(scope="module")
def fuzz_schema_postgresql(pg_atlas):
    return _schema_of(pg_atlas)


schema = schemathesis.from_pytest_fixture("fuzz_schema")
schema_postgresql = schemathesis.from_pytest_fixture("fuzz_schema_postgresql")
FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@schema.parametrize()
@FUZZ
def test_no_input_gives_a_server_error_and_responses_match_the_schema(case):
    check_case(case)


@pytest.mark.postgres
@schema_postgresql.parametrize()
@FUZZ
def test_no_input_gives_a_server_error_on_postgresql_either(case):
    check_case(case)


def check_case(case) -> None:
    """One fuzzed request: no 5xx, the response matches the schema, errors are the JSON error shape."""
    response = case.call_asgi()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "field"} and body["error"]
