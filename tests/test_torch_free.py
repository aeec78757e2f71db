"""The runtime, the manifest, the plugins and the CLI entry never import torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

BLOCK = textwrap.dedent('''
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "optimum"):
                raise ImportError(f"blocked import of {name}")
    sys.meta_path.insert(0, Block())
''')


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def test_imports_and_listing_commands_stay_torch_free():
    result = run_python('''
        import sys
        import nlpforge, nlpforge.runtime, nlpforge.manifest, nlpforge.plugins, nlpforge.tasks
        import nlpforge.cli.main, nlpforge_text_classification
        from nlpforge.cli.main import cli
        for args in (["--help"], ["tasks"], ["plugins", "--json"], ["predict", "--help"],
                     ["train", "--help"], ["export", "--help"]):
            try:
                cli.main(args=args, prog_name="nlpforge", standalone_mode=False)
            except SystemExit:
                pass
        heavy = [m for m in ("torch", "transformers", "optimum") if m in sys.modules]
        print("HEAVY", heavy)
    ''')
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_predict_runs_with_torch_unimportable(exported):
    result = run_python(f'''
        import json, sys
        import nlpforge
        predictor = nlpforge.load({str(exported)!r})
        out = predictor.predict(["a wonderful film", {{"text": "cold food"}}])
        print(json.dumps(out))
        from nlpforge.cli.main import cli
        try:
            cli.main(args=["predict", {str(exported)!r}, "great service"], prog_name="nlpforge")
        except SystemExit as e:
            assert e.code in (0, None), e.code
        assert "torch" not in sys.modules
    ''')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    batch, single = json.loads(lines[0]), json.loads(lines[1])
    import nlpforge  # here torch is importable: the same answers either way

    predictor = nlpforge.load(str(exported))
    expected = predictor.predict(["a wonderful film", "cold food", "great service"])
    for got, want in zip([*batch, single], expected):
        assert got.keys() == {"label", "score", "scores"}
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
    assert result.stderr == ""
