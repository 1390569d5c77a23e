"""`whichway studio` in a real browser (headless Chromium driven by Selenium) and through
gradio_client, on the tiny SD pipeline.

The app is started once for the module on 127.0.0.1 on a free port. Screenshots of each tab are
written to the pytest temp dir (``<basetemp>/studio-screens/*.png``); regenerate them with
``pytest tests/test_studio.py --basetemp=/tmp/ww-screens`` and look in /tmp/ww-screens/studio-screens.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from whichway.cli import main  # noqa: E402 -- after the gradio importorskip
from whichway.studio.session import Studio  # noqa: E402

SMALL = {"steps": 2, "height": 32, "width": 32, "guidance": 4.0}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def studio_app(tiny_pipeline, tmp_path_factory):
    from whichway.studio.app import launch

    # LPIPS on a random backbone (no download): Compare then shows PPL and smoothness too
    studio = Studio(
        tmp_path_factory.mktemp("studio") / "runs",
        str(tiny_pipeline("sd")),
        device="cpu",
        lpips_random_backbone=True,
    )
    studio.adapter()  # loaded once for the module, as `whichway studio --model` does
    port = _free_port()
    demo = launch(studio, port=port, block=False, quiet=True)
    yield studio, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studio-screens", numbered=False)


@pytest.fixture(scope="module")
def browser(studio_app):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "browser tests need chromium and chromedriver (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1800",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.get(studio_app[1])
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector))


def _type(driver, selector: str, value) -> None:
    from selenium.webdriver.common.keys import Keys

    box = _css(driver, selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(str(value))


def _tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    _wait(
        driver,
        lambda d: d.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']"),
    ).click()


def _fill_morph(driver, a: str, b: str, *, frames=3, t="", seed=0) -> None:
    _tab(driver, "Morph")
    _type(driver, "#ww-morph-a textarea", a)
    _type(driver, "#ww-morph-b textarea", b)
    _type(driver, "#ww-morph-frames input", frames)
    _type(driver, "#ww-morph-t textarea", t)
    _type(driver, "#ww-morph-seed input", seed)
    _type(driver, "#ww-morph-steps input", SMALL["steps"])
    _type(driver, "#ww-morph-guidance input", SMALL["guidance"])
    _type(driver, "#ww-morph-h input", SMALL["height"])
    _type(driver, "#ww-morph-w input", SMALL["width"])


def _close_errors(driver) -> None:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, ".toast-close"):
        button.click()
    _wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, ".toast-body"), timeout=10)


def _body(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def test_morph_in_the_browser_writes_the_cli_run(studio_app, browser, screens, tmp_path):
    from selenium.webdriver.common.by import By

    studio, _ = studio_app
    _fill_morph(browser, "a photo of a cat", "a red dog", frames=3, seed=3)
    _css(browser, "#ww-morph-go").click()
    _wait(browser, lambda d: "Done:" in d.find_element(By.CSS_SELECTOR, "#ww-morph-status").text)
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ww-morph-gallery img")) >= 3)
    browser.save_screenshot(str(screens / "morph.png"))

    run = studio.out_dir / "a-photo-of-a-cat--a-red-dog--ot"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["t"] == [0.0, 0.5, 1.0]
    cli = tmp_path / "cli"
    assert (
        main(
            [
                "morph",
                "a photo of a cat",
                "a red dog",
                "--model",
                studio.loaded_model,
                "--frames",
                "3",
                "--seed",
                "3",
                "--steps",
                "2",
                "--guidance",
                "4",
                "--height",
                "32",
                "--width",
                "32",
                "--out",
                str(cli),
                "--lpips-random-backbone",
                "--quiet",
            ]
        )
        == 0
    )
    expected = json.loads((cli / "run.json").read_text())
    assert info["settings"] == expected["settings"] and info["frames"] == expected["frames"]
    assert info["couplings"] == expected["couplings"]
    assert info["metrics"] == expected["metrics"]  # the same PPL summary, same LPIPS meter
    for name in expected["frames"]:
        assert np.array_equal(_pixels(run / name), _pixels(cli / name)), name
    assert {p.name for p in run.iterdir()} == {p.name for p in cli.iterdir()}


def test_invalid_t_shows_an_error_in_the_page(studio_app, browser):
    _fill_morph(browser, "a cat", "a dog", t="0, 0.6, 0.5, 1")
    _css(browser, "#ww-morph-go").click()
    _wait(browser, lambda d: "strictly increasing" in _body(d), timeout=30)
    assert "Traceback" not in _body(browser)
    _close_errors(browser)


def test_compare_shows_three_strips_and_three_costs(studio_app, browser, screens):
    from selenium.webdriver.common.by import By

    studio, _ = studio_app
    _tab(browser, "Compare")
    _type(browser, "#ww-compare-a textarea", "a photo of a cat")
    _type(browser, "#ww-compare-b textarea", "a red dog")
    _type(browser, "#ww-compare-frames input", 3)
    _type(browser, "#ww-compare-steps input", SMALL["steps"])
    _type(browser, "#ww-compare-guidance input", SMALL["guidance"])
    _type(browser, "#ww-compare-h input", SMALL["height"])
    _type(browser, "#ww-compare-w input", SMALL["width"])
    _css(browser, "#ww-compare-go").click()
    _wait(
        browser,
        lambda d: all(
            d.find_elements(By.CSS_SELECTOR, f"#ww-compare-{m} img")
            for m in ("ot", "clip", "random")
        ),
    )
    rows = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#ww-compare-table tbody tr"))
    browser.save_screenshot(str(screens / "compare.png"))

    saved = json.loads(
        next(studio.out_dir.glob("compare--a-photo-of-a-cat--a-red-dog*/compare.json")).read_text()
    )
    assert [r.text.split()[0] for r in rows] == ["ot", "clip", "random"]
    for row, figures in zip(rows, saved["couplings"]):
        cells = row.text.split()
        assert cells[1] == f"{figures['cost']:.6g}" and cells[3] == f"{figures['ppl']:.4g}"
        assert figures["ppl"] >= 0 and 0 <= figures["smoothness"] <= 1
    costs = {r["coupling"]: r["cost"] for r in saved["couplings"]}
    assert costs["ot"] <= costs["clip"] and costs["ot"] <= costs["random"]


def test_coupling_tab_shows_the_token_table(studio_app, browser, screens):
    from selenium.webdriver.common.by import By

    from whichway.matching import token_matching

    studio, _ = studio_app
    _tab(browser, "Coupling")
    _type(browser, "#ww-coupling-a textarea", "a photo of a cat")
    _type(browser, "#ww-coupling-b textarea", "a red dog on a photo")
    _css(browser, "#ww-coupling-go").click()
    rows = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#ww-token-table tbody tr"))
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#ww-coupling-plot img"))
    browser.save_screenshot(str(screens / "coupling.png"))

    expected = token_matching(studio.adapter(), "a photo of a cat", "a red dog on a photo")
    want = [r for g in expected.groups for r in g.rows]
    assert len(rows) == len(want)
    for row, r in zip(rows, want):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        assert cells[2] == r.token_a and cells[4] == r.token_b
        assert ("moved" in row.get_attribute("class")) == (bool(r.moved) and not r.collapsed)
    assert "padding" in rows[-1].get_attribute("class")  # padding collapsed into one row


def test_runs_tab_lists_runs_newest_first(studio_app, browser, screens):
    from selenium.webdriver.common.by import By

    studio, _ = studio_app
    # its own two runs (and whatever the other tests left): one written behind the page's
    # back, then a newer one from the page
    older = studio.morph_settings("an older cat", "an older dog", frames=3, format="none", **SMALL)
    studio.run_sync(studio.morph_job(older))
    newer, older = "a-newer-cat--a-newer-dog--ot", "an-older-cat--an-older-dog--ot"
    _fill_morph(browser, "a newer cat", "a newer dog", frames=3)
    _css(browser, "#ww-morph-go").click()
    _wait(browser, lambda d: newer in d.find_element(By.CSS_SELECTOR, "#ww-morph-status").text)
    _tab(browser, "Runs")
    # no Refresh: the list was updated when the page's morph finished
    _css(browser, "#ww-runs-pick input").click()
    names = [r.name for r in studio.runs()]

    def listed(d):  # the open list, once every option is drawn with its label
        items = d.find_elements(By.CSS_SELECTOR, "ul[role='listbox'] li")
        return items if len(items) == len(names) and all(o.text.strip() for o in items) else None

    options = _wait(browser, listed, timeout=30)
    assert [o.text.split()[0] for o in options] == names
    assert names.index(newer) < names.index(older)
    options[names.index(newer)].click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#ww-runs-strip img"))
    assert "morph, done, 3 frames" in _css(browser, "#ww-runs-status").text
    browser.save_screenshot(str(screens / "runs.png"))


def test_api_endpoints_with_gradio_client(studio_app, tmp_path):
    from gradio_client import Client, handle_file

    studio, url = studio_app
    client = Client(url, verbose=False)
    costs, _plot, table = client.predict("a photo of a cat", "a red dog", 0, api_name="/coupling")
    expected = studio.token_matching("a photo of a cat", "a red dog")
    assert f"| ot | {expected.costs['ot']:.6g} |" in costs and table.count("<tr") == 1 + len(
        expected.groups[0].rows
    )

    with pytest.raises(Exception, match="must not be empty"):
        client.predict(
            "",
            "a dog",
            "",
            "ot",
            "fixed",
            "uniform",
            3,
            "",
            0,
            "",
            2,
            4,
            32,
            32,
            None,
            None,
            4,
            "gif",
            8,
            False,
            api_name="/morph",
        )
    with pytest.raises(Exception, match="multiple of 8"):
        client.predict(
            "a cat",
            "a dog",
            "",
            "ot",
            "fixed",
            "uniform",
            3,
            "",
            0,
            "",
            2,
            4,
            30,
            32,
            None,
            None,
            4,
            "gif",
            8,
            False,
            api_name="/morph",
        )
    with pytest.raises(Exception, match="could not load model"):
        client.predict("/nonexistent/whichway-no-such-model", api_name="/load_model")
    assert studio.loaded_model is not None  # the previous model stays loaded: the app keeps working

    gallery, status, files = client.predict(
        "a cat",
        "a dog",
        "",
        "clip",
        "fixed",
        "uniform",
        2,
        "",
        1,
        "",
        2,
        4,
        32,
        32,
        None,
        None,
        4,
        "none",
        8,
        False,
        api_name="/morph",
    )
    assert len(gallery) == 2 and status.startswith("Done") and len(files) == 2  # run.json and strip
    run = studio.open_run("a-cat--a-dog--clip")
    _status, _strip, _anim, _video, settings = client.predict(run.name, api_name="/open_run")
    assert settings["settings"]["coupling"] == "clip" and settings["status"] == "done"

    # a real-image morph: the uploads are kept in the run folder, so run.json and a resume find them
    images = []
    for k, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        images.append(tmp_path / f"img{k}.png")
        Image.new("RGB", (32, 32), colour).save(images[-1])
    gallery, status, _files = client.predict(
        "a cat",
        "a dog",
        "",
        "ot",
        "fixed",
        "uniform",
        3,
        "",
        0,
        "",
        2,
        1,
        32,
        32,
        handle_file(str(images[0])),
        handle_file(str(images[1])),
        4,
        "none",
        8,
        False,
        api_name="/morph",
    )
    assert len(gallery) == 3 and status.startswith("Done")
    real = json.loads((studio.out_dir / "a-cat--a-dog--ot" / "run.json").read_text())
    assert Path(real["settings"]["image_a"]).parent == studio.out_dir / "uploads"
    assert real["latent_used"] == "cog"


def test_travel_tab_plays_the_video(studio_app, browser, screens):
    from selenium.webdriver.common.by import By

    studio, _ = studio_app
    _tab(browser, "Travel")  # the default table: three keyframes, seeds 0, 1, 2
    _type(browser, "#ww-travel-fps input", 4)
    _type(browser, "#ww-travel-per-segment input", 2)
    _type(browser, "#ww-travel-steps input", SMALL["steps"])
    _type(browser, "#ww-travel-guidance input", SMALL["guidance"])
    _type(browser, "#ww-travel-h input", SMALL["height"])
    _type(browser, "#ww-travel-w input", SMALL["width"])
    _css(browser, "#ww-travel-go").click()
    _wait(browser, lambda d: "Done:" in d.find_element(By.CSS_SELECTOR, "#ww-travel-status").text)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#ww-travel-video video"))
    browser.save_screenshot(str(screens / "travel.png"))
    run = studio.open_run("travel-a-photo-of-a-cat--a-red-fox")
    assert run.kind == "travel" and run.status == "done" and len(run.frames) == 5
    assert run.file("video").suffix == ".mp4"


def test_travel_api_with_sound_writes_the_cli_run(studio_app, tmp_path):
    import soundfile
    from gradio_client import Client, handle_file

    from whichway.media import probe_streams

    studio, url = studio_app
    song = tmp_path / "song.wav"
    rate = 22050
    tone = (
        0.2
        * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)
        * (np.arange(2 * rate) % 5512 < 800)
    )
    soundfile.write(song, tone.astype(np.float32), rate)
    keys = {
        "headers": ["prompt", "seed", "time (s)"],
        "data": [["a cat", 3, None], ["a dog", 4, None]],
    }
    client = Client(url, verbose=False)
    _gallery, status, files, video = client.predict(
        keys,
        handle_file(str(song)),
        "audio",
        "ot",
        "cog",
        4,
        1.0,
        0,
        0,
        2,
        4,
        32,
        32,
        "mp4",
        "",
        api_name="/travel",
    )
    assert status.startswith("Done: 4 frames") and len(files) == 3 and str(video).endswith(".mp4")
    run = studio.runs()[0]
    assert run.kind == "travel" and {s["type"] for s in probe_streams(run.file("video"))} == {
        "video",
        "audio",
    }

    cli = tmp_path / "cli"
    assert (
        main(
            [
                "travel",
                "a cat",
                "a dog",
                "--seeds",
                "3,4",
                "--fps",
                "4",
                "--seconds",
                "1",
                "--pacing",
                "audio",
                "--audio",
                run.info["settings"]["audio"],
                "--steps",
                "2",
                "--guidance",
                "4",
                "--height",
                "32",
                "--width",
                "32",
                "--model",
                studio.loaded_model,
                "--out",
                str(cli),
                "--quiet",
            ]
        )
        == 0
    )
    expected = json.loads((cli / "run.json").read_text())
    assert (
        expected["settings"] == run.info["settings"]
        and expected["segments"] == run.info["segments"]
    )
    assert {p.name for p in cli.iterdir()} == {p.name for p in run.path.iterdir()}
    for ours, theirs in zip(run.frames, sorted((cli / "frames").glob("*.png")), strict=True):
        assert np.array_equal(_pixels(ours), _pixels(theirs))

    with pytest.raises(Exception, match="at least 2 keyframes"):
        client.predict(
            {"headers": ["prompt", "seed", "time (s)"], "data": [["a cat", 0, None]]},
            None,
            "uniform",
            "ot",
            "cog",
            4,
            1.0,
            0,
            0,
            2,
            4,
            32,
            32,
            "mp4",
            "",
            api_name="/travel",
        )


def test_the_model_loads_once_and_reloads_when_another_is_chosen(studio_app, monkeypatch):
    from gradio_client import Client

    import whichway.models

    studio, url = studio_app
    real_loader, loads = whichway.models.load_adapter, []

    def counting_loader(model, **kw):
        loads.append(model)
        return real_loader(model, **kw)

    monkeypatch.setattr(whichway.models, "load_adapter", counting_loader)
    client = Client(url, verbose=False)
    first = studio.loaded_model
    client.predict("a cat", "a dog", 0, api_name="/coupling")
    client.predict(first, api_name="/load_model")
    assert loads == []  # jobs and re-choosing the loaded model reuse it
    other = first.rstrip("/") + "/"  # the same pipeline under another name: a different choice
    assert "Model: `" + other in client.predict(other, api_name="/load_model")
    assert loads == [other] and studio.loaded_model == other
    client.predict(first, api_name="/load_model")
    assert loads == [other, first] and studio.loaded_model == first


def test_only_the_run_folder_is_served(studio_app):
    import urllib.error
    import urllib.request

    studio, url = studio_app

    def status(path: Path) -> int:
        try:
            with urllib.request.urlopen(f"{url}gradio_api/file={path}") as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    run = studio.runs()[0]
    assert status(run.path / run.info.get("strip", "strip.png")) == 200
    assert status(Path(studio.loaded_model) / "model_index.json") in (403, 404)
    assert status(Path(__file__)) in (403, 404)


def test_cancel_keeps_finished_frames_and_the_run_resumes(studio_app, tmp_path):
    from whichway.morph import run_morph
    from whichway.render import RenderCancelled

    studio, _ = studio_app
    settings = studio.morph_settings(
        "a cat", "a red dog", frames=3, seed=2, batch_size=1, format="none", **SMALL
    )
    job = studio.morph_job(settings)

    def press_cancel_during_the_first_batch(on_frame, on_step, should_stop):
        def frame(k, path):
            on_frame(k, path)
            studio.cancel()  # what the page's Cancel button calls

        return job(frame, on_step, should_stop)

    events, ticks = [], []
    with pytest.raises(RenderCancelled):
        for kind, value in studio.stream(press_cancel_during_the_first_batch):
            events.append(kind)
            if kind == "step":
                ticks.append(value)
            if kind == "error":
                raise value
    run = studio.run_dir_for(settings, studio.adapter())
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    assert len(list((run / "frames").glob("*.png"))) == 1 and events.count("frame") == 1
    assert events.count("step") == SMALL["steps"]  # the progress bar's ticks: one batch of 2 steps
    assert ticks == [(k, 3 * SMALL["steps"]) for k in range(1, SMALL["steps"] + 1)]  # of 3 batches

    result = studio.run_sync(studio.resume_job(run.name))
    assert result.rendered == 2 and json.loads((run / "run.json").read_text())["status"] == "done"
    # the same settings in one go, through the library call `whichway morph` makes
    cli = run_morph(studio.adapter(), settings, tmp_path / "cli", progress=False).run_dir
    for k in range(3):
        assert np.array_equal(
            _pixels(run / f"frames/{k:04d}.png"), _pixels(cli / f"frames/{k:04d}.png")
        )


def test_frames_too_small_for_lpips_still_finish(studio_app):
    studio, _ = studio_app
    small = {**SMALL, "height": 16, "width": 16}
    settings = studio.morph_settings("a cat", "a red dog", frames=3, seed=5, format="none", **small)
    result = studio.run_sync(studio.morph_job(settings))  # the PPL summary is skipped, not an error
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "done"
    comparison, _target, strips, note = studio.run_sync(
        studio.compare_job("a cat", "a red dog", frames=3, **small)
    )
    assert comparison.metrics is None and "at least 32 pixels" in note and len(strips) == 3


def test_one_job_at_a_time(studio_app):
    studio, _ = studio_app
    started, release = threading.Event(), threading.Event()

    def slow(on_frame, on_step, should_stop):
        started.set()
        release.wait(30)
        return "first"

    results = []
    first = threading.Thread(target=lambda: results.append(studio.run_sync(slow)))
    first.start()
    assert started.wait(30)
    second_ran = threading.Event()

    def quick(*args):
        second_ran.set()
        return "second"

    second = threading.Thread(target=lambda: results.append(studio.run_sync(quick)))
    second.start()  # blocks on the job lock until the first job ends, so it finishes second
    second.join(1.0)  # time enough for it to run, were there no lock
    assert second.is_alive() and not second_ran.is_set()
    release.set()
    first.join(30)
    second.join(30)
    assert results == ["first", "second"]


def test_cli_checks_before_loading(tmp_path, capsys, monkeypatch):
    import whichway.models

    monkeypatch.setattr(
        whichway.models, "load_adapter", lambda *a, **k: pytest.fail("model loaded")
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["studio", "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["studio", "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err


def test_page_values_are_checked_before_any_model(tmp_path):
    studio = Studio(tmp_path / "runs", "never-loaded")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="could not read .*broken.png"):
        studio.morph_settings("a cat", "a dog", image_a=str(broken), image_b=str(broken))
    with pytest.raises(ValueError, match="strictly increasing"):
        studio.morph_settings("a cat", "a dog", t="0, 0.5, 0.4, 1")
    with pytest.raises(ValueError, match="not a number"):
        studio.morph_settings("a cat", "a dog", t="0, half, 1")
    with pytest.raises(ValueError, match="multiple of 8"):
        studio.morph_settings("a cat", "a dog", height=100)
    with pytest.raises(ValueError, match="at least 2 keyframes"):
        studio.travel_settings([["a cat", 1, None], ["", None, None]])
    # the three tabs parse their shared fields alike (Compare used to fail on float("lots"))
    for make in (
        lambda **k: studio.morph_settings("a cat", "a dog", **k),
        lambda **k: studio.travel_settings(
            [["a cat", 1, None], ["a dog", 2, None]], seconds=1, **k
        ),
        lambda **k: studio.compare_job("a cat", "a dog", **k),
    ):
        with pytest.raises(ValueError, match="guidance must be a number, got 'lots'"):
            make(guidance="lots")
        with pytest.raises(ValueError, match="steps must be"):
            make(steps=0)
    with pytest.raises(ValueError, match="unknown run"):
        studio.open_run("../etc")
    settings = studio.morph_settings(
        "a cat", "a dog", frames=4, seed_b="7", latent="cog", format="none"
    )
    assert (
        settings.t == (0.0, 0.333333, 0.666667, 1.0)
        and settings.seed_b == 7
        and settings.format is None
    )
    assert studio.loaded_model is None  # nothing was loaded
