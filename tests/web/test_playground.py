"""The playground: its page and assets over plain HTTP, then the page driven in Chromium."""

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from conftest import RunningServer, Tenant, assert_problem, create_channel, shared_client
from fleetplane.registry import MODULES

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_BROWSER_ENV = "FLEETPLANE_REQUIRE_BROWSER"
UI_TIMEOUT_MS = 20_000
ABSOLUTE_URL = re.compile(r"""https?://[^\s"'<>)]+""")


class PageLinks(HTMLParser):
    """The URLs a page loads or links to, and its inline JSON config."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.config_text = ""
        self._in_config = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(values[name] or "")
        self._in_config = tag == "script" and values.get("id") == "playground-config"

    def handle_endtag(self, tag: str) -> None:
        self._in_config = False

    def handle_data(self, data: str) -> None:
        if self._in_config:
            self.config_text += data


def get(server: RunningServer, path: str, **kwargs: Any) -> httpx.Response:
    return shared_client(server.base_url).get(path, **kwargs)


def parse_page(server: RunningServer) -> tuple[httpx.Response, PageLinks]:
    response = get(server, "/playground")
    links = PageLinks()
    links.feed(response.text)
    return response, links


# ---- plain HTTP ------------------------------------------------------------------------------


def test_page_is_html_and_every_asset_it_names_loads(server: RunningServer) -> None:
    response, links = parse_page(server)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    expected_types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    assert {Path(urlsplit(url).path).suffix for url in links.urls} == set(expected_types)
    for url in links.urls:
        assert url.startswith("/playground/"), url
        asset = get(server, url)
        assert asset.status_code == 200, url
        content_type = asset.headers["content-type"]
        assert content_type.startswith(expected_types[Path(url).suffix]), (url, content_type)
        assert asset.content, url


def test_page_and_own_assets_name_no_outside_url(server: RunningServer) -> None:
    response, links = parse_page(server)
    own_texts = [response.text] + [
        get(server, url).text for url in links.urls if url.startswith("/playground/static/")
    ]
    assert len(own_texts) == 3  # the page, its script and its styles
    for text in own_texts:
        outside = [url for url in ABSOLUTE_URL.findall(text) if not url.startswith(server.base_url)]
        assert outside == []
    swagger_css = get(server, "/playground/swagger-ui/swagger-ui.css").text
    assert not re.search(r"url\(\s*['\"]?https?:", swagger_css)
    assert "@import" not in swagger_css


def test_config_lists_every_module_and_the_studio_document(server: RunningServer) -> None:
    _, links = parse_page(server)
    config = json.loads(links.config_text)
    assert config["studio"] == {"openapi_url": "/api/openapi.json"}
    assert config["customers_url"] == "/api/customers"
    assert config["headers"] == {"api_key": "x-platform-api-key", "customer": "x-platform-cid"}
    assert config["modules"] == [
        {
            "name": module.name,
            "title": module.title,
            "description": module.description,
            "openapi_url": module.openapi_url,
        }
        for module in MODULES
    ]
    for url in [config["studio"]["openapi_url"]] + [m["openapi_url"] for m in config["modules"]]:
        assert get(server, url).status_code == 200, url


def test_files_outside_the_served_lists_are_not_found(server: RunningServer) -> None:
    for path in [
        "/playground/swagger-ui/redoc.standalone.js",
        "/playground/static/playground.html",
        "/playground/static/..%2Fplayground.py",
        "/playground/static/__init__.py",
    ]:
        assert_problem(get(server, path), 404, "not_found")


def test_assets_revalidate_with_their_etag(server: RunningServer) -> None:
    first = get(server, "/playground/static/playground.js")
    etag = first.headers["etag"]
    again = get(server, "/playground/static/playground.js", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""


# ---- in the browser --------------------------------------------------------------------------
#
# Playwright's sync API keeps an event loop running in the thread that started it, and the
# fixtures call asyncio.run(); so the browser lives in a thread of its own and every scenario
# runs there, with its own browser context (and so its own sessionStorage).


@dataclass
class Playground:
    """A browser tab on the playground, recording where it went and what broke."""

    page: Any
    base_url: str
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    policy_violations: list[str] = field(default_factory=list)

    def open(self) -> None:
        self.page.goto(f"{self.base_url}/playground")

    def paste_key(self, key: str) -> None:
        self.page.fill("#api-key", key)

    def open_module(self, title: str) -> None:
        self.page.get_by_role("tab", name=re.compile("FleetSpace")).click()
        # By the title alone: other modules' descriptions may name it ("the customer's devices").
        title_text = self.page.locator(
            ".module-title", has_text=re.compile(f"^{re.escape(title)}$")
        )
        self.page.locator("#module-list .module", has=title_text).click()

    def operation(self, host: str, method: str, path: str) -> Any:
        summary = f'.opblock-summary-path[data-path="{path}"]'
        return self.page.locator(f"#{host} .opblock-{method.lower()}").filter(
            has=self.page.locator(summary)
        )

    def execute(self, operation: Any) -> tuple[str, Any]:
        """Expands the operation, runs it with its defaults; returns (status, parsed body)."""
        operation.locator(".opblock-summary").first.click()
        operation.get_by_role("button", name="Try it out").click()
        operation.get_by_role("button", name="Execute").click()
        row = operation.locator(".live-responses-table tr.response").first
        expect(row).to_be_visible()
        status = row.locator(".response-col_status").inner_text().strip()
        body = row.locator(".response-col_description .highlight-code pre").first.inner_text()
        return status, json.loads(body)

    def assert_clean(self) -> None:
        # blob: URLs of this origin are bytes the page already holds (an image answer).
        own = (self.base_url, f"blob:{self.base_url}/")
        outside = [url for url in self.requests if not url.startswith(own)]
        assert outside == [], "the page reached outside the server"
        assert self.page_errors == []
        assert self.policy_violations == []


Scenario = Callable[[Playground], None]


class BrowserThread:
    """Chromium driven from one worker thread; `run` plays a scenario there and waits."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser")
        self.playwright: Any = None
        self.browser: Any = None
        self.worker.submit(self._launch).result()

    def _launch(self) -> None:
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )

    def run(self, scenario: Scenario) -> None:
        self.worker.submit(self._play, scenario).result()

    def _play(self, scenario: Scenario) -> None:
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            tab = Playground(page, self.base_url)
            page.on("request", lambda request: tab.requests.append(request.url))
            page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
            page.on("console", lambda message: _note_policy_violation(tab, message.text))
            scenario(tab)
            tab.assert_clean()
        finally:
            context.close()

    def close(self) -> None:
        def stop() -> None:
            if self.browser is not None:
                self.browser.close()
            if self.playwright is not None:
                self.playwright.stop()

        self.worker.submit(stop).result()
        self.worker.shutdown()


def _note_policy_violation(tab: Playground, text: str) -> None:
    if "Content Security Policy" in text:
        tab.policy_violations.append(text)


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = (
        f"{CHROMIUM} not found: browser tests need Debian's chromium (apt-get install chromium)"
    )
    if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
        pytest.fail(f"{message}, and {REQUIRE_BROWSER_ENV}=1 requires them")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(server: RunningServer) -> Iterator[BrowserThread]:
    require_chromium()
    running = BrowserThread(server.base_url)
    yield running
    running.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def with_query(url: str, **values: str) -> str:
    parts = urlsplit(url)
    query = {**dict(parse_qsl(parts.query)), **values}
    return urlunsplit(parts._replace(query=urlencode(query)))


def device_ids(tenant: Tenant, customer: dict[str, Any]) -> set[str]:
    return {device["id"] for device in tenant.devices[customer["id"]]}


def pick_customer(tab: Playground, customer: dict[str, Any]) -> None:
    tab.page.select_option("#customer-select", label=customer["name"])
    expect(tab.page.locator("#customer-current-name")).to_have_text(customer["name"])
    expect(tab.page.locator("#customer-current-id")).to_have_text(customer["id"])


def assert_lists_the_devices_of(tab: Playground, tenant: Tenant, customer: dict[str, Any]) -> None:
    status, body = tab.execute(tab.operation("fleetspace-ui", "GET", "/module/devices"))
    assert status == "200"
    assert {item["id"] for item in body["items"]} == device_ids(tenant, customer)


@pytest.mark.browser
def test_fleetspace_calls_a_module_for_the_picked_customer(
    browser: BrowserThread, tenant: Tenant
) -> None:
    customer = tenant.customers[0]

    def scenario(tab: Playground) -> None:
        tab.open()
        tab.paste_key(tenant.api.key or "")
        tab.open_module("Devices")
        pick_customer(tab, customer)
        assert_lists_the_devices_of(tab, tenant, customer)

    browser.run(scenario)


@pytest.mark.browser
def test_the_customer_picker_pages_through_every_customer(
    browser: BrowserThread, tenant: Tenant
) -> None:
    listings: list[str] = []

    def one_customer_per_page(route: Any) -> None:
        url = with_query(route.request.url, limit="1")
        listings.append(url)
        route.continue_(url=url)

    def scenario(tab: Playground) -> None:
        tab.page.route(re.compile(r"/api/customers\?"), one_customer_per_page)
        tab.open()
        tab.paste_key(tenant.api.key or "")
        tab.open_module("Devices")
        choices = tab.page.locator("#customer-select option:not([value=''])")
        expect(choices).to_have_text([customer["name"] for customer in tenant.customers])

    browser.run(scenario)
    assert len(listings) == 2
    assert "cursor=" in listings[1]


@pytest.mark.browser
def test_a_reload_keeps_the_key_tab_and_customer(browser: BrowserThread, tenant: Tenant) -> None:
    customer = tenant.customers[1]

    def scenario(tab: Playground) -> None:
        tab.open()
        tab.paste_key(tenant.api.key or "")
        tab.open_module("Devices")
        pick_customer(tab, customer)
        tab.page.reload()
        expect(tab.page.locator("#api-key")).to_have_value(tenant.api.key or "")
        fleetspace = tab.page.get_by_role("tab", name=re.compile("FleetSpace"))
        expect(fleetspace).to_have_attribute("aria-selected", "true")
        expect(tab.page.locator("#customer-select")).to_have_value(customer["id"])
        assert_lists_the_devices_of(tab, tenant, customer)

    browser.run(scenario)


@pytest.mark.browser
def test_without_read_customers_the_customer_id_is_typed_by_hand(
    browser: BrowserThread, tenant: Tenant
) -> None:
    secret, _ = tenant.api.new_key(provider_permissions=[], customer_permissions=["read:devices"])
    customer = tenant.customers[1]

    def scenario(tab: Playground) -> None:
        tab.open()
        tab.paste_key(secret)
        tab.open_module("Devices")
        expect(tab.page.locator("#customer-error")).to_contain_text(
            "This API key lacks the permission read:customers."
        )
        tab.page.fill("#customer-id", customer["id"])
        expect(tab.page.locator("#customer-current-id")).to_have_text(customer["id"])
        assert_lists_the_devices_of(tab, tenant, customer)

    browser.run(scenario)


@pytest.mark.browser
def test_studio_lists_and_calls_the_customers_operations(
    browser: BrowserThread, tenant: Tenant
) -> None:
    def scenario(tab: Playground) -> None:
        tab.open()
        tab.paste_key(tenant.api.key or "")
        studio = tab.page.get_by_role("tab", name=re.compile("Studio"))
        expect(studio).to_have_attribute("aria-selected", "true")
        paths = tab.page.locator('#studio-ui .opblock-summary-path[data-path="/api/customers"]')
        expect(paths).to_have_count(2)  # GET (list) and POST (create)

        status, body = tab.execute(tab.operation("studio-ui", "GET", "/api/customers"))

        assert status == "200"
        listed = {item["id"]: item["name"] for item in body["items"]}
        assert listed == {customer["id"]: customer["name"] for customer in tenant.customers}

    browser.run(scenario)


@pytest.mark.browser
def test_switching_tabs_after_expanding_an_operation_keeps_the_page(
    browser: BrowserThread, tenant: Tenant
) -> None:
    """Swagger UI renders tabs of its own (Example Value | Schema) inside an expanded
    operation; switching between Studio and FleetSpace leaves them alone and shows the other
    panel's operations."""

    def scenario(tab: Playground) -> None:
        tab.open()
        tab.paste_key(tenant.api.key or "")
        fleetspace = tab.page.get_by_role("tab", name=re.compile("FleetSpace"))
        studio = tab.page.get_by_role("tab", name=re.compile("Studio"))
        customers = tab.operation("studio-ui", "GET", "/api/customers")
        customers.locator(".opblock-summary").first.click()
        swagger_tabs = customers.locator(".tab [role=tab]")
        expect(swagger_tabs.first).to_be_visible()  # Swagger UI's own: Example Value | Schema

        for _ in range(2):
            fleetspace.click()
            expect(fleetspace).to_have_attribute("aria-selected", "true")
            expect(tab.page.locator("#panel-studio")).to_be_hidden()
            expect(tab.operation("fleetspace-ui", "GET", "/module/devices")).to_be_visible()
            studio.click()
            expect(studio).to_have_attribute("aria-selected", "true")
            expect(tab.page.locator("#panel-fleetspace")).to_be_hidden()
            expect(customers.locator(".opblock-body")).to_be_visible()
            expect(swagger_tabs.first).to_be_visible()
        assert tab.page_errors == []

    browser.run(scenario)


def osmand_device(tenant: Tenant, customer: dict[str, Any], unique_id: str) -> tuple[str, str]:
    """A device of `customer` on a listening OsmAnd channel: (device id, the channel's URL)."""
    channel = create_channel(tenant.api, enabled=True, protocol="osmand", transport="http")
    deadline = time.monotonic() + 5
    while not (tenant.api.get(f"/api/channels/{channel['id']}").json()["counters"] or {}).get(
        "listening"
    ):
        assert time.monotonic() < deadline, "the OsmAnd listener did not start"
        time.sleep(0.05)
    body = tenant.device_body(
        channel_id=channel["id"], unique_id=unique_id, customer_id=customer["id"]
    )
    device = tenant.api.post("/api/devices", json=body)
    assert device.status_code == 201, device.text
    return device.json()["id"], f"http://127.0.0.1:{channel['port']}/"


def report_position(url: str, unique_id: str, timestamp: int, speed_knots: int) -> None:
    fields = {"id": unique_id, "lat": "56.95", "lon": "24.1", "timestamp": str(timestamp)}
    answer = httpx.get(url, params={**fields, "speed": str(speed_knots)}, timeout=10)
    assert answer.status_code == 200, answer.text


@pytest.mark.browser
def test_the_event_stream_shows_events_as_they_arrive(
    browser: BrowserThread, tenant: Tenant
) -> None:
    customer = tenant.customers[0]
    device_id, osmand_url = osmand_device(tenant, customer, "phone-live-1")

    def scenario(tab: Playground) -> None:
        tab.open()
        tab.paste_key(tenant.api.key or "")
        tab.open_module("Devices")
        pick_customer(tab, customer)
        operation = tab.operation("fleetspace-ui", "GET", "/module/devices/events")
        operation.locator(".opblock-summary").first.click()
        operation.get_by_role("button", name="Try it out").click()
        operation.get_by_role("button", name="Execute").click()
        # Swagger UI is answered as soon as the stream opens, not when it ends.
        status = operation.locator(".live-responses-table tr.response .response-col_status")
        expect(status.first).to_have_text("200")
        panel = tab.page.locator("#event-stream")
        expect(panel.locator("#event-stream-status")).to_have_text(re.compile("^Open"))
        expect(panel.locator("#event-stream-operation")).to_have_text("GET /module/devices/events")
        events = panel.locator("#event-stream-list .event")
        expect(events).to_have_count(0)

        report_position(osmand_url, "phone-live-1", 1795600000, 10)
        expect(events).to_have_count(1)
        report_position(osmand_url, "phone-live-1", 1795600060, 20)
        expect(events).to_have_count(2)
        expect(events.locator(".event-type")).to_have_text(["state", "state"])
        newest, first = (json.loads(text) for text in events.locator("pre").all_inner_texts())
        assert first["device_id"] == newest["device_id"] == device_id
        assert first["last_message_at"] == "2026-11-25T09:46:40Z"
        assert newest["last_message_at"] == "2026-11-25T09:47:40Z"  # newest first
        expect(panel.locator("#event-stream-count")).to_have_text("2 events")

        stream_request = re.compile(r"/module/devices/events")
        with tab.page.expect_event(
            "requestfailed", lambda r: stream_request.search(r.url)
        ) as ended:
            panel.get_by_role("button", name="Stop").click()
        assert "ABORTED" in (ended.value.failure or "")  # the page closed the stream
        expect(panel.locator("#event-stream-status")).to_have_text("Stopped")
        expect(panel.get_by_role("button", name="Stop")).to_be_disabled()

    browser.run(scenario)


@pytest.mark.browser
@pytest.mark.parametrize(
    ("report", "chart_format"), [("speeding", "png"), ("speeding", "svg"), ("trips", "png")]
)
def test_a_chart_answer_shows_as_an_image(
    browser: BrowserThread, tenant: Tenant, report: str, chart_format: str
) -> None:
    customer = tenant.customers[0]
    names = {device["name"] for device in tenant.devices[customer["id"]]}

    def scenario(tab: Playground) -> None:
        tab.open()
        tab.paste_key(tenant.api.key or "")
        tab.open_module("Analytics")
        pick_customer(tab, customer)
        operation = tab.operation("fleetspace-ui", "GET", "/module/analytics/reports/{report}")
        operation.locator(".opblock-summary").first.click()
        operation.get_by_role("button", name="Try it out").click()
        parameter = lambda name: operation.locator(f'tr[data-param-name="{name}"]')  # noqa: E731
        parameter("report").locator("select").select_option(report)
        parameter("from").locator("input").fill("2026-11-01T00:00:00Z")
        parameter("to").locator("input").fill("2026-11-08T00:00:00Z")
        parameter("group_by").locator("select").select_option("day")
        parameter("format").locator("select").select_option(chart_format)
        operation.get_by_role("button", name="Execute").click()
        row = operation.locator(".live-responses-table tr.response").first
        expect(row.locator(".response-col_status")).to_have_text("200")
        image = row.locator(".image-answer img")
        expect(image).to_be_visible()
        size = image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
        assert size[0] and size[1] > 600 and size[2] > 300, size  # drawn, not a broken image
        save = row.locator(".image-answer a")
        expect(save).to_have_text(f"Save {report}-20261101-20261108.{chart_format}")
        assert (save.get_attribute("href") or "").startswith("blob:")

    browser.run(scenario)
    assert names  # the chart's legend names them; its drawing is tested in tests/analytics
