"""What a person sees in the Temporal Web UI of `make run`: a real Chromium on the UI of the stack
`python -m devtools.devstack` starts, whose payloads are encrypted and decoded in the browser
through our codec server. Each page must show decoded text (inputs, reports, summaries, current
details), never the "Codec Server could not connect" banner, and every `/decode` the browser
posts must be answered 200. A screenshot of each page is kept in test-artifacts/web-ui/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Locator, Page, Request, Response, expect, sync_playwright

from tests.dev_stack import READY_TIMEOUT_S, ROOT, Stack, free_ports, stack_environment

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTEFACTS = ROOT / "test-artifacts" / "web-ui"
WAIT_MS = 30_000  # a page of the UI on a busy 2-core machine
BANNER = "Codec Server could not connect"
TEMPORAL = Path(sys.executable).parent / "temporal"
# A connection the local mirror refuses: it accepts the keys of the connections it started with.
REFUSED = "hooli"


@dataclass
class Running:
    """The stack, and the workflows the pages show."""

    ui: str
    sync_id: str  # a sync-products job of the schedule, completed
    failed_id: str  # an ad hoc sync whose key the source refused


def workflow_ids(address: str, query: str) -> list[str]:
    """`temporal workflow list` (newest first), as a person would look them up."""
    run = subprocess.run(
        [str(TEMPORAL), "workflow", "list", "--address", address, "-q", query, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return [wf["execution"]["workflowId"] for wf in json.loads(run.stdout or "[]")]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium", pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """`make run` on free ports, a sync of the schedule completed and one refused."""
    ports = free_ports(5)
    env = stack_environment(
        tmp_path_factory.mktemp("web-ui") / "data", SYNC_PRODUCTS_SCHEDULE="*/10 * * * * *"
    )
    stack = Stack(env, ports)
    try:
        stack.read_until("ready;")
        address = f"127.0.0.1:{ports[0]}"
        cli = {**env, "TEMPORAL_ADDRESS": address}
        starter = [sys.executable, "starter.py"]
        added = subprocess.run(
            [*starter, "connections", "add", "--id", REFUSED, "--name", "Hooli (revoked key)"]
            + ["--api-key", "-"],
            input="revoked-key",
            cwd=ROOT,
            env=cli,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        refused = subprocess.run(
            [*starter, "run", "sync-products", "--connection", REFUSED],
            cwd=ROOT,
            env=cli,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode != 0, refused  # the report says why; the page must too
        done = "WorkflowType = 'SyncProductsWorkflow' AND ExecutionStatus = 'Completed'"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # the schedule's first fire; the list (visibility) follows a moment later
            ids = workflow_ids(address, done)
            synced = [i for i in ids if i.endswith("/acme")]
            adhoc = [i for i in ids if i.startswith("sync-products/adhoc-")]
            if synced and adhoc:
                break
            assert time.monotonic() < deadline, f"syncs completed: {ids}\n{stack.output()}"
            time.sleep(0.5)
        yield Running(ui=f"http://localhost:{ports[1]}", sync_id=synced[0], failed_id=adhoc[0])
    finally:
        stack.stop()


@dataclass
class Ui:
    """One browser tab on the UI, with every answer to its `/decode` requests recorded."""

    page: Page
    base: str
    capsys: pytest.CaptureFixture[str]
    decodes: list[str] = field(default_factory=list)  # "<status> <url>", or why it failed

    def __post_init__(self) -> None:
        self.page.on("response", self._answered)
        self.page.on("requestfailed", self._failed)

    def _answered(self, response: Response) -> None:
        if response.request.method == "POST" and "/decode" in response.url:
            self.decodes.append(f"{response.status} {response.url}")

    def _failed(self, request: Request) -> None:
        if "/decode" in request.url:
            self.decodes.append(f"failed ({request.failure}) {request.method} {request.url}")

    def open_workflow(self, workflow_id: str) -> None:
        """A workflow's page; its input is decoded first, so a codec server that does not
        answer the UI fails here, with the status it gave."""
        with self.page.expect_response(
            lambda r: r.request.method == "POST" and "/decode" in r.url, timeout=WAIT_MS
        ) as first:
            self.page.goto(f"{self.base}/namespaces/default/workflows/{quote(workflow_id, '')}")
        answer = first.value
        assert answer.status == 200, f"POST {answer.url} answered {answer.status}: {answer.text()}"

    def shows(self, *texts: str) -> None:
        for text in texts:
            expect(self.page.locator("main")).to_contain_text(text, timeout=WAIT_MS)

    @contextmanager
    def screenshot(self, name: str, *, decodes: bool = True) -> Iterator[None]:
        """What the page shows once the checks inside pass (or fail), kept for a person; then
        the page is checked for the banner and its `/decode` answers (`decodes`: it made some;
        the list shows no payloads)."""
        try:
            yield
        finally:
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            (ARTEFACTS.parent / ".gitignore").write_text("*\n")  # artefacts, never committed
            path = ARTEFACTS / f"{name}.png"
            self.page.screenshot(path=path)
            with self.capsys.disabled():  # in the test output, passed or not
                print(f"\n  screenshot: {path}", end="")
        expect(self.page.get_by_text(BANNER)).to_have_count(0)
        assert all(d.startswith("200 ") for d in self.decodes), self.decodes
        assert self.decodes or not decodes, "the page posted nothing to the codec server"


@pytest.fixture
def ui(browser: Browser, stack: Running, capsys: pytest.CaptureFixture[str]) -> Iterator[Ui]:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    yield Ui(page, stack.ui, capsys)
    page.close()


def test_the_workflow_list_shows_the_loops(ui: Ui) -> None:
    with (ROOT / "schedules.toml").open("rb") as f:
        names = [s["name"] for s in tomllib.load(f)["schedule"]]
    ui.page.goto(f"{ui.base}/namespaces/default/workflows")
    with ui.screenshot("workflows", decodes=False):
        ui.shows(*(f"schedule/{name}" for name in names))


def test_a_loops_page_shows_its_input_summary_and_current_details(ui: Ui) -> None:
    ui.open_workflow("schedule/sync-products")
    with ui.screenshot("loop-input"):
        ui.shows('"name": "sync-products"', '"cron": "*/10 * * * * *"')
        # the timeline: the timer's summary, and each job's (the children it started)
        ui.shows("fire of sync-products", "of sync-products, fire 20")
    ui.page.get_by_role("tab", name="User Metadata").click()
    summary = ui.page.frame_locator('iframe[id^="user-metadata-summary"]').locator("body")
    details = ui.page.frame_locator('iframe[id^="user-metadata-current-details"]').locator("body")
    with ui.screenshot("loop-user-metadata"):
        checks: list[tuple[Locator, str | re.Pattern[str]]] = [
            (summary, "schedule sync-products: sync-products on cron */10 * * * * * [UTC]"),
            (details, "sync-products runs sync-products on cron */10 * * * * * [UTC]"),
            (details, re.compile(r"next fire: \d{4}-\d\d-\d\dT\d\d:\d\d:\d0\+00:00")),
            (
                details,
                re.compile(
                    r"fires: [1-9]\d* · triggered: 0 · failed jobs: \d+ · "
                    r"failed fires: \d+ · missed: \d+"
                ),
            ),
        ]
        for frame, text in checks:
            expect(frame).to_contain_text(text, timeout=WAIT_MS)


def test_a_sync_jobs_page_shows_its_input_report_and_activity_summaries(
    ui: Ui, stack: Running
) -> None:
    ui.open_workflow(stack.sync_id)
    with ui.screenshot("sync-job"):
        ui.shows('"connection_id": "acme"', '"status": "completed"', '"fetched": 194')
        ui.shows("count the source's products", "products 1-15", "products 181-194")


def test_a_failed_jobs_page_shows_why(ui: Ui, stack: Running) -> None:
    ui.open_workflow(stack.failed_id)
    with ui.screenshot("failed-job"):
        ui.shows(f'"connection_id": "{REFUSED}"', '"status": "failed"')
        ui.shows("HTTP 401: the source refused the API key", "count the source's products")
