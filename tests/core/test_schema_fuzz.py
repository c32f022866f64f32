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
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from conftest import RunningServer, Tenant, make_settings, make_tenant, start_server
from fleetplane.registry import MODULES

EXAMPLES_PER_OPERATION = 6
# An endless event stream has no answer to validate: its checks are in the devices tests.
STREAMING = {("GET", "/module/devices/events")}
DOCUMENTS = ["/api/openapi.json", *(module.openapi_url for module in MODULES)]


@pytest.fixture(scope="module")
def fuzzed_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The platform on the shared test database, without device listeners: a fuzzed channel
    must not bind whatever port it names."""
    settings = make_settings(database_url, tmp_path_factory.mktemp("data"), gateway=False)
    running = start_server(settings)
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
        case.call_and_validate(base_url=base_url, headers=headers, timeout=30)

    try:
        check()
    except (AssertionError, FailureGroup) as error:
        return str(error)[:3000]
    return None
