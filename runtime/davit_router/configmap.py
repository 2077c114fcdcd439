"""The router's configuration from its ConfigMap, watched on the API server.

The operator renders the configuration into the ConfigMap `<model>-router`, key `router.json`,
at every rollout step. A ConfigMap mounted as a volume reaches a running pod only when the
kubelet next syncs it (up to about a minute and a half with the defaults), while the operator
moves on at once (it shrinks stable after a promotion): so the router reads the ConfigMap
through the API instead, and a change is in force within a watch event's delay.

    config_in          a ConfigMap → the RouterConfig in it, or ConfigError saying why not
    ConfigMapWatcher   a `kubeapi.ListWatch` of that one ConfigMap (a field selector on its
                       name, so the router's Role may name it in `resourceNames`)

A ConfigMap that cannot be used (no `router.json`, not JSON, refused by config.parse) is
logged and the configuration in force stays; so does a deleted one (the operator deletes it
only with the router itself).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from davit_router.config import ConfigError, RouterConfig, parse
from davit_router.kubeapi import KubeClient, ListWatch

logger = logging.getLogger(__name__)

CONFIG_KEY = "router.json"  # the key the operator writes (a contract test holds both to it)


def config_in(configmap: Mapping[str, Any]) -> RouterConfig:
    """The configuration in `configmap`'s `router.json`, or ConfigError naming the key or the
    field that is wrong."""
    data = configmap.get("data") or {}
    text = data.get(CONFIG_KEY) if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise ConfigError(f"no {CONFIG_KEY} key in its data")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{CONFIG_KEY}: not JSON: {error}") from error
    return parse(document)


class ConfigMapWatcher:
    """The configuration in ConfigMap `name` of `namespace`, kept current: `on_config` is given
    each usable configuration found (the first list's, then each change's; the same one again
    after a relist), never an unusable one. `run` never ends but by cancellation."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        on_config: Callable[[RouterConfig], None],
        *,
        watch_seconds: int = 300,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.where = f"ConfigMap {namespace}/{name}"
        self._on_config = on_config
        self._missing_logged = False
        selector = quote(f"metadata.name={name}", safe="")
        self._watch = ListWatch(
            client,
            f"/api/v1/namespaces/{namespace}/configmaps?fieldSelector={selector}",
            self.where,
            self._listed,
            self._changed,
            watch_seconds=watch_seconds,
            sleep=sleep,
        )

    async def run(self) -> None:
        await self._watch.run()

    def _listed(self, items: list[dict[str, Any]]) -> None:
        if items:
            self._take(items[0])
        elif not self._missing_logged:  # once: a relist of a still absent one says nothing new
            logger.warning("%s does not exist yet; waiting for it", self.where)
            self._missing_logged = True

    def _changed(self, kind: str, configmap: dict[str, Any]) -> None:
        if kind == "DELETED":
            logger.warning("%s was deleted; the configuration in force stays", self.where)
            self._missing_logged = True
        else:
            self._take(configmap)

    def _take(self, configmap: dict[str, Any]) -> None:
        self._missing_logged = False
        try:
            config = config_in(configmap)
        except ConfigError as error:
            logger.error("%s not applied, the configuration in force stays: %s", self.where, error)
            return
        self._on_config(config)
