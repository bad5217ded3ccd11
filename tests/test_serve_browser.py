"""The service's web page in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium): enrol two people from photo files, identify a third
photo, see the right name, its score and the decision on the page; delete one person."""

import os

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests import serve_helpers as sh  # noqa: E402
from tests.serve_process import Server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install -y chromium chromium-driver)"),
]


def write_photos(folder, identity, indices):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in indices:
        path = os.path.join(folder, f"{identity}_{i}.png")
        with open(path, "wb") as f:
            f.write(sh.png_bytes(sh.face_pixels(identity, i, size=32)))
        paths.append(path)
    return paths


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_enrol_two_people_and_identify_a_third_photo(tmp_path, browser):
    model_dir, _ = sh.build_model(tmp_path / "model")
    photos = str(tmp_path / "photos")
    alice = write_photos(photos, 1, range(3))
    bob = write_photos(photos, 2, range(3))
    (probe,) = write_photos(photos, 2, [9])
    wait = WebDriverWait(browser, 30)
    with Server(model_dir, str(tmp_path / "gallery.db"), "--token=pagetoken") as server:
        browser.get(server.url + "/")
        wait.until(expected_conditions.text_to_be_present_in_element(
            (By.ID, "status"), "Model ready"))
        browser.find_element(By.ID, "token").send_keys("pagetoken")
        for name, files in (("Alice", alice), ("Bob", bob)):
            field = browser.find_element(By.ID, "enrol-name")
            field.clear()
            field.send_keys(name)
            browser.find_element(By.ID, "enrol-files").send_keys("\n".join(files))
            browser.find_element(By.ID, "enrol-button").click()
            wait.until(lambda d, n=name: f" of {n} " in d.find_element(By.ID,
                                                                       "enrol-result").text)
            assert browser.find_element(By.ID, "enrol-result").text == (
                f"Enrolled 3 image(s) of {name} (3 in all)")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#people tr")) == 2)
        people = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#people tr")]
        assert people[0].startswith("Alice 3") and people[1].startswith("Bob 3")

        browser.find_element(By.ID, "search-file").send_keys(probe)
        browser.find_element(By.ID, "search-button").click()
        wait.until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "#decision.done")))
        assert browser.find_element(By.ID, "decision").text == "Bob"
        rows = [r.find_elements(By.TAG_NAME, "td")
                for r in browser.find_elements(By.CSS_SELECTOR, "#matches tr")]
        assert [r[1].text for r in rows] == ["Bob", "Alice"]
        scores = [float(r[2].text) for r in rows]
        assert scores[0] > scores[1] and -1.0 <= scores[1] <= scores[0] <= 1.0

        # delete Alice from the list; the gallery API agrees
        browser.find_elements(By.CSS_SELECTOR, "#people button.delete")[0].click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#people tr")) == 1)
        import httpx  # noqa: PLC0415

        listed = httpx.get(server.url + "/v1/gallery", timeout=10).json()
        assert listed == {"identities": [{"identity": "Bob", "images": 3}]}
