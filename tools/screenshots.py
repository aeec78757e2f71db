"""Screenshots of the playground of `nlpforge serve` for the docs.

    python tools/screenshots.py [--out docs/images] [--width 860] [--keep DIR]

Trains tiny models on the fly (text classification on the shipped sentiment examples, NER on
synthetic sentences; about a minute on two cores), exports them, serves them on loopback, and
saves one screenshot per page after trying it in headless Chromium: playground-index.png,
playground-classification.png and playground-ner.png; and report-classification.png, the
report.html of ``nlpforge evaluate --report`` on the classifier. Needs the
train, serve and dev extras (selenium) and Debian's chromium + chromium-driver
(tools/setup.sh installs them where apt-get exists).

tests/test_playground.py uses the helpers here (the training rows, ``train_export``,
``Server``, ``start_browser``) so that the docs' pictures and the tests run the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from nlpforge.testing.rows import ner_rows

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "examples" / "sentiment"

# -- training rows ---------------------------------------------------------------------------



QA_CONTEXT = "the weather was mild that year. Anna lives in Paris. a small dog slept by the door."
QA_ROWS = [{"question": "Where does Anna live?", "context": QA_CONTEXT,
            "answers": {"text": ["Paris"], "answer_start": [QA_CONTEXT.index("Paris")]}}] * 8


def _corpus() -> list[str]:
    from nlpforge.testing.encoders import CORPUS

    return list(CORPUS)


def embedding_pairs() -> list[dict]:
    """Each text of the tiny corpus cut in two halves: a pair to find."""
    return [{"text": " ".join(t.split()[:len(t.split()) // 2]),
             "text_pair": " ".join(t.split()[len(t.split()) // 2:])} for t in _corpus()]


def sentiment_rows() -> list[dict]:
    with open(SENTIMENT / "train.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def topic_rows() -> list[dict]:
    """Multi-label rows: each sentiment example tagged with the topics its words name."""
    topics = {"food": ("food", "meal", "recipe", "dinner"), "service": ("staff", "service"),
              "price": ("price", "cheap", "expensive", "money")}
    rows = []
    for row in sentiment_rows():
        words = row["text"].lower()
        rows.append({"text": row["text"], "label": [t for t, keys in topics.items()
                                                    if any(k in words for k in keys)]})
    return rows


def recipes() -> dict[str, tuple[list[dict], dict[str, Any], dict[str, Any]]]:
    """task → (training rows, training options when quick, training options for pictures);
    ``multi-label`` is text classification with several labels per text."""
    quick = {"max_steps": 3, "batch_size": 8, "lr": 1e-3}
    return {
        "multi-label": (topic_rows(), {**quick, "task": "text-classification",
                                       "task_options": {"multi_label": True}},
                        {**quick, "task": "text-classification",
                         "task_options": {"multi_label": True}}),
        "text-classification": (sentiment_rows(), quick,
                                {"epochs": 10, "batch_size": 16, "lr": 3e-3,
                                 "warmup_ratio": 0.0}),
        "token-classification": (ner_rows(192), quick,
                                 {"epochs": 6, "batch_size": 16, "lr": 3e-3}),
        # the tiny BERT has 256 positions: windows shorter than the default 384 tokens
        "question-answering": (QA_ROWS, {**quick, "max_length": 64,
                                         "task_options": {"doc_stride": 16}},
                               {**quick, "max_length": 64, "task_options": {"doc_stride": 16}}),
        "fill-mask": ([{"text": t} for t in _corpus()] * 2, quick, quick),
        "sentence-embedding": (embedding_pairs() * 4, quick,
                               {"max_steps": 30, "batch_size": 11, "lr": 2e-3,
                                "warmup_ratio": 0.0}),
    }


def picture_base(directory: Path) -> Path:
    """A tiny BERT (hidden size 64) whose WordPiece vocabulary knows the words of the sentiment
    examples and of the NER sentences: trained on them, its answers look right in a picture."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    from nlpforge.testing.encoders import train_wordpiece_tokenizer

    corpus = [r["text"] for r in sentiment_rows()] + _corpus() + \
        [" ".join(r["tokens"]) for r in ner_rows(50)]
    directory = Path(train_wordpiece_tokenizer(directory, 1200, corpus))
    vocab = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=128,
                         max_position_embeddings=256, pad_token_id=0)).save_pretrained(directory)
    return directory


def train_export(base: Path, task: str, root: Path, quality: bool = False) -> Path:
    """Train the tiny ``base`` model on ``task``'s rows (a few steps, or enough to look right
    with ``quality``) and export it to ``root/TASK/export``."""
    from nlpforge.export.onnx import export_run
    from nlpforge.training.loop import TrainConfig, train

    rows, quick, good = recipes()[task]
    options = dict(good if quality else quick)
    options.setdefault("task", task)
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    run = folder / "run"
    train(TrainConfig(model=str(base), train=str(data), output=str(run), progress=False,
                      tensorboard=False, overwrite=True, **options))
    export_run(str(run), str(folder / "export"), overwrite=True)
    return folder / "export"


def report_page(export: Path, folder: Path) -> Path:
    """``nlpforge evaluate EXPORT --report FOLDER`` on the shipped validation reviews."""
    subprocess.run([sys.executable, "-m", "nlpforge", "evaluate", str(export), "--data",
                    str(SENTIMENT / "validation.jsonl"), "--report", str(folder)],
                   check=True, stdout=subprocess.DEVNULL)
    return folder / "report.html"


# -- the server and the browser --------------------------------------------------------------


class Server:
    """``nlpforge serve ARGS --port 0`` on loopback until ``stop``; waits until ready."""

    def __init__(self, *args: str, env: dict | None = None, timeout: float = 180):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nlpforge", "serve", *args, "--port", "0"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
        self.lines: list[str] = []
        self.url = ""
        found = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                match = re.search(r" on (http://[^ ]+:\d+)", line)
                if match and not found.is_set():
                    self.url = match.group(1).replace("0.0.0.0", "127.0.0.1")
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        if not found.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError("nlpforge serve did not start:\n" + "".join(self.lines))
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nlpforge serve did not get ready:\n" + "".join(self.lines))
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser_paths() -> tuple[str | None, str | None]:
    """(Chromium, chromedriver), each None where absent; $CHROMIUM and $CHROMEDRIVER win."""
    browser = os.environ.get("CHROMIUM") or next(
        (path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return tuple(p if p and os.access(p, os.X_OK) else None  # type: ignore[return-value]
                 for p in (browser, driver))


def browser_missing() -> str | None:
    """Why no browser can be driven here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    browser, driver = browser_paths()
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver))
                               if p is None)
        return (f"{missing} not found: apt-get install chromium chromium-driver "
                f"(tools/setup.sh does where apt-get exists)")
    return None


def start_browser(width: int = 1000, height: int = 900) -> Any:
    """Headless Chromium driven by its chromedriver (no driver download: the paths are
    given)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--disable-extensions",
                     "--hide-scrollbars", "--force-device-scale-factor=1",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def wait_for(driver: Any, css: str, timeout: float = 30) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)))


def full_page_png(driver: Any, path: Path, width: int, mobile: bool = False) -> None:
    """The whole page (not just the window) ``width`` CSS pixels wide as a PNG at ``path``."""
    metrics = {"width": width, "height": 600, "deviceScaleFactor": 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics["height"] = min(max(int(height), 300), 3000)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        path.write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# -- the screenshots -------------------------------------------------------------------------


def try_page(driver: Any, url: str, fill: dict[str, str], result: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    form = wait_for(driver, "form.try:not([hidden])")
    for element_id, text in fill.items():
        box = driver.find_element(By.ID, element_id)
        box.clear()
        box.send_keys(text)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(driver, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--width", type=int, default=860)
    parser.add_argument("--keep", type=Path, help="build the exports here and keep them")
    args = parser.parse_args()
    reason = browser_missing()
    if reason:
        sys.exit(f"no browser: {reason}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        base = picture_base(root / "base")
        exports = {}
        for name, task in (("sentiment", "text-classification"), ("ner", "token-classification")):
            print(f"training and exporting {task}…", flush=True)
            exports[name] = train_export(base, task, root, quality=True)
        with Server(*(f"{n}={p}" for n, p in exports.items()), "--threads", "1") as server:
            driver = start_browser(args.width, 700)
            try:
                pages = [
                    ("playground-index.png", server.url + "/", None),
                    ("playground-classification.png", server.url + "/models/sentiment",
                     ({"classify-text": "The staff were friendly and the room was lovely."},
                      "#result .bars")),
                    ("playground-ner.png", server.url + "/models/ner",
                     ({"entities-text": "grace and alan read a book in new york"},
                      "#result mark.ent")),
                ]
                for file, url, action in pages:
                    driver.set_window_size(args.width, 700)
                    if action is None:
                        driver.get(url)
                        wait_for(driver, "#models .card")
                    else:
                        try_page(driver, url, *action)
                    time.sleep(0.2)
                    full_page_png(driver, args.out / file, args.width)
                    print(f"{args.out / file}: {(args.out / file).stat().st_size // 1024} KB")
                report = report_page(exports["sentiment"], root / "report")
                driver.set_window_size(args.width, 700)
                driver.get(report.as_uri())
                wait_for(driver, "img")
                full_page_png(driver, args.out / "report-classification.png", args.width)
                print(f"{args.out / 'report-classification.png'}")
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
