"""The router's configuration from its ConfigMap: what a ConfigMap says (`config_in`), and the
watcher that follows the one ConfigMap (over a scripted client; e2e/test_router_configmap.py
runs it against a real API server)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from scripted_api import ScriptedClient, Sleeps, event, listed

from davit_router.config import ConfigError, RouterConfig
from davit_router.configmap import ConfigMapWatcher, config_in

DOCUMENT = {"model": "resnet", "revisions": [{"name": "a", "weight": 100, "service": "resnet-a"}]}


def configmap(data: Any, name: str = "resnet-router") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "prod"}, "data": data}


def weights(document: dict[str, Any]) -> dict[str, Any]:
    return configmap({"router.json": json.dumps(document)})


def split(a: int, b: int) -> dict[str, Any]:
    return weights({"model": "resnet", "revisions": [{"name": "a", "weight": a},
                                                      {"name": "b", "weight": b}]})  # fmt: skip


def test_a_configmaps_router_json_is_its_configuration() -> None:
    config = config_in(weights(DOCUMENT))
    assert config.model == "resnet"
    assert config.weights == [("a", 100)]
    assert config.services == frozenset({"resnet-a"})


@dataclass(frozen=True)
class Bad:
    reason: str
    configmap: dict[str, Any]
    message: str


BAD = [
    Bad("no data at all (an empty ConfigMap has none)", {"metadata": {}}, "no router.json key"),
    Bad("another key only", configmap({"config.json": "{}"}), "no router.json key"),
    Bad("not JSON", configmap({"router.json": "{"}), "router.json: not JSON"),
    # The router's own strict parse says which field, as it does for a file.
    Bad("a field the router refuses", weights({"model": "resnet", "revisions": []}),
        "revisions: expected a list of at least one revision"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[c.reason for c in BAD])
def test_a_configmap_that_cannot_be_used_says_why(case: Bad) -> None:
    with pytest.raises(ConfigError, match=case.message):
        config_in(case.configmap)


def follow(script: list[tuple[str, Any]]) -> tuple[list[RouterConfig], ScriptedClient]:
    client = ScriptedClient(script)
    found: list[RouterConfig] = []
    watcher = ConfigMapWatcher(
        client,  # type: ignore[arg-type]  # the two methods the watcher uses
        "prod", "resnet-router", found.append, sleep=Sleeps(),
    )  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watcher.run())
    return found, client


def test_it_watches_only_its_configmap_by_name() -> None:
    _, client = follow([("LIST", listed("1", split(90, 10))), ("WATCH", [])])
    # A field selector on the name: what a Role's resourceNames can allow for list and watch.
    selector = "fieldSelector=metadata.name%3Dresnet-router"
    assert client.asked[0] == f"LIST /api/v1/namespaces/prod/configmaps?{selector}"
    assert client.asked[1].startswith(f"WATCH /api/v1/namespaces/prod/configmaps?{selector}&")


def test_each_step_the_operator_writes_is_handed_on_as_it_comes() -> None:
    found, _ = follow([
        ("LIST", listed("1", split(90, 10))),
        ("WATCH", [event("MODIFIED", split(50, 50), "2"), event("MODIFIED", split(0, 100), "3")]),
    ])  # fmt: skip
    assert [c.weights for c in found] == [
        [("a", 90), ("b", 10)], [("a", 50), ("b", 50)], [("a", 0), ("b", 100)]
    ]  # fmt: skip


def test_a_configmap_not_there_yet_is_waited_for_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    found, _ = follow([
        ("LIST", listed("1")),
        ("WATCH", []),  # ended by the API server's timeout: the watch goes on from 1
        ("WATCH", [event("ADDED", split(100, 0), "2")]),
    ])  # fmt: skip
    assert [c.weights for c in found] == [[("a", 100), ("b", 0)]]
    waiting = [r for r in caplog.records if "does not exist yet" in r.getMessage()]
    assert len(waiting) == 1
    assert waiting[0].levelno == logging.WARNING
    assert "ConfigMap prod/resnet-router" in waiting[0].getMessage()


def test_an_unusable_change_is_logged_and_the_configuration_in_force_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    found, _ = follow([
        ("LIST", listed("1", split(90, 10))),
        ("WATCH", [event("MODIFIED", configmap({"router.json": "{"}), "2"),
                   event("DELETED", split(90, 10), "3"),
                   event("ADDED", split(50, 50), "4")]),
    ])  # fmt: skip
    # Neither the bad one nor the deletion reached the router: only usable configurations do.
    assert [c.weights for c in found] == [[("a", 90), ("b", 10)], [("a", 50), ("b", 50)]]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "not applied, the configuration in force stays: router.json: not JSON" in errors[0]
    assert any("was deleted; the configuration in force stays" in r.getMessage()
               for r in caplog.records)  # fmt: skip
