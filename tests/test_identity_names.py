"""A Ductape job's loop name: one identity, one loop; one loop, one identity (pure, instant)."""

from __future__ import annotations

import re
from typing import Any

from client.ductape import DuctapeJob
from scheduling.spec import NAME_PATTERN

REPEAT = {"repeat": {"every": "1h"}}


def job(**fields: Any) -> DuctapeJob:
    return DuctapeJob.model_validate({"env": "prd", "event": "echo", **REPEAT, **fields})


def test_tags_that_slug_alike_get_different_loops() -> None:
    shop, other = job(product_tag="Shop!"), job(product_tag="shop?")
    assert shop.name != other.name
    assert shop.name.startswith("shop-prd-echo-") and other.name.startswith("shop-prd-echo-")


def test_a_long_tag_no_longer_cuts_env_and_event_away() -> None:
    tag = "x" * 100
    prd_echo = job(product_tag=tag, env="prd", event="echo")
    dev_sync = job(product_tag=tag, env="dev", event="sync-products")
    assert prd_echo.name != dev_sync.name
    # the readable part keeps env and event: the long tag is what gets shortened
    assert "-prd-echo-" in prd_echo.name and "-dev-sync-products-" in dev_sync.name
    for name in (prd_echo.name, dev_sync.name):
        assert len(name) <= 63 and re.match(NAME_PATTERN, name), name


def test_fields_cannot_run_into_each_other() -> None:
    """`a-b` + `c` and `a` + `b-c` read the same once joined; their identities differ."""
    assert job(product_tag="a-b", env="c").name != job(product_tag="a", env="b-c").name
    assert job(product_tag="a", app="b").name != job(product_tag="a-b").name


def test_the_same_identity_always_names_the_same_loop() -> None:
    first = job(product_tag="Shop!", app="Mailer", input={"who": "ada"})
    again = job(product_tag="Shop!", app="Mailer", input={"who": "grace"}, retries=3)
    assert first.name == again.name  # input and options are not the identity
    identity = {"product_tag": "Shop!", "env": "prd", "app": "Mailer", "event": "echo"}
    assert first.identity == identity


def test_a_tag_with_nothing_readable_still_makes_a_valid_name() -> None:
    name = job(product_tag="!!!", env="???", event="echo").name
    assert re.match(NAME_PATTERN, name) and name.startswith("echo-"), name
