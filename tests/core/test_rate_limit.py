import time
from collections.abc import Iterator

import pytest

from conftest import Api, RunningServer, assert_problem, make_tenant, server_with


@pytest.fixture(scope="module")
def limited_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with server_with(
        database_url, tmp_path_factory.mktemp("limited"), rate_limit=2, gateway=False
    ) as running:
        yield running


def test_every_authenticated_answer_carries_the_figures(limited_server: RunningServer) -> None:
    tenant = make_tenant(limited_server, "Rate-limited provider", customers=0)
    response = tenant.api.get("/api/customers/cus_00000000000000000000000000")  # an error, too
    assert response.status_code == 404
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert name in response.headers
    assert response.headers["RateLimit-Limit"] == "4"  # bursts of twice the rate


def test_past_the_burst_the_key_gets_429_and_another_key_does_not(
    limited_server: RunningServer,
) -> None:
    tenant = make_tenant(limited_server, "Bursty provider", customers=0)
    other = make_tenant(limited_server, "Calm provider", customers=0)
    answers = [tenant.api.get("/api/customers") for _ in range(8)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    problem = assert_problem(limited[0], 429, "rate_limited")
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].headers["RateLimit-Remaining"] == "0"
    assert "retry" in problem["detail"]
    assert other.api.get("/api/customers").status_code == 200  # its own bucket
    time.sleep(1.0)
    assert tenant.api.get("/api/customers").status_code == 200  # refilled


def test_public_endpoints_are_not_limited(limited_server: RunningServer) -> None:
    anonymous = Api(limited_server.base_url, None)
    assert all(anonymous.get("/healthz").status_code == 200 for _ in range(10))
