"""The browser UI in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium against the running service. A person uploads a photo, paints a mask,
clicks two drags, undoes one, runs, gets the candidates side by side, downloads one (the
API's answer for the same inputs, byte for byte), and continues from a result. Screenshots
go to $TEST_ARTIFACTS (default .cache/test-artifacts/)."""
from __future__ import annotations

import base64
import os
import time

import pytest

from serve.client import edit
from tests.conftest import REPO

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = os.environ.get("TEST_ARTIFACTS", str(REPO / ".cache" / "test-artifacts"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "Debian's chromium and chromium-driver are needed (.ci/run installs them)"
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No network beyond loopback here: background services would only fail to connect.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver.save_screenshot(os.path.join(ARTIFACTS, f"ui-{name}.png"))


def wait_for(condition, timeout: float = 120, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.ray
def test_upload_paint_drag_undo_run_download_and_continue(browser, service, inputs):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    find = lambda css: browser.find_element(By.CSS_SELECTOR, css)  # noqa: E731
    browser.get(service)
    find("#file").send_keys(str(inputs["image"]))
    wait_for(lambda: find("#stage").is_displayed(), what="the image on the stage")
    overlay = find("#overlay")
    assert (overlay.size["width"], overlay.size["height"]) == (300, 100)   # aspect kept

    def at(x, y):   # image pixels -> offsets from the overlay's centre (Selenium's origin)
        return x - 150, y - 50

    find("input[name=tool][value=paint]").click()
    stroke = ActionChains(browser).move_to_element_with_offset(overlay, *at(40, 50))
    stroke.click_and_hold()
    for x in range(40, 221, 10):
        stroke.move_to_element_with_offset(overlay, *at(x, 50))
    stroke.release().perform()
    find("input[name=tool][value=points]").click()
    for x, y in [(60, 50), (90, 55), (150, 45), (180, 50)]:   # two drags
        ActionChains(browser).move_to_element_with_offset(overlay, *at(x, y)).click().perform()
    assert find("#points-count").text == "2 drags"
    find("#undo").click()                                      # the second drag's target
    assert find("#points-count").text == "1 drag (click its target)"
    find("#candidates").clear()
    find("#candidates").send_keys("2")
    find("#steps").send_keys("2")
    find("#seed").clear()
    find("#seed").send_keys("5")
    shot(browser, "1-before-run")
    find("#run").click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".candidate img")) == 2,
             what="two candidates")
    assert "done in" in find("#status").text, find("#status").text
    shot(browser, "2-candidates")

    # the downloaded candidate is the API's answer to what the page sent
    mask_png = base64.b64decode(browser.execute_script(
        "return mask.toDataURL('image/png').split(',')[1];"))
    points = browser.execute_script("return state.points;")
    assert len(points) == 3 and abs(points[0][0] - 60) <= 1 and abs(points[1][0] - 90) <= 1
    answer = edit(service, inputs["image"], [points[0]], [points[1]], mask=mask_png,
                  candidates=2, steps=2, seed=5, keep_unmasked=False)
    browser.find_elements(By.CSS_SELECTOR, ".candidate a.download")[1].click()
    saved = wait_for(lambda: [f for f in os.listdir(browser.downloads)
                              if f == "edited_1.png"], what="the download")
    with open(os.path.join(browser.downloads, saved[0]), "rb") as f:
        assert f.read() == answer["images"][1]

    # continue from a result: it becomes the source, at its own size, with no drags
    browser.find_elements(By.CSS_SELECTOR, ".candidate button.continue")[0].click()
    wait_for(lambda: find("#overlay").size["width"] == answer["size"][0],
             what="the candidate as the new source")
    assert find("#overlay").size["height"] == answer["size"][1]
    assert find("#points-count").text == "0 drags"
    ActionChains(browser).move_to_element_with_offset(find("#overlay"), -20, 0).click().perform()
    ActionChains(browser).move_to_element_with_offset(find("#overlay"), 10, 5).click().perform()
    find("#run").click()
    wait_for(lambda: "done in" in find("#status").text, what="the second edit")
    shot(browser, "3-continued")
