"""The web page (ltx/serve/static) driven in headless Chromium (Debian's chromium + chromedriver, via selenium) on a
real server: type a prompt, set the options, submit; the progress follows the job and the video plays.

`python -m tests.serve.test_web_page docs/serve_page.png` runs the same flow on a fresh server and saves a
screenshot of the page (the README's picture); the tests never write it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.serve.conftest import serve_settings  # noqa: E402

# The player has a blob: source that the browser decoded (readyState >= HAVE_CURRENT_DATA) and a frame size.
VIDEO_LOADED = """const v = document.getElementById('player');
return !v.hidden && v.src.startsWith('blob:') && v.readyState >= 2 && v.videoWidth > 0;"""


def chromium(width: int = 1000, height: int = 1200) -> tuple[webdriver.Chrome, str]:
    """A headless Chromium with a fresh profile folder (returned, to be removed after quit())."""
    profile = tempfile.mkdtemp(prefix="ltx_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options), profile


@pytest.fixture(scope="module")
def browser():
    driver, profile = chromium()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def fill(driver, element_id: str, value: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def generate_on_page(driver, url: str, prompt: str, frames: int = 9, steps: int = 4, timeout: float = 180) -> None:
    """Open the page, set a small request through the form, submit, wait until the video plays."""
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: "ltx-demo" in d.find_element(By.ID, "model-line").text)
    driver.find_element(By.CSS_SELECTOR, "details summary").click()
    assert Select(driver.find_element(By.ID, "size")).first_selected_option.get_attribute("value") == "64x64"
    fill(driver, "num_frames", str(frames))
    fill(driver, "steps", str(steps))
    fill(driver, "seed", "7")
    fill(driver, "prompt", prompt)
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(VIDEO_LOADED))


def test_page_submits_a_prompt_and_plays_the_video(browser, start_server, tmp_path):
    server = start_server(serve_settings(tmp_path))
    generate_on_page(browser, server.url, "a red circle moves to the left")

    assert browser.find_element(By.ID, "job-state").text == "complete"
    progress = browser.find_element(By.ID, "job-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max")
    assert browser.find_element(By.ID, "form-error").text == ""
    # The form's values reached the server: one job, the request as typed.
    jobs = server.client.get("/v1/jobs").json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["state"] == "complete"
    request = jobs[0]["request"]
    assert (request["prompt"], request["num_frames"], request["steps"], request["seed"]) == \
        ("a red circle moves to the left", 9, 4, 7)
    assert (request["height"], request["width"]) == (64, 64)
    # The page followed the job over server-sent events: no polling GET of the job was needed.
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    job_url = f"/v1/jobs/{jobs[0]['id']}"
    assert any(u.endswith(job_url + "/events") for u in fetched), fetched
    assert not any(u.endswith(job_url) for u in fetched), fetched
    # The player shows the served mp4: its size is the request's.
    size = browser.execute_script("const v = document.getElementById('player'); return [v.videoWidth, v.videoHeight]")
    assert size == [64, 64]
    # The gallery lists the job, complete, with its contact sheet.
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const img = document.querySelector('#gallery img'); return img && img.complete && img.naturalWidth > 0"))
    assert "complete" in browser.find_element(By.ID, "gallery").text


def test_page_cancels_a_running_job(browser, start_server, tmp_path):
    server = start_server(serve_settings(tmp_path))
    browser.get(server.url)
    WebDriverWait(browser, 60).until(lambda d: "ltx-demo" in d.find_element(By.ID, "model-line").text)
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    fill(browser, "steps", "80")
    fill(browser, "prompt", "a yellow circle moves down")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 60).until(lambda d: "step" in d.find_element(By.ID, "job-detail").text)
    browser.find_element(By.ID, "cancel").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "job-state").text == "cancelled")
    assert not browser.find_element(By.ID, "cancel").is_displayed()
    assert not browser.find_element(By.ID, "player").is_displayed()
    (job,) = server.client.get("/v1/jobs").json()["jobs"]
    assert job["state"] == "cancelled" and job["step"] < 80


def test_page_with_api_keys_asks_for_one_and_shows_only_its_jobs(browser, start_server, tmp_path):
    keys = {"alice": "alice-secret-key", "bob": "bob-secret-key"}
    server = start_server(serve_settings(tmp_path, api_keys=keys), headers={"Authorization": f"Bearer {keys['bob']}"})
    bobs = server.submit(prompt="a green square moves up")
    browser.get(server.url)
    browser.execute_script("localStorage.clear()")
    browser.get(server.url)
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "key-field").is_displayed())
    assert "API key" in browser.find_element(By.ID, "model-line").text
    fill(browser, "api-key", keys["alice"])
    browser.find_element(By.ID, "prompt").click()  # leaving the field stores the key and reloads
    WebDriverWait(browser, 30).until(lambda d: "ltx-demo" in d.find_element(By.ID, "model-line").text)
    assert browser.execute_script("return localStorage.getItem('ltx-serve-key')") == keys["alice"]
    WebDriverWait(browser, 30).until(lambda d: "No jobs yet." in d.find_element(By.ID, "gallery").text)
    assert bobs["id"] not in browser.page_source
    browser.execute_script("localStorage.clear()")


def main(path: str) -> None:
    """Drive the page on a fresh demo server (a few jobs for the gallery) and save a screenshot to `path`."""
    import torch

    from ltx.serve.server import start_in_thread

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="ltx_page_"))
    running = start_in_thread(serve_settings(folder))
    driver, profile = chromium(900, 1250)
    try:
        for prompt in ("a blue triangle moves to the right", "a green square moves up",
                       "a red circle moves to the left"):
            generate_on_page(driver, running.url, prompt, frames=17, steps=20)
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)"))
        driver.execute_script("const v = document.getElementById('player'); v.pause(); v.controls = false; "
                              "v.currentTime = 0.5")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(900, height + 140)  # the whole page in one picture (window chrome included)
        driver.save_screenshot(path)
        print(f"wrote {path}")
    finally:
        driver.quit()
        running.stop()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/serve_page.png")
