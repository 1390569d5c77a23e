"""A studio that survives any job: limits checked before a job waits for the slot, one-line
errors for jobs that fail in any way, and a soak of several clients at once on loopback.

The app runs in this process on 127.0.0.1 on a free port, over the tiny SD pipeline, with small
limits so that "oversized" is cheap to ask for. Clients are real ``gradio_client`` clients over
HTTP, several at once.
"""

from __future__ import annotations

import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from whichway.studio.limits import Limits  # noqa: E402 -- after the gradio importorskip
from whichway.studio.session import Studio  # noqa: E402

LIMITS = Limits(max_frames=12, max_pixels=32 * 32, max_steps=4, max_seconds=2.0)
ROUNDS = 2
CLIENTS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(key: str) -> int:
    """This process's VmRSS / VmHWM in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/self/status")


def morph_inputs(a="a cat", b="a dog", *, frames=3, seed=0, steps=1, size=16, batch=2, t=""):
    """The /morph endpoint's 20 positional inputs."""
    return [
        a,
        b,
        "",
        "ot",
        "fixed",
        "uniform",
        frames,
        t,
        seed,
        "",
        steps,
        2.0,
        size,
        size,
        None,
        None,
        batch,
        "none",
        8,
        False,
    ]


@pytest.fixture(scope="module")
def app(tiny_pipeline, tmp_path_factory):
    from whichway.studio.app import launch

    studio = Studio(
        tmp_path_factory.mktemp("bounded-studio") / "runs",
        str(tiny_pipeline("sd")),
        device="cpu",
        limits=LIMITS,
    )
    studio.adapter()
    port = _free_port()
    demo = launch(studio, port=port, block=False, quiet=True)
    yield studio, f"http://127.0.0.1:{port}/"
    demo.close()


def test_limits_are_checked_before_anything_is_built(tmp_path):
    """No model is loaded and no list of the requested size is built: each refusal is one line."""
    studio = Studio(tmp_path / "runs", "never-loaded", limits=LIMITS)
    keys = [["a cat", 1, None], ["a dog", 2, None]]
    cases = [
        (lambda: studio.morph_settings("a", "b", frames=10**9, steps=1), "1,000,000,000 frames"),
        (
            lambda: studio.morph_settings("a", "b", height=32768, width=32768, steps=1),
            "pixels per frame",
        ),
        (lambda: studio.morph_settings("a", "b", steps=10**9), "1,000,000,000 steps"),
        (lambda: studio.travel_settings(keys, seconds=10**9, steps=1), "24,000,000,000 frames"),
        (lambda: studio.travel_settings(keys, seconds=3, fps=2, steps=1), "3.0 s is longer"),
        (
            lambda: studio.travel_settings(keys, frames_per_segment=10**9, steps=1),
            "frames is more",
        ),
        (lambda: studio.compare_job("a", "b", frames=10**9, steps=1), "frames is more"),
    ]
    import torch  # noqa: F401 -- a serving studio has torch loaded: time the refusal, not its import

    import whichway.compare
    import whichway.morph
    import whichway.travel  # noqa: F401 -- a serving studio has these loaded

    peak_before = _status("VmHWM")
    for make, message in cases:
        start = time.perf_counter()
        with pytest.raises(ValueError, match=message) as info:
            make()
        assert time.perf_counter() - start < 2.0
        assert "\n" not in str(info.value)
    # nothing the size of a request was built: this process's peak RSS grew by less than 50 MB
    assert _status("VmHWM") - peak_before < 50e6
    assert studio.loaded_model is None and not (tmp_path / "runs").exists()
    assert "12 frames" in LIMITS.describe() and "1,024 pixels" in LIMITS.describe()


def test_cancel_stops_its_own_pages_jobs_running_or_waiting(tmp_path):
    """A Cancel stops the jobs of the page that pressed it, the one running and the ones still
    waiting for the slot (those never start); another page's job runs on."""
    import threading

    from whichway.render import RenderCancelled

    studio = Studio(tmp_path / "runs", "never-loaded", limits=LIMITS)
    started, release, polled = threading.Event(), threading.Event(), []

    def slow(on_frame, on_step, should_stop):
        started.set()
        release.wait(30)
        polled.append(should_stop())
        return "first"

    def never(*_):
        raise AssertionError("a job cancelled while it waited must not start")

    results: dict[str, object] = {}

    def run(name, job, owner):
        try:
            results[name] = studio.run_sync_as(job, owner)
        except RenderCancelled as exc:
            results[name] = exc

    first = threading.Thread(target=run, args=("first", slow, "page-1"))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=run, args=("second", never, "page-2"))
    second.start()
    second.join(1.0)
    assert second.is_alive()  # waiting for the slot
    studio.cancel("page-2")  # page 2's Cancel: its waiting job, not page 1's running one
    release.set()
    first.join(30)
    second.join(30)
    assert results["first"] == "first" and polled == [False]
    assert isinstance(results["second"], RenderCancelled)
    assert "before it started" in str(results["second"])
    assert studio._stops == {}  # no flag outlives its job

    # Cancel without a page (the API's direct callers) stops whatever runs; a later job starts
    # with a flag of its own, untouched by that Cancel
    started.clear()
    release.clear()
    polled.clear()
    third = threading.Thread(target=run, args=("third", slow, None))
    third.start()
    assert started.wait(30)
    studio.cancel()
    release.set()
    third.join(30)
    assert polled == [True]
    assert studio.run_sync_as(lambda *a: a[2](), "page-1") is False


def test_a_failing_job_leaves_the_app_serving(app):
    """A job that raises MemoryError (or anything) ends as one line; the model stays loaded and
    the next job runs."""
    studio, _ = app
    adapter = studio.adapter()

    import torch

    from whichway.studio.session import user_message

    for error in (
        MemoryError("cannot allocate 3.7 TB"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB.\nMore text"),
        RuntimeError("something else broke"),
    ):

        def fails(*_, error=error):
            raise error

        events = list(studio.stream(fails))
        assert events[-1][0] == "error"
        line = user_message(events[-1][1])
        assert "\n" not in line
        if isinstance(error, RuntimeError) and "broke" in str(error):
            assert line == "RuntimeError: something else broke"
        else:
            assert line.startswith("Out of memory") and "model stays loaded" in line
        assert studio.adapter() is adapter
        assert studio.run_sync(lambda *_: "next") == "next"


def test_the_limits_line_is_in_the_page(app):
    import urllib.request

    _, url = app
    page = urllib.request.urlopen(url + "config", timeout=30).read().decode()
    assert LIMITS.describe() in page


def test_the_pages_cancel_stops_its_own_job_over_http(app):
    """Through the API as the page calls it: another client's Cancel leaves a job running, its
    own client's Cancel stops it (the session a request carries is the job's owner)."""
    from gradio_client import Client

    studio, url = app
    mine, other = Client(url, verbose=False), Client(url, verbose=False)
    job = mine.submit(*morph_inputs(frames=12, steps=4, batch=1, seed=7), api_name="/morph")
    deadline = time.monotonic() + 60
    while not studio._stops and time.monotonic() < deadline:  # the job holds its flag
        time.sleep(0.05)
    (flags,) = studio._stops.values()
    other.predict(api_name="/cancel")
    assert not any(f.is_set() for f in flags)  # not that client's job
    mine.predict(api_name="/cancel")
    assert all(f.is_set() for f in flags) or not studio._stops  # set (or already finished)
    with pytest.raises(Exception, match="^Cancelled"):
        job.result(timeout=120)


def _one_round(url: str, client_id: int, rnd: int, results: list) -> None:
    """One client's round: a good morph, a bad one, two oversized ones and a cancelled one, in a
    random order; every outcome is recorded with its kind."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    rng = random.Random(100 * client_id + rnd)
    kinds = ["good", "bad", "frames", "pixels", "cancel"]
    rng.shuffle(kinds)
    for kind in kinds:
        seed = client_id % 2  # two different good runs; repeats resume
        inputs = {
            "good": morph_inputs(seed=seed),
            "bad": morph_inputs(a=""),
            "frames": morph_inputs(frames=10**9),
            "pixels": morph_inputs(size=32768),
            "cancel": morph_inputs(frames=4, steps=1, batch=1, seed=10 + client_id),
        }[kind]
        start = time.perf_counter()
        try:
            if kind == "cancel":
                job = client.submit(*inputs, api_name="/morph")
                time.sleep(rng.uniform(0.0, 0.5))
                client.predict(api_name="/cancel")
                outcome = job.result(timeout=120)
            else:
                outcome = client.predict(*inputs, api_name="/morph")
            results.append((kind, "ok", outcome, time.perf_counter() - start, seed))
        except Exception as exc:  # a page error: the one-line message
            results.append((kind, "error", str(exc), time.perf_counter() - start, seed))


def test_soak_several_clients_good_bad_oversized_and_cancelled(app, tiny_pipeline, tmp_path):
    import gc

    from whichway.cli import main

    studio, url = app
    # warm up once (first compile of every code path), then take the memory baseline
    studio.run_sync(
        studio.morph_job(
            studio.morph_settings(
                "a cat", "a dog", frames=2, steps=1, height=16, width=16, format="none", seed=99
            )
        )
    )
    gc.collect()
    baseline = _status("VmRSS")

    results: list = []
    with ThreadPoolExecutor(CLIENTS) as pool:
        for rnd in range(ROUNDS):
            futures = [pool.submit(_one_round, url, c, rnd, results) for c in range(CLIENTS)]
            for f in futures:
                f.result(timeout=600)  # every client finished its round: every request answered
    assert len(results) == ROUNDS * CLIENTS * 5

    good_seeds = set()
    for kind, how, outcome, _seconds, seed in results:
        if kind in ("frames", "pixels"):
            assert how == "error" and "limit" in outcome and "\n" not in outcome, outcome
        elif kind == "bad":
            assert how == "error" and "must not be empty" in outcome
        elif kind == "good":
            # a good job ends done: another client's Cancel stops that client's jobs only
            assert how == "ok" and outcome[1].startswith("Done"), outcome
            good_seeds.add(seed)
        else:
            assert how == "ok" or outcome.startswith("Cancelled"), outcome
    # refused as they arrive, not after the running job: the typical answer (HTTP round trip of a
    # gradio_client included) within 2 s, the slowest within 5 s on a busy two-core machine
    refusals = sorted(s for k, h, _, s, _ in results if k in ("frames", "pixels"))
    assert refusals[len(refusals) // 2] < 2.0 and refusals[-1] < 5.0, refusals

    # memory: back within 20% of where it started, once the jobs are over
    gc.collect()
    assert _status("VmRSS") < 1.2 * baseline, (_status("VmRSS"), baseline)

    # no run folder half-written: run.json says done (every frame and the strip there) or
    # cancelled (only whole frames), and no temporary file is left anywhere
    runs = [p for p in studio.out_dir.iterdir() if (p / "frames").is_dir()]
    assert runs and not list(studio.out_dir.rglob("*.tmp*"))
    for run in runs:
        info = json.loads((run / "run.json").read_text())
        assert info["status"] in ("done", "cancelled"), (run, info["status"])
        for png in (run / "frames").glob("*.png"):
            Image.open(png).load()
        if info["status"] == "done":
            assert (
                all((run / f).is_file() for f in info["frames"]) and (run / "strip.png").is_file()
            )

    # the good runs' frames equal the command line's
    assert good_seeds
    for seed in sorted(good_seeds):
        settings = studio.morph_settings(
            "a cat",
            "a dog",
            frames=3,
            seed=seed,
            steps=1,
            guidance=2.0,
            height=16,
            width=16,
            batch_size=2,
            format="none",
        )
        run = studio.run_dir_for(settings, studio.adapter())
        cli = tmp_path / f"cli-{seed}"
        assert (
            main(
                [
                    "morph",
                    "a cat",
                    "a dog",
                    "--model",
                    str(tiny_pipeline("sd")),
                    "--device",
                    "cpu",
                    "--frames",
                    "3",
                    "--seed",
                    str(seed),
                    "--steps",
                    "1",
                    "--guidance",
                    "2",
                    "--height",
                    "16",
                    "--width",
                    "16",
                    "--batch-size",
                    "2",
                    "--format",
                    "none",
                    "--no-score",
                    "--quiet",
                    "--out",
                    str(cli),
                ]
            )
            == 0
        )
        for k in range(3):
            a = np.asarray(Image.open(run / f"frames/{k:04d}.png"))
            b = np.asarray(Image.open(cli / f"frames/{k:04d}.png"))
            assert np.array_equal(a, b)


def test_an_audio_tracks_length_is_checked_from_its_header_before_decoding(tmp_path, monkeypatch):
    """A travel whose length is the rest of its audio track is sized from the file's header: the
    count equals the plan's, and a track too long for the limits is refused before it is
    decoded (an hours-long track would otherwise be decoded into memory first)."""
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    import whichway.audio
    from whichway.budget import travel_frame_count
    from whichway.travel import Keyframe, TravelSettings, prepare_travel

    song = tmp_path / "song.wav"
    sf.write(song, np.zeros(16000, dtype=np.float32), 8000)  # 2 s
    n = travel_frame_count(2, None, 24, None, None, audio=song, audio_start=0.5)
    assert n == 36  # floor((2 - 0.5) x 24)
    settings = TravelSettings(
        (Keyframe("a cat"), Keyframe("a dog")), fps=24, audio=str(song), audio_start=0.5
    )
    assert prepare_travel(settings).n_frames == n

    def never(*_args, **_kwargs):
        raise AssertionError("the track was decoded before its length was checked")

    monkeypatch.setattr(whichway.audio, "load_audio", never)
    studio = Studio(tmp_path / "runs", "never-loaded", limits=LIMITS)
    keys = [["a cat", 1, None], ["a dog", 2, None]]
    with pytest.raises(ValueError, match="^48 frames is more than this studio's limit of 12"):
        studio.travel_settings(keys, audio=str(song), fps=24, steps=1)  # the whole 2 s track
