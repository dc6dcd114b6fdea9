"""``vqfr serve``: the request handlers directly, the CLI, and the page in a real (headless Chromium) browser."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import ALIGNED_FACES
from PIL import Image

from vqfr.cli import main
from vqfr.errors import VQFRError
from vqfr.web.handlers import RestorerPool, RestoreService, model_choices

ROOT = Path(__file__).resolve().parents[1]
ALIGNED = ALIGNED_FACES / "Adele_crop.png"


@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory, tiny_checkpoint) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_v2.pth", "VQFRv2")


@pytest.fixture(scope="module")
def pool() -> RestorerPool:
    return RestorerPool(device="cpu")


@pytest.fixture
def service(pool, tiny_v2, tmp_path) -> RestoreService:
    return RestoreService(pool, tmp_path / "work", model_choices(str(tiny_v2)))


def _png(path: Path, w: int = 96, h: int = 80) -> Path:
    """A small deterministic RGB PNG (aligned mode takes any image as a face crop)."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _not_an_image(path: Path) -> Path:
    path.write_text("hello, I am a text file wearing a .png name\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- handlers, no browser
def test_model_choices_put_the_given_model_first_with_its_weights(tmp_path):
    ckpt = str(tmp_path / "mine.pth")
    assert list(model_choices(ckpt)) == [ckpt, "auto", "VQFR_v2", "VQFR_v1", "VQFR_lite"]
    assert model_choices(ckpt)[ckpt] == (ckpt, None)
    choices = model_choices("v1", tmp_path / "w.pth")  # aliases resolve to the zoo name
    assert list(choices) == ["VQFR_v1", "auto", "VQFR_v2", "VQFR_lite"]
    assert choices["VQFR_v1"] == ("VQFR_v1", str(tmp_path / "w.pth"))
    assert list(model_choices()) == ["auto", "VQFR_v2", "VQFR_v1", "VQFR_lite"]


def test_pool_loads_a_model_once_and_keeps_one():
    made = []
    pool = RestorerPool(factory=lambda model, weights: made.append((model, weights)) or object())
    a = pool.get("a")
    assert pool.get("a") is a and made == [("a", None)]
    b = pool.get("b", "w.pth")
    assert b is not a and pool.loads == 2
    pool.get("a")  # the only one kept was "b": "a" is loaded again
    assert made == [("a", None), ("b", "w.pth"), ("a", None)]


def test_restore_writes_pngs_in_the_work_folder_only(service, tmp_path):
    inp = _png(tmp_path / "face.png")
    before = inp.read_bytes()
    batch = service.restore([str(inp)], service.default_model, 0.3, 2.0, True)
    assert batch.failures == [] and len(batch.photos) == 1
    photo = batch.photos[0]
    assert photo.name == "face.png" and photo.size == (192, 160)
    with Image.open(photo.after) as im:
        assert im.format == "PNG" and im.size == (192, 160)
    with Image.open(photo.before) as im:
        assert im.size == (96, 80)
    assert len(photo.faces) == 1 and Image.open(photo.faces[0][0]).size == (512, 512)
    work = tmp_path / "work"
    for path in (photo.before, photo.after, photo.faces[0][0]):
        assert work in Path(path).parents
    assert inp.read_bytes() == before  # the upload is never modified
    assert "1 photo(s) restored, 1 face(s)" in batch.summary()


def test_model_is_loaded_once_across_requests(service, tmp_path):
    inp = _png(tmp_path / "a.png")
    service.restore([str(inp)], service.default_model, 0.5, 1.0, True)
    loads = service.pool.loads
    service.restore([str(inp)], service.default_model, 0.5, 1.0, True)
    assert service.pool.loads == loads


def test_bad_file_is_one_line_naming_the_upload_and_others_go_on(service, tmp_path):
    (tmp_path / "upload dir").mkdir()
    bad = _not_an_image(tmp_path / "upload dir" / "notes.png")
    with pytest.raises(VQFRError) as err:
        service.restore([str(bad)], service.default_model, 0.5, 2.0, True)
    assert str(err.value) == "notes.png: not an image, or a format that cannot be read"  # no temporary path
    good = _png(tmp_path / "good.png")
    batch = service.restore([str(bad), str(good)], service.default_model, 0.5, 1.0, True)
    assert [p.name for p in batch.photos] == ["good.png"] and batch.failures == [str(err.value)]
    assert "failed: notes\\.png" in batch.summary()


def test_requests_are_checked(service, tmp_path, tiny_v2):
    with pytest.raises(VQFRError, match="choose one or more photos"):
        service.restore(None, service.default_model, 0.5, 2.0, True)
    inp = _png(tmp_path / "x.png")
    with pytest.raises(VQFRError, match="unknown model '/etc/passwd'"):  # the page offers a list, nothing else
        service.restore([str(inp)], "/etc/passwd", 0.5, 2.0, True)
    with pytest.raises(VQFRError, match="fidelity must be in"):
        service.restore([str(inp)], service.default_model, 1.5, 2.0, True)
    with pytest.raises(VQFRError, match="upscale must be in"):
        service.restore([str(inp)], service.default_model, 0.5, 9.0, True)


def test_upload_size_and_pixel_limits(pool, tiny_v2, tmp_path):
    inp = _png(tmp_path / "big.png", 300, 200)
    small = RestoreService(pool, tmp_path / "w1", model_choices(str(tiny_v2)), max_upload_mb=inp.stat().st_size / 2**21)
    with pytest.raises(VQFRError, match=r"^big\.png: 0\.\d MB, above the upload limit of"):
        small.restore([str(inp)], small.default_model, 0.5, 1.0, True)
    tight = RestoreService(RestorerPool(device="cpu", max_pixels=20_000), tmp_path / "w2", model_choices(str(tiny_v2)))
    with pytest.raises(VQFRError, match=r"^big\.png is 300x200 = 0\.1 megapixels, above the limit"):
        tight.restore([str(inp)], tight.default_model, 0.5, 1.0, True)
    with pytest.raises(VQFRError, match="upload limit must be a positive"):
        RestoreService(pool, tmp_path / "w3", model_choices(str(tiny_v2)), max_upload_mb=0)


def test_old_request_folders_are_pruned(service, tmp_path):
    old = service.workdir / "old-request"
    old.mkdir(parents=True)
    past = time.time() - service.max_age_s - 10
    os.utime(old, (past, past))
    service.restore([str(_png(tmp_path / "p.png"))], service.default_model, 0.5, 1.0, True)
    assert not old.exists() and len(list(service.workdir.iterdir())) == 1


def test_summary_shows_file_names_literally(service, tmp_path):
    inp = _png(tmp_path / "<b>*x*[1].png")
    text = service.restore([str(inp)], service.default_model, 0.5, 1.0, True).summary()
    assert "<b>" not in text and "&lt;b&gt;\\*x\\*\\[1\\]\\.png" in text


def test_page_errors_are_one_readable_line():
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'vqfr[web]')")
    from vqfr.web.app import _call

    def fails(message):
        raise VQFRError(message)

    with pytest.raises(gr.Error) as err:
        _call(fails, "a<b>.png: not an image\nsecond line")
    assert err.value.message == "a&lt;b&gt;.png: not an image\\nsecond line"

    def bug():
        raise ZeroDivisionError("division by zero")

    with pytest.raises(gr.Error) as err:
        _call(bug)
    assert "internal error" in err.value.message and "division" not in err.value.message


# ---------------------------------------------------------------- CLI
def test_serve_help_imports_neither_torch_nor_gradio():
    code = (
        "import sys\nfrom vqfr.cli import main\ntry:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', 'torch' in sys.modules or 'gradio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "usage: vqfr serve" in out and "--max-upload-mb" in out and "--share" not in out
    assert out.strip().endswith("LOADED False")


def test_serve_without_gradio_says_how_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == 'vqfr serve: error: the web page needs Gradio: pip install "vqfr[web]"'
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err


def test_serve_cli_answers_then_removes_its_temporary_folder(tiny_v2, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'vqfr[web]')")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = _free_port()
    # run from an empty folder (nothing may appear there either), importing this checkout's vqfr
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    cmd = [sys.executable, "-m", "vqfr", "serve", "--model", str(tiny_v2), "--device", "cpu", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        # Wait for the "open" line, not just for the port: the server answers a moment before the
        # command prints it, and a SIGTERM in between would (rightly) stop it before it says so.
        deadline = time.monotonic() + 120
        while not any("vqfr serve: open" in line for line in lines) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "vqfr: restore faces" in page  # the page config holds the title
        assert [p.name for p in tmp.iterdir()][0].startswith("vqfr-serve-")  # all it writes goes in there
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert f"open http://127.0.0.1:{port}/" in err and "Traceback" not in err
    assert list(tmp.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_a_port_in_use_is_a_one_line_error(tiny_v2, tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'vqfr[web]')")
    from vqfr.web import build_app, launch

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = build_app(model=str(tiny_v2), device="cpu", workdir=tmp_path / "requests", preload=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(VQFRError, match=f"^cannot listen on 127.0.0.1:{port} \\(in use"):
            launch(app, port=port)
    app.close()


# ---------------------------------------------------------------- the page in a browser
def _browser_or_skip() -> tuple[str, str]:
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'vqfr[web]')")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install 'vqfr[web]')")
    found = (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))
    browser = next((path for path in found if path), None)
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("no Chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def served(tiny_v2, tmp_path_factory):
    """The page on a free port of 127.0.0.1, Gradio's files kept in this test's temporary folder."""
    _browser_or_skip()
    from vqfr.web import build_app, launch

    root = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        app = build_app(model=str(tiny_v2), device="cpu", workdir=root / "requests")
        try:
            yield launch(app, port=_free_port()), root
        finally:
            app.close()


@pytest.fixture(scope="module")
def browser(served):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _browser_or_skip()
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vqfr-files input[type=file]"))


def _upload_and_restore(browser, path: Path, aligned: bool = True) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.CSS_SELECTOR, "#vqfr-files input[type=file]").send_keys(str(path))
    # the page shows the name's stem and extension in separate elements (the text may wrap between them)
    WebDriverWait(browser, 30).until(lambda d: path.stem in d.find_element(By.ID, "vqfr-files").text)
    box = browser.find_element(By.CSS_SELECTOR, "#vqfr-aligned input[type=checkbox]")
    if box.is_selected() != aligned:  # a script click: the layout may still be settling under the pointer
        browser.execute_script("arguments[0].click();", box)
    WebDriverWait(browser, 10).until(lambda d: box.is_selected() == aligned)
    # the button may be re-rendered after the upload: wait for it (a direct lookup failed once under load)
    (button,) = WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "vqfr-restore"))
    button.click()


def test_browser_restores_an_upload_and_offers_the_png(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = served
    photo = ALIGNED if ALIGNED.is_file() else _png(tmp_path / "face.png", 128, 128)
    with Image.open(photo) as im:
        w, h = im.size
    _open(browser, url)
    _upload_and_restore(browser, photo)
    links = WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vqfr-download a[href]"))
    href = links[0].get_attribute("href")
    assert href.startswith(url) and href.endswith(f"{photo.stem}_restored.png")
    data = urllib.request.urlopen(href, timeout=30).read()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.size == (2 * w, 2 * h)  # the page's default upscale is 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#vqfr-slider img")) == 2  # before and after
    assert len(browser.find_elements(By.CSS_SELECTOR, "#vqfr-faces img")) == 1
    assert "1 photo(s) restored" in browser.find_element(By.ID, "vqfr-status").text
    assert any((root / "gradio").rglob(photo.name))  # uploads went to the folder we chose
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.size[0] >= 1000
    if os.environ.get("VQFR_SCREENSHOT"):  # how docs/images/serve.png is made
        shutil.copyfile(shot, os.environ["VQFR_SCREENSHOT"])


def test_browser_shows_a_readable_error_for_a_bad_file(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = served
    _open(browser, url)
    _upload_and_restore(browser, _not_an_image(tmp_path / "holiday.png"))
    toast = WebDriverWait(browser, 60).until(
        lambda d: next((t for t in d.find_elements(By.CSS_SELECTOR, ".toast-body.error") if t.text), None)
    )
    assert "holiday.png: not an image, or a format that cannot be read" in toast.text
    assert "Traceback" not in browser.page_source and str(tmp_path) not in toast.text
