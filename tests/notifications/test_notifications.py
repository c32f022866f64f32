"""What the automations fired, over HTTP: the notifications list, its filters and pages, one
customer's notifications hidden from another, the test of a rule, and the live `notification`
event on the device event stream."""

import time
from collections.abc import Callable
from typing import Any

from conftest import Api, RunningServer, Tenant, assert_problem
from devices.test_event_stream_access import EventStream, streams  # noqa: F401 (fixture)
from notifications.test_delivery import fire
from operations import store_automation

LIST = "/module/automations/notifications"


def listed(api: Api, **query: Any) -> list[dict[str, Any]]:
    response = api.get(LIST, params=query)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_the_list_shows_the_customers_own_notifications_filtered(
    server: RunningServer, tenant: Tenant
) -> None:
    first, second = tenant.module_api(0), tenant.module_api(1)
    speeding = store_automation(tenant, [{"type": "notification"}])
    other_rule = store_automation(tenant, [])
    theirs = store_automation(tenant, [{"type": "notification"}], customer_index=1)
    mine = [fire(server, tenant, speeding, [{"type": "notification"}]) for _ in range(3)]
    without_device = fire(server, tenant, other_rule, [], device=False)
    hidden = fire(server, tenant, theirs, [], customer_index=1)

    items = listed(first)
    assert [item["id"] for item in items] == [*mine, without_device]
    item = items[0]
    device_id = tenant.devices[tenant.customers[0]["id"]][0]["id"]
    assert item == {
        "id": mine[0],
        "automation_id": speeding,
        "device_id": device_id,
        "type": "speeding",
        "time": "2026-03-01T12:30:05Z",
        "data": {"speed": 104.0, "threshold": 90},
        "position": {"lat": 56.9496, "lon": 24.1052, "speed": 104.0, "course": 90},
        "deliveries": [],  # the in-app action is the notification itself
    }
    assert [i["id"] for i in listed(first, automation_id=other_rule)] == [without_device]
    assert [i["id"] for i in listed(first, device_id=device_id)] == mine
    assert listed(first, **{"from": "2026-03-01T12:30:06Z"}) == []
    assert len(listed(first, **{"from": "2026-03-01T12:30:05Z", "to": "2026-03-01T12:30:06Z"})) == 4
    assert listed(first, to="2026-03-01T12:30:05Z") == []
    assert_problem(
        first.get(LIST, params={"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}),
        422,
        "validation_failed",
    )

    page = first.get(LIST, params={"limit": 2}).json()
    rest = first.get(LIST, params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [i["id"] for i in page["items"] + rest["items"]] == [*mine, without_device]
    assert rest["next_cursor"] is None

    # The other customer sees only its own, whatever it filters on.
    assert [i["id"] for i in listed(second)] == [hidden]
    assert listed(second, automation_id=speeding) == []
    assert listed(second, device_id=device_id) == []


def test_a_test_of_another_customers_automation_is_not_found(
    server: RunningServer, tenant: Tenant
) -> None:
    automation_id = store_automation(tenant, [{"type": "notification"}])
    other = tenant.module_api(1).post(f"/module/automations/{automation_id}/test")
    assert_problem(other, 404, "not_found")
    unknown = tenant.module_api(0).post("/module/automations/aut_00000000000000000000000000/test")
    assert_problem(unknown, 404, "not_found")
    assert listed(tenant.module_api(1)) == listed(tenant.module_api(0)) == []

    fired = tenant.module_api(0).post(f"/module/automations/{automation_id}/test")
    assert fired.status_code == 202, fired.text
    [item] = listed(tenant.module_api(0))
    assert item["id"] == fired.json()["notification_id"]
    assert item["type"] == "test" and item["automation_id"] == automation_id
    assert item["device_id"] == tenant.devices[tenant.customers[0]["id"]][0]["id"]


def test_the_in_app_action_is_a_live_notification_event(
    server: RunningServer,
    tenant: Tenant,
    streams: Callable[[Api], EventStream],  # noqa: F811 (the fixture)
) -> None:
    api = tenant.module_api(0)
    stream = streams(api)
    secret, _ = tenant.api.new_key(customer_permissions=["read:devices"])
    without_permission = streams(api.with_key(secret))
    other_customer = streams(tenant.module_api(1))
    automation_id = store_automation(tenant, [{"type": "notification"}])
    silent = store_automation(tenant, [])  # no in-app action: no event
    fire(server, tenant, silent, [])
    fired = api.post(f"/module/automations/{automation_id}/test").json()["notification_id"]

    deadline = time.monotonic() + 10
    while not any(name == "notification" for name, _ in stream.events):
        assert time.monotonic() < deadline, stream.events
        time.sleep(0.02)
    [event] = [data for name, data in stream.events if name == "notification"]
    device_id = tenant.devices[tenant.customers[0]["id"]][0]["id"]
    assert event["type"] == "notification" and event["device_id"] == device_id
    shown = event["notification"]
    assert shown["id"] == fired and shown["automation_id"] == automation_id
    assert shown["type"] == "test" and shown["device_id"] == device_id
    assert shown["data"]["test"] is True and shown["position"] is None and shown["time"]
    [item] = [i for i in listed(api) if i["id"] == fired]
    assert {key: item[key] for key in shown} == shown
    time.sleep(0.3)  # had they been sent, they would have arrived with the first
    assert not [n for n, _ in without_permission.events if n == "notification"]
    assert not [n for n, _ in other_customer.events if n == "notification"]


def test_a_stream_stops_sending_notifications_once_its_key_may_not_read_them(
    server: RunningServer,
    tenant: Tenant,
    streams: Callable[[Api], EventStream],  # noqa: F811 (the fixture)
) -> None:
    api = tenant.module_api(0)
    secret, key = tenant.api.new_key(
        customer_permissions=["read:devices", "read:notifications", "update:automations"]
    )
    keyed = api.with_key(secret)
    stream = streams(keyed)
    automation_id = store_automation(tenant, [{"type": "notification"}])

    def notified() -> list[str]:
        events = stream.events
        return [data["notification"]["id"] for name, data in events if name == "notification"]

    first = keyed.post(f"/module/automations/{automation_id}/test").json()["notification_id"]
    deadline = time.monotonic() + 10
    while notified() != [first]:
        assert time.monotonic() < deadline, stream.events
        time.sleep(0.02)
    changed = tenant.api.patch(
        f"/api/api-keys/{key['id']}",
        json={"customer_permissions": ["read:devices", "update:automations"]},
    )
    assert changed.status_code == 200, changed.text
    second = keyed.post(f"/module/automations/{automation_id}/test").json()["notification_id"]
    assert [i for i in listed(api) if i["id"] == second]  # it fired
    time.sleep(0.5)  # had it been sent, it would have arrived
    assert notified() == [first], stream.events
    assert not [name for name, _ in stream.events if name == "closed"]
