"""The pages in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (never a downloaded driver), the app served by uvicorn on the loopback, and the
steps every browser test takes (fill a form, click and land on a page, a screenshot into
test-artifacts/web/, the CSP refusals the browser logged)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.tools import require_tool

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTEFACTS = Path(os.environ.get("BHXH_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "web"


@contextmanager
def serving(app: Any, port: int) -> Iterator[None]:
    """``app`` served by uvicorn in a thread on 127.0.0.1:``port`` while the block runs."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[Any]:
    require_tool(CHROMIUM, "chromium")
    require_tool(CHROMEDRIVER, "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1000,1100",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def shot(driver: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


def fill(driver: Any, **fields: str) -> None:
    from selenium.webdriver.common.by import By

    for name, value in fields.items():
        box = driver.find_element(By.ID, name)
        box.clear()
        box.send_keys(value)


def _replaced(element: Any) -> bool:
    """True once ``element``'s document has gone. Mid-navigation Chromium sometimes reports that
    as an inspector error ("Node with given id does not belong to the document") instead of a
    stale element reference; both say the same thing."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def click(driver: Any, element_id: str, lands_on: str) -> None:
    """Click, then wait until the next page has replaced this one and its URL is ``lands_on``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    wait = WebDriverWait(driver, 15)
    wait.until(lambda _d: _replaced(old))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    path = driver.current_url.split("?", 1)[0]
    assert path.endswith(lands_on), f"expected {lands_on}, got {driver.current_url}"


def csp_refusals(driver: Any) -> list[Any]:
    """What the page CSP refused so far: a violation shows up in the browser's console log."""
    return [e for e in driver.get_log("browser") if "Content Security Policy" in e.get("message", "")]
