"""The playground of ``nlpforge serve``: its pages over HTTP (headers, flags, token, host rule)
and, in headless Chromium, every page type used as a person would — typing, submitting with
the keyboard or the mouse, and reading what the page shows against what the API answers.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` and the ``selenium``
package (tools/setup.sh installs them where apt-get exists); without them they skip, saying
what is missing. Screenshots of every page tried go to build/test-artifacts/playground/.
One server serves all the models (tiny exports), one browser session serves the module.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import run_cli
from nlpforge.serving import playground

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts" / "playground"
TOKEN = "playground-test-token"
TOKEN_KEY = "nlpforge-playground-token"


def _load_tool():
    """tools/screenshots.py: the training rows, the server and the browser set-up that the
    docs' screenshots use too."""
    spec = importlib.util.spec_from_file_location("nlpforge_tools_screenshots",
                                                  ROOT / "tools" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def serve(*args: str, env: dict | None = None):
    return tool.Server(*args, "--threads", "1", "--max-queue-delay-ms", "0", env=env)


# -- the pages over HTTP ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback(exported):
    """The default: loopback, so the playground is on."""
    with serve(f"sentiment={exported}") as server:
        yield server


@pytest.fixture(scope="module")
def token_server(exported):
    """On every address, with --playground and a token (from the environment variable)."""
    with serve(f"sentiment={exported}", "--host", "0.0.0.0", "--playground",
               env={"NLPFORGE_SERVE_TOKEN": TOKEN}) as server:
        yield server


def _check_headers(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy")
    assert csp == playground.CSP, response.headers
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp and "http" not in csp and "*" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "access-control-allow-origin" not in response.headers


def test_pages_are_html_with_a_strict_csp_and_nothing_from_another_host(loopback):
    client = httpx.Client(base_url=loopback.url, timeout=30)
    origin = {"Origin": "http://evil.example"}
    for path in ("/", "/models/sentiment"):
        response = client.get(path, headers=origin)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        _check_headers(response)
        page = response.text
        assert page.startswith("<!doctype html>") and '<meta name="viewport"' in page
        # scripts and styles come from files of this server only: nothing inline
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
        assert scripts == [(' src="/playground/assets/playground.js" defer', "")]
        assert "<style" not in page and " style=" not in page
        assert not re.search(r"\son[a-z]+\s*=", page)  # no inline event handlers
        assert not re.search(r"https?://", page)
    unknown = client.get("/models/nothing-here")
    assert unknown.status_code == 404 and "<!doctype html>" in unknown.text  # never blank
    _check_headers(unknown)
    for name, media_type in playground.ASSET_FILES.items():
        asset = client.get(f"{playground.ASSETS}/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"] == media_type
        _check_headers(asset)
        if name != "icon.svg":  # no CDN, no external fonts, no HTML parsing of data
            assert not re.search(r"https?://", asset.text), name
            assert "@import" not in asset.text and "url(" not in asset.text
    script = client.get(f"{playground.ASSETS}/playground.js").text
    assert "innerHTML" not in script and "eval(" not in script and "localStorage" not in script
    assert client.get(f"{playground.ASSETS}/other.js").status_code == 404
    # the API's own answers are as they were: no page headers, no CORS for other origins
    api = client.get("/v1/models", headers=origin)
    assert api.status_code == 200
    assert "content-security-policy" not in api.headers
    assert "access-control-allow-origin" not in api.headers
    entry = api.json()["models"][0]
    assert entry["family"] == "encoder" and entry["variant"] == "fp32"
    assert entry["settings"] == {"multi_label": False, "threshold": 0.5}
    assert client.post("/", json={}).status_code == 405
    # the Host check covers the pages too (DNS rebinding)
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 421
    assert any("playground: http://127.0.0.1:" in line for line in loopback.lines)


def test_no_playground_turns_the_pages_off(exported):
    with serve(f"sentiment={exported}", "--no-playground") as server:
        client = httpx.Client(base_url=server.url, timeout=30)
        for path in ("/", "/models/sentiment", f"{playground.ASSETS}/playground.js"):
            assert client.get(path).status_code == 404, path
        assert client.get("/v1/models").status_code == 200
        assert not any("playground:" in line for line in server.lines)


def test_off_loopback_the_playground_needs_the_flag(exported, token_server):
    with serve(f"sentiment={exported}", "--host", "0.0.0.0") as server:
        client = httpx.Client(base_url=server.url, timeout=30)
        assert client.get("/").status_code == 404
        assert client.get("/models/sentiment").status_code == 404
        assert client.get("/v1/models").status_code == 200
    # the same address with --playground (token_server): on
    response = httpx.get(token_server.url + "/", timeout=30)
    assert response.status_code == 200 and "Served models" in response.text
    assert any("playground: http://0.0.0.0:" in line for line in token_server.lines)


def test_with_a_token_the_pages_load_and_the_api_still_needs_it(token_server):
    client = httpx.Client(base_url=token_server.url, timeout=30)
    for path in ("/", "/models/sentiment", "/models/unknown",
                 *(f"{playground.ASSETS}/{n}" for n in playground.ASSET_FILES)):
        response = client.get(path)
        assert response.status_code in (200, 404) and response.status_code != 401, path
        _check_headers(response)
    # the pages hold no data: the model list and predictions need the token
    assert client.get("/v1/models").status_code == 401
    body = {"inputs": ["a lovely film"]}
    assert client.post("/v1/models/sentiment/predict", json=body).status_code == 401
    assert client.post("/", json=body).status_code == 401  # only GET is public
    assert client.get("/models/a/b").status_code == 401  # not a page path
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v1/models", headers=auth).status_code == 200
    assert client.post("/v1/models/sentiment/predict", json=body, headers=auth).status_code == 200


def test_only_page_paths_skip_the_token():
    for path in ("/", "/models/sentiment", "/models/a.b-c_d", "/playground/assets/playground.js",
                 "/playground/assets/playground.css", "/playground/assets/icon.svg"):
        assert playground.is_page(path), path
    for path in ("", "/index.html", "/models/", "/models/a/b", "/models/..", "/models/.x",
                 "/v1/models/sentiment", "/x/models/sentiment", "/playground/assets/",
                 "/playground/assets/other.js", "/playground/assets/../../v1/models",
                 "/models/" + "a" * 65, "/docs/models/a"):
        assert not playground.is_page(path), path


def test_the_static_files_are_package_data():
    config = (ROOT / "pyproject.toml").read_text()
    assert '"serving/playground/static/*"' in config
    shipped = {p.name for p in (Path(playground.__file__).parent / "static").iterdir()}
    assert shipped == {*playground.PAGES, *playground.ASSET_FILES}


# -- in a browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    reason = tool.browser_missing()
    if reason:
        pytest.skip(f"no browser to drive: {reason}")
    driver = tool.start_browser(1000, 900)
    driver.set_script_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(browser, exported, gpt2_export, t5_export, tiny_bert, tmp_path_factory):
    """One server for every page type: the tiny exports of the suite plus NER, QA, fill-mask
    and sentence-embedding exports trained here in a few steps (NER a little longer, so that
    it finds people and places). ``--no-truncate``: an over-long text is an error to show."""
    root = tmp_path_factory.mktemp("playground")
    exports = {"sentiment": exported, "gpt2": gpt2_export[1], "t5": t5_export[1]}
    for name, task, quality in (("topics", "multi-label", False),
                                ("ner", "token-classification", True),
                                ("qa", "question-answering", False),
                                ("fill", "fill-mask", False),
                                ("similar", "sentence-embedding", False)):
        exports[name] = tool.train_export(tiny_bert, task, root, quality=quality)
    with serve(*(f"{n}={p}" for n, p in exports.items()), "--no-truncate") as server:
        server.client = httpx.Client(base_url=server.url, timeout=60)
        yield server
        server.client.close()


@pytest.fixture
def page(browser):
    """The browser; after the test, no Content-Security-Policy violation and no uncaught
    error may have reached its console."""
    browser.get_log("browser")  # drop what earlier tests left
    yield browser
    problems = [e["message"] for e in browser.get_log("browser")
                if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]]
    assert not problems, problems


def by_css(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def all_css(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def open_model(driver, server, name: str):
    driver.get(f"{server.url}/models/{name}")
    form = tool.wait_for(driver, "form.try:not([hidden])")
    tool.wait_for(driver, "#status")
    wait(driver, lambda: by_css(driver, "#status").text == "Ready.", "the model to be ready")
    return form


def wait(driver, condition, what: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda _: condition(), what)


def type_into(driver, element_id: str, text: str) -> None:
    box = by_css(driver, f"#{element_id}")
    box.clear()
    box.send_keys(text)


def shot(driver, name: str, width: int = 1000, mobile: bool = False) -> None:
    tool.full_page_png(driver, ARTIFACTS / f"{name}.png", width, mobile=mobile)


def unlabelled(driver) -> list[str]:
    """Ids of the visible form controls that no label names."""
    return driver.execute_script("""
        return [...document.querySelectorAll('input, textarea, select')]
            .filter(e => e.offsetParent !== null && e.labels.length === 0)
            .map(e => e.id || e.name);""")


def predict(server, name: str, row) -> dict:
    response = server.client.post(f"/v1/models/{name}/predict", json={"inputs": [row]})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def test_the_model_list_shows_every_model(page, served):
    page.get(served.url + "/")
    tool.wait_for(page, "#models .card")
    listing = {m["name"]: m for m in served.client.get("/v1/models").json()["models"]}
    cards = {c.get_attribute("data-model"): c.text for c in all_css(page, "#models .card")}
    assert set(cards) == set(listing)
    for name, text in cards.items():
        model = listing[name]
        for fact in (model["task"], model["family"], model["variant"], "ready"):
            assert fact in text, (name, fact, text)
    chips = [c.text for c in all_css(page, '#models .card[data-model="ner"] .chip')]
    assert chips == listing["ner"]["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert by_css(page, "#status").text == f"{len(listing)} models served."
    shot(page, "index")
    by_css(page, '#models .card[data-model="ner"] a.button').click()
    tool.wait_for(page, "#form-entities")
    assert page.current_url.endswith("/models/ner")


def test_classification_shows_a_bar_per_label(page, served):
    from selenium.webdriver.common.keys import Keys

    open_model(page, served, "sentiment")
    assert unlabelled(page) == []
    text = "the staff were friendly and the room was lovely"
    type_into(page, "classify-text", text)
    by_css(page, "#classify-text").send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard submits
    tool.wait_for(page, "#result .bars")
    want = predict(served, "sentiment", {"text": text})
    rows = all_css(page, "#result .bar-row")
    assert [r.get_attribute("data-label") for r in rows] == \
        sorted(want["scores"], key=want["scores"].get, reverse=True)
    top = by_css(page, "#result .bar-row.top")
    assert top.get_attribute("data-label") == want["label"] == rows[0].get_attribute("data-label")
    assert by_css(page, "#result .summary").text == f"Top label: {want['label']} " \
                                                    f"({want['score']:.3f})"
    for row in rows:
        label = row.get_attribute("data-label")
        fill = by_css(page, f'#result .bar-row[data-label="{label}"] .bar-fill')
        track = by_css(page, f'#result .bar-row[data-label="{label}"] .bar-track')
        assert fill.size["width"] / track.size["width"] == \
            pytest.approx(want["scores"][label], abs=0.01)
        assert row.find_element("css selector", ".bar-value").text == \
            f"{want['scores'][label]:.3f}"
    shot(page, "classification")


def test_multi_label_shows_its_threshold(page, served):
    open_model(page, served, "topics")
    text = "The staff were kind but the food was cold and the price too high."
    type_into(page, "classify-text", text)
    by_css(page, "#form-classify button[type=submit]").click()
    tool.wait_for(page, "#result .bars.multi")
    want = predict(served, "topics", {"text": text})
    rows = all_css(page, "#result .bar-row")
    assert {r.get_attribute("data-label") for r in rows} == set(want["scores"]) == \
        {"food", "price", "service"}
    on = [r.get_attribute("data-label") for r in all_css(page, "#result .bar-row.on")]
    assert sorted(on) == sorted(want["labels"])
    assert "threshold, 0.5" in by_css(page, "#result").text
    assert by_css(page, "#result .summary").text == (
        "Predicted labels: " + ", ".join(want["labels"]) if want["labels"]
        else "No label reaches the threshold.")
    for row in rows:
        track = row.find_element("css selector", ".bar-track")
        line = row.find_element("css selector", ".bar-threshold")
        offset = line.location["x"] - track.location["x"]
        assert offset / track.size["width"] == pytest.approx(0.5, abs=0.01)
    shot(page, "multi-label")


def test_an_api_error_is_shown_as_a_message(page, served):
    open_model(page, served, "sentiment")
    page.execute_script("document.getElementById('classify-text').value = arguments[0]",
                        "word " * 400)  # over the model's 128 tokens; the server cuts nothing
    by_css(page, "#form-classify button[type=submit]").click()
    error = tool.wait_for(page, "#error")
    assert error.text.startswith("Error 422: field 'inputs[0]': longer than model 'sentiment'")
    assert not by_css(page, "#result").is_displayed()
    shot(page, "error")
    type_into(page, "classify-text", "a short text")
    by_css(page, "#form-classify button[type=submit]").click()
    tool.wait_for(page, "#result .bars")
    assert not by_css(page, "#error").is_displayed()


def test_entities_are_highlighted_inline_with_a_legend(page, served):
    open_model(page, served, "ner")
    text = "🙂 grace met alan in new york , what a lovely view"
    type_into(page, "entities-text", text)
    by_css(page, "#form-entities button[type=submit]").click()
    tool.wait_for(page, "#result .legend")
    want = predict(served, "ner", {"text": text})["entities"]
    assert want, "the tiny NER model finds no entity in the test sentence"
    marks = all_css(page, "#result mark.ent")
    label_of = "arguments[0].querySelector('.ent-type').textContent"
    shown = [(m.get_attribute("data-type"), page.execute_script(
        f"return arguments[0].firstChild.textContent", m), page.execute_script(
        f"return {label_of}", m)) for m in marks]
    assert shown == [(e["type"], e["text"], e["type"]) for e in want]
    # the text around the marks is the text given (code points counted as the server does)
    assert page.execute_script(
        "const p = document.querySelector('#result .highlighted').cloneNode(true);"
        "p.querySelectorAll('.ent-type').forEach(e => e.remove()); return p.textContent") == text
    legend = [li.text for li in all_css(page, "#result .legend li")]
    assert legend == ["LOC", "PER"]  # the model's entity types, in its label order
    colours = {m.get_attribute("data-type"): m.get_attribute("class") for m in marks}
    assert len(set(colours.values())) == len(colours)
    shot(page, "token-classification")


def test_the_answer_is_marked_in_its_context(page, served):
    from selenium.webdriver.common.keys import Keys

    open_model(page, served, "qa")
    context = "🙂 the weather was mild that year. Anna lives in Paris. a small dog slept."
    type_into(page, "answer-context", context)
    type_into(page, "answer-question", "Where does Anna live?")
    by_css(page, "#answer-question").send_keys(Keys.ENTER)  # Enter submits from the question
    mark = tool.wait_for(page, "#result mark.answer")
    want = predict(served, "qa", {"question": "Where does Anna live?", "context": context})
    assert want["answer"] and mark.text == want["answer"]
    assert by_css(page, "#result .answer-text").text == want["answer"]
    assert f"(score {want['score']:.3f})" in by_css(page, "#result .summary").text
    before = page.execute_script("return arguments[0].previousSibling.textContent", mark)
    assert before == context[:want["start"]]
    shot(page, "question-answering")


def test_fill_mask_shows_the_mask_token_and_the_top_fillers(page, served):
    open_model(page, served, "fill")
    mask = served.client.get("/v1/models").json()["models"]
    mask = next(m for m in mask if m["name"] == "fill")["mask_token"]
    assert mask == "[MASK]" and by_css(page, "#fill-mask-name").text == mask
    type_into(page, "fill-text", "the movie was ")
    by_css(page, "#fill-insert").click()
    by_css(page, "#fill-text").send_keys(" and the acting was wonderful")
    text = by_css(page, "#fill-text").get_attribute("value")
    assert text == f"the movie was {mask} and the acting was wonderful"
    type_into(page, "fill-top-k", "3")
    by_css(page, "#form-fill button[type=submit]").click()
    tool.wait_for(page, "#result .fillers")
    want = predict(served, "fill", {"text": text, "top_k": 3})["masks"][0]
    rows = all_css(page, "#result .fillers .bar-row")
    assert [r.get_attribute("data-token") for r in rows] == [f["token_str"] for f in want]
    assert [r.find_element("css selector", ".bar-value").text for r in rows] == \
        [f"{f['score']:.3f}" for f in want]
    shot(page, "fill-mask")


#: Delivers the generate stream's events one at a time, ``delay`` ms apart, so that a test
#: can watch the text grow and stop it half way: the tiny models write their whole answer in
#: a few milliseconds. The events are the server's own; an abort reaches the real fetch.
PACED_FETCH = """
const delay = arguments[0];
const realFetch = window.fetch.bind(window);
window.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  if (!String(url).includes('/generate_stream') || !response.ok) return response;
  const reader = response.body.getReader();
  const decoder = new TextDecoder(), encoder = new TextEncoder();
  let text = '';
  const body = new ReadableStream({async pull(controller) {
    while (text.indexOf('\\n\\n') < 0) {
      const {value, done} = await reader.read();
      if (done) { if (text) controller.enqueue(encoder.encode(text)); controller.close(); return; }
      text += decoder.decode(value, {stream: true});
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (init.signal && init.signal.aborted) {
      controller.error(new DOMException('stopped', 'AbortError'));
      return;
    }
    const cut = text.indexOf('\\n\\n') + 2;
    controller.enqueue(encoder.encode(text.slice(0, cut)));
    text = text.slice(cut);
  }});
  return new Response(body, {status: response.status, headers: response.headers});
};
"""


def stream_pieces(server, name: str, text: str, parameters: dict) -> list[str]:
    response = server.client.post(f"/v2/models/{name}/generate_stream",
                                  json={"text_input": text, "parameters": parameters})
    assert response.status_code == 200, response.text
    events = [json.loads(line[5:]) for line in response.text.splitlines()
              if line.startswith("data:")]
    assert events[-1]["done"] is True
    return [e["text_output"] for e in events if e["text_output"]]


def continuation(driver) -> str:
    return driver.execute_script(
        "const c = document.querySelector('#generated .continuation');"
        "return c ? c.textContent : null")


def test_generated_text_streams_in_piece_by_piece(page, served):
    open_model(page, served, "gpt2")
    prompt = "once upon a time"
    type_into(page, "generate-text", prompt)
    type_into(page, "generate-max", "24")
    want = stream_pieces(served, "gpt2", prompt, {"max_new_tokens": 24})
    assert len(want) >= 3, want
    page.execute_script(PACED_FETCH, 120)
    by_css(page, "#generate-run").click()
    seen = []
    deadline = time.monotonic() + 60
    while by_css(page, "#result").get_attribute("data-state") != "done":
        assert time.monotonic() < deadline, "the generation did not finish"
        text = continuation(page)
        if text is not None and (not seen or text != seen[-1]):
            seen.append(text)
        time.sleep(0.02)
    final = continuation(page)
    assert final == "".join(want)
    assert len(seen) >= 3 and all(b.startswith(a) and len(b) > len(a)
                                  for a, b in zip(seen, seen[1:])), seen
    assert by_css(page, "#generated").get_attribute("data-pieces") == str(len(want))
    assert by_css(page, "#generated .prompt").text == prompt
    assert by_css(page, "#generate-stop").get_attribute("disabled") is not None
    shot(page, "text-generation")


def test_the_stop_button_aborts_the_stream(page, served):
    open_model(page, served, "gpt2")
    prompt = "once upon a time"
    type_into(page, "generate-text", prompt)
    type_into(page, "generate-max", "24")
    want = "".join(stream_pieces(served, "gpt2", prompt, {"max_new_tokens": 24}))
    page.execute_script(PACED_FETCH, 400)
    by_css(page, "#generate-run").click()
    wait(page, lambda: int(by_css(page, "#generated").get_attribute("data-pieces")) >= 1,
         "the first piece")
    stop = by_css(page, "#generate-stop")
    assert stop.is_enabled()
    stop.click()
    tool.wait_for(page, '#result[data-state="stopped"]', 10)
    stopped = continuation(page)
    time.sleep(1.0)  # nothing more arrives
    assert continuation(page) == stopped and len(stopped) < len(want) and want.startswith(stopped)
    assert "Stopped after" in by_css(page, "#result").text
    assert not stop.is_enabled() and by_css(page, "#generate-run").is_enabled()
    assert not by_css(page, "#error").is_displayed()  # stopping is no error
    shot(page, "text-generation-stopped")


def test_seq2seq_streams_over_the_same_route(page, served):
    open_model(page, served, "t5")
    assert by_css(page, "#generate-text-label").text == "Input text"
    source = "two dogs are playing in the snow"
    type_into(page, "generate-text", source)
    type_into(page, "generate-max", "12")
    type_into(page, "generate-beams", "2")  # beam search: the text comes as one piece
    by_css(page, "#generate-run").click()
    tool.wait_for(page, '#result[data-state="done"]', 60)
    want = served.client.post("/v2/models/t5/generate", json={
        "text_input": source, "parameters": {"max_new_tokens": 12, "num_beams": 2}})
    assert continuation(page) == want.json()["text_output"] != ""
    assert not all_css(page, "#generated .prompt")  # the input is not part of the output
    shot(page, "text2text-generation")


def test_embeddings_give_a_similarity_matrix(page, served):
    open_model(page, served, "similar")
    texts = ["the movie was great", "and the acting was wonderful", "the service was slow"]
    for i, text in enumerate(texts, 1):
        type_into(page, f"similarity-text-{i}", text)
    by_css(page, "#similarity-add").click()  # a fourth box, left empty: ignored
    assert page.switch_to.active_element.get_attribute("id") == "similarity-text-4"
    by_css(page, "#form-similarity button[type=submit]").click()
    tool.wait_for(page, "#result table.matrix")
    vectors = np.array([predict(served, "similar", t)["embedding"] for t in texts])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    want = unit @ unit.T
    for i in range(3):
        for j in range(3):
            cell = by_css(page, f'#result td[data-i="{i}"][data-j="{j}"]')
            assert float(cell.text) == pytest.approx(want[i, j], abs=0.006), (i, j)
    assert len(all_css(page, "#result table.matrix td[data-i]")) == 9
    shot(page, "sentence-embedding")
    for i in range(2, 5):  # one text is not enough: said on the page, nothing sent
        type_into(page, f"similarity-text-{i}", "")
    by_css(page, "#form-similarity button[type=submit]").click()
    assert tool.wait_for(page, "#error").text == "Give at least two texts to compare."


def test_an_unknown_model_gets_a_page_that_says_so(page, served):
    page.get(served.url + "/models/nothing-here")
    error = tool.wait_for(page, "#error")
    assert by_css(page, "h1").text == "Unknown model"
    assert 'No model called "nothing-here"' in error.text and "sentiment" in error.text
    assert not any(f.is_displayed() for f in all_css(page, "form.try"))


def test_readable_at_phone_width(page, served):
    def phone() -> None:
        page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 375, "height": 740, "deviceScaleFactor": 1, "mobile": True})

    try:
        for name, kind in (("sentiment", "classify"), ("ner", "entities")):
            phone()
            open_model(page, served, name)
            by_css(page, f"#form-{kind} button[type=submit]").click()
            tool.wait_for(page, "#result .summary")
            assert page.execute_script(
                "return document.documentElement.scrollWidth") <= 375, name
            shot(page, f"phone-{name}", width=375, mobile=True)
        phone()
        page.get(served.url + "/")
        tool.wait_for(page, "#models .card")
        assert page.execute_script("return document.documentElement.scrollWidth") <= 375
        shot(page, "phone-index", width=375, mobile=True)
    finally:
        page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_token_is_asked_once_and_kept_for_the_tab_only(page, token_server):
    from selenium.webdriver.common.keys import Keys

    page.get(token_server.url + "/")
    tool.wait_for(page, "#token-form")
    assert "needs a token" in by_css(page, "#token-why").text
    assert "401" in by_css(page, "#error").text
    assert page.switch_to.active_element.get_attribute("id") == "token"
    by_css(page, "#token").send_keys("wrong-token", Keys.ENTER)
    wait(page, lambda: "refused" in by_css(page, "#token-why").text, "the refusal")
    by_css(page, "#token").send_keys(TOKEN, Keys.ENTER)
    tool.wait_for(page, "#models .card")
    assert not by_css(page, "#token-form").is_displayed()
    storage = page.execute_script(
        "return [sessionStorage.getItem(arguments[0]), localStorage.length, document.cookie]",
        TOKEN_KEY)
    assert storage == [TOKEN, 0, ""]
    # the next page of the tab does not ask again
    form = open_model(page, token_server, "sentiment")
    assert not by_css(page, "#token-form").is_displayed()
    form.find_element("css selector", "button[type=submit]").click()
    tool.wait_for(page, "#result .bars")
    shot(page, "token-classification-page")
    # another tab does not have it
    first = page.current_window_handle
    page.switch_to.new_window("tab")
    try:
        page.get(token_server.url + "/")
        tool.wait_for(page, "#token-form")
    finally:
        page.close()
        page.switch_to.window(first)
    # forgetting it asks again
    by_css(page, "#forget-token").click()
    tool.wait_for(page, "#token-form")
    assert page.execute_script("return sessionStorage.getItem(arguments[0])", TOKEN_KEY) is None


def test_an_evaluation_report_shows_its_pictures_in_the_browser(page, trained_run, exported,
                                                                  tmp_path):
    """report.html of evaluate --report --compare, opened from disk: every picture decodes,
    the two models stand side by side, nothing is fetched."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    result = run_cli("evaluate", str(trained_run), "--compare", str(exported), "--data",
                     str(tool.SENTIMENT / "validation.jsonl"), "--report", str(out))
    assert result.returncode == 0, result.stderr
    page.get((out / "report.html").as_uri())
    tool.wait_for(page, "img")
    images = all_css(page, "img")
    assert len(images) == 4
    assert all(page.execute_script("return arguments[0].complete && "
                                   "arguments[0].naturalWidth > 100", i) for i in images)
    headings = [h.text for h in all_css(page, "h2")]
    assert headings[:3] == ["Metrics", "Confusion matrix", "Scores per label"]
    columns = all_css(page, ".side > div")
    assert len(columns) == 4 and columns[0].location["y"] == columns[1].location["y"]
    resources = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []
    shot(page, "report")
