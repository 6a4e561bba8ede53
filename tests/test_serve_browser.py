"""faultline serve in a real browser: Debian's chromium and chromium-driver,
driven by selenium, headless.  Skipped, saying what is missing, where they
are absent (apt-get install chromium chromium-driver; pip install selenium)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Iterator

import pytest
from aiohttp import web

from checkers.models import get_model
from checkers.timeline import write_html
from harness.serve import make_app
from test_serve import CSTAMP, PLOTS, WITNESS, write_campaign, write_run
from test_timeline import invalid_result

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[test]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason=f"{'chromium' if CHROMIUM is None else 'chromedriver'} not found on PATH "
    "(Debian: apt-get install chromium chromium-driver)")

NAME, STAMP = "register-partition-leader-no-noop-read", "20261207T144343"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Two runs, the invalid one with a real timeline page of a witness, and a
    campaign of four runs, one off."""
    root = tmp_path / "results"
    write_run(root, "register-partition-leader", "20261207T144216", verdict="valid")
    d = write_run(root, NAME, STAMP, verdict="invalid", bugs=("no-noop-read",))
    write_html(d / "timeline.html", [invalid_result()], title=NAME,
               describe=get_model("register").describe_op)
    write_campaign(root)
    return root


@pytest.fixture
def url(results: Path) -> Iterator[str]:
    """The app on a free loopback port, served from a thread of its own."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(results))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, name="serve", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,1024"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, path: Path) -> None:
    driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_index_run_and_timeline_in_a_browser(browser: webdriver.Chrome, url: str,
                                             tmp_path: Path) -> None:
    wait = WebDriverWait(browser, 20)
    browser.get(url)
    assert browser.title == "faultline results"
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert [r.get_attribute("class") for r in rows] == ["v-invalid", "v-valid"]
    # coloured by verdict: the invalid row's bar is red, the valid one's green
    bars = [r.find_element(By.TAG_NAME, "td").value_of_css_property("border-left-color")
            for r in rows]
    assert bars == ["rgba(217, 48, 37, 1)", "rgba(24, 128, 56, 1)"]
    screenshot(browser, tmp_path / "index.png")

    browser.find_element(By.LINK_TEXT, NAME).click()
    wait.until(EC.url_contains(f"/run/{NAME}/{STAMP}/"))
    assert browser.find_element(By.ID, "verdict").text == "invalid"
    assert "linearizability: INVALID" in browser.find_element(By.ID, "summary").text
    assert WITNESS in browser.find_element(By.CLASS_NAME, "witness").text
    images = browser.find_elements(By.CSS_SELECTOR, ".plots img")
    assert len(images) == len(PLOTS)
    assert browser.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert "isolate n3" in browser.find_element(By.ID, "schedule").text
    screenshot(browser, tmp_path / "run.png")

    browser.find_element(By.ID, "timeline").click()
    wait.until(EC.url_contains("/file/timeline.html"))
    witness = invalid_result().keys[0].witness
    assert witness.explanation in browser.find_element(By.TAG_NAME, "body").text
    # its script runs (in the sandbox the server puts it in): a bar's tip shows on hover
    bar = browser.find_element(By.CSS_SELECTOR, "[data-tip]")
    ActionChains(browser).move_to_element(bar).perform()
    wait.until(lambda d: d.find_element(By.ID, "tip").is_displayed())
    screenshot(browser, tmp_path / "timeline.png")

    browser.back()
    wait.until(EC.url_contains(f"/run/{NAME}/{STAMP}/"))
    browser.find_element(By.LINK_TEXT, "n1.log").click()
    wait.until(EC.url_contains("/file/logs/n1.log"))
    assert browser.find_element(By.TAG_NAME, "body").text == "n1 became leader of term 2"

    browser.get(url)  # the campaign, from the index, and a run of it
    browser.find_element(By.CSS_SELECTOR, "#campaigns").find_element(By.LINK_TEXT, "smoke").click()
    wait.until(EC.url_contains(f"/campaign/smoke/{CSTAMP}/"))
    assert browser.find_element(By.ID, "state").text == "1 off"
    cells = browser.find_elements(By.CSS_SELECTOR, "#cells tbody tr")
    assert [r.get_attribute("class") for r in cells] == ["v-valid", "v-invalid"]
    assert browser.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot(browser, tmp_path / "campaign.png")
    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr:last-child a").click()
    wait.until(EC.url_contains("/run/buggy/seed-2/"))
    assert browser.find_element(By.ID, "verdict").text == "valid"  # the bug it missed
    browser.find_element(By.LINK_TEXT, f"smoke / {CSTAMP}").click()
    wait.until(EC.url_matches(rf".*/campaign/smoke/{CSTAMP}/$"))
