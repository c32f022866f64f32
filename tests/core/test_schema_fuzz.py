"""Every operation of every OpenAPI document, fuzzed against the running server: valid and
invalid inputs generated from the documents themselves never get a 5xx, and every answer is
one the document describes (status, content type, body schema).

A few derandomized examples per operation and generation mode keep the run short and the same
on every run."""

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks

from conftest import (
    RunningServer,
    Tenant,
    fresh_database,
    make_settings,
    make_tenant,
    start_server,
)
from fleetplane.registry import MODULES

EXAMPLES_PER_OPERATION = 10
# An endless event stream has no answer to validate: its checks are in the devices tests.
STREAMING = {("GET", "/module/devices/events")}
# Left out: extra query parameters are ignored by design, and the fixed key and customer
# headers replace the fuzzer's missing or broken ones (negative_data_rejection); a valid
# request may still be refused for what no schema states, a device id that exists, a cursor
# this API gave (positive_data_acceptance, narrowed to `documented_constraints_only` below);
# no stateful checks (no links between operations are documented).
EXCLUDED_CHECKS = [
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
    checks.use_after_free,
    checks.ensure_resource_availability,
]
# Refusals for what a document cannot state: a rule across fields, a reference to an object
# that must exist, a value from a list kept elsewhere (time zones).
SEMANTIC_ERRORS = {None, "value_error", "assertion_error", "calibration_not_increasing"}
DOCUMENTS = ["/api/openapi.json", *(module.openapi_url for module in MODULES)]


@pytest.fixture(scope="module")
def fuzzed_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The platform on a database of its own, without device listeners: a fuzzed channel must
    bind no port it names, here or in the shared test server."""
    directory = tmp_path_factory.mktemp("fuzzed")
    with fresh_database(backend, directory) as url:
        running = start_server(make_settings(url, directory, gateway=False))
        yield running
        running.stop()


@pytest.fixture(scope="module")
def fuzzed_tenant(fuzzed_server: RunningServer) -> Tenant:
    return make_tenant(fuzzed_server, "Fuzzed provider", customers=1)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_operation_answers_as_documented(
    fuzzed_server: RunningServer, fuzzed_tenant: Tenant, document: str
) -> None:
    schema = schemathesis.openapi.from_url(fuzzed_server.base_url + document)
    headers = fuzzed_tenant.module_api(0).headers()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in STREAMING:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _fuzz(operation, mode, fuzzed_server.base_url, headers)
            if failure:
                failures.append(
                    f"{operation.method.upper()} {operation.path} ({mode.value}): {failure}"
                )
    assert not failures, "\n\n".join(failures)


def _fuzz(
    operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]
) -> str | None:
    """The first failure of the operation's checks in this mode, shrunk, or None."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=base_url,
            headers=headers,
            timeout=30,
            excluded_checks=EXCLUDED_CHECKS,
            additional_checks=[documented_constraints_only],
        )

    try:
        check()
    except (AssertionError, FailureGroup) as error:
        return str(error)[:3000]
    except Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:
            return None  # nothing the fuzzer may change can break the document's rules
        return "no valid request could be generated from the document"
    return None


def documented_constraints_only(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the document says is valid is never refused for a constraint the document
    could have stated (a length, a pattern, a range, a type): such a refusal means the
    document and the code disagree."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code != 422:
        return None
    undocumented = [
        error
        for error in response.json().get("errors", [])
        if error.get("type") not in SEMANTIC_ERRORS
    ]
    assert not undocumented, f"a schema-valid request was refused: {undocumented}"
    return None
