"""The trainer end to end: resume after a signal, accumulation, DDP, early stopping, config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import EXAMPLES, run_cli, wait_until

TRAIN = str(EXAMPLES / "train.jsonl")
VALID = str(EXAMPLES / "validation.jsonl")


@pytest.fixture(scope="module")
def still_bert(tmp_path_factory) -> Path:
    """A tiny BERT without dropout: runs that should match can match exactly."""
    from nlpforge.testing import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("still") / "bert", dropout=0.0)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=key)


def base_args(model: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "--task", "text-classification", "--model", str(model), "--train", TRAIN,
            "--output", str(output), "--batch-size", "8", "--lr", "1e-3", "--quiet",
            "--no-tensorboard", *extra]


def stop_after_checkpoint(proc: subprocess.Popen, run: Path, name: str) -> str:
    """SIGTERM a training process once its checkpoint ``name`` exists; its stderr, after
    checking it exited as a stopped run does."""

    def saved() -> bool:
        assert proc.poll() is None, proc.communicate()
        return (run / "checkpoints" / name).exists()

    try:
        wait_until(saved, 120, f"checkpoint {name}", interval=0.05)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    return err


def test_interrupted_then_resumed_equals_uninterrupted(tiny_bert, tmp_path):
    """With dropout on: RNG states and the data position are restored exactly."""
    extra = ("--max-steps", "70", "--save-steps", "5", "--validation", VALID)
    straight = tmp_path / "straight"
    result = run_cli(*base_args(tiny_bert, straight, *extra))
    assert result.returncode == 0, result.stderr

    run = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "nlpforge", *base_args(tiny_bert, run, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    err = stop_after_checkpoint(proc, run, "step-10")
    assert "--resume" in err and "Traceback" not in err
    assert not (run / "nlpforge.json").exists()
    stopped = json.loads(sorted((run / "checkpoints").glob("step-*"),
                                key=lambda p: int(p.name[5:]))[-1].joinpath("trainer_state.json").read_text())
    assert 10 <= stopped["step"] < 70

    unfinished = run_cli("export", str(run), "--output", str(tmp_path / "e"))
    assert unfinished.returncode != 0 and "training has not finished" in unfinished.stderr
    again = run_cli("train", "--task", "text-classification", "--model", str(tiny_bert),
                    "--train", TRAIN, "--output", str(run), "--quiet")
    assert again.returncode != 0 and "--resume" in again.stderr

    resumed = run_cli("train", "--resume", "--output", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 70
    assert_same_weights(straight, run)
    a = json.loads((straight / "nlpforge.json").read_text())["metrics"]
    b = json.loads((run / "nlpforge.json").read_text())["metrics"]
    assert a["accuracy"] == b["accuracy"]
    changed = run_cli("train", "--resume", "--output", str(run), "--lr", "0.5")
    assert changed.returncode != 0


def test_accumulated_micro_batches_equal_one_big_batch(still_bert):
    """Uneven micro-batches (8, 8, 4 rows) weighted by their units give the big batch's gradient."""
    from nlpforge.runtime.tokenizer import Tokenizer
    from nlpforge.training.loop import backward_micro_batches, to_torch
    from nlpforge_text_classification import TextClassification

    rows = [json.loads(line) for line in (EXAMPLES / "train.jsonl").read_text().splitlines()[:20]]
    task = TextClassification()
    task.fit(rows)
    tok = Tokenizer.from_dir(still_bert, max_length=32, pad_id=0)
    model = task.build_model(str(still_bert))

    def tensors(part):
        out = to_torch(task.encode(part, tok), ["input_ids", "attention_mask", "token_type_ids"])
        out.update(to_torch(task.targets(part)))
        return out

    def grads():
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    task.compute_loss(model, tensors(rows)).backward()
    big = grads()
    model.zero_grad()
    micro = [(tensors(rows[i:j]), j - i) for i, j in ((0, 8), (8, 16), (16, 20))]
    loss_sum = backward_micro_batches(task, model, micro, total_units=20)
    small = grads()
    assert big.keys() == small.keys()
    for name in big:
        torch.testing.assert_close(small[name], big[name], atol=1e-6, rtol=1e-4, msg=name)
    with torch.no_grad():
        whole = float(task.compute_loss(model, tensors(rows)))
    assert loss_sum / 20 == pytest.approx(whole, rel=1e-5)


def test_two_processes_equal_one_process_with_twice_the_batch(still_bert, tmp_path):
    single, double = tmp_path / "single", tmp_path / "ddp"
    common = ("--max-steps", "6", "--no-group-by-length", "--validation", VALID)
    one = run_cli(*[a if a != "8" else "16" for a in base_args(still_bert, single, *common)])
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--standalone", "-m", "nlpforge",
                          *base_args(still_bert, double, *common)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_weights(single, double, atol=2e-5)
    manifest = json.loads((double / "nlpforge.json").read_text())
    assert manifest["provenance"]["processes"] == 2
    a = json.loads((single / "nlpforge.json").read_text())["metrics"]["accuracy"]
    assert manifest["metrics"]["accuracy"] == pytest.approx(a)


def test_early_stopping(tiny_bert, tmp_path):
    run = tmp_path / "run"
    result = run_cli(*base_args(tiny_bert, run, "--validation", VALID, "--epochs", "10",
                                "--lr", "1e-9", "--early-stopping-patience", "1",
                                "--early-stopping-min-delta", "0.5", "--eval-strategy", "steps",
                                "--eval-steps", "5"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["stopped_early"] and summary["steps"] == 10
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if "eval" in line]
    assert [e["step"] for e in evals] == [5, 10]


def test_config_file_and_flags(tiny_bert, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(f'task = "text-classification"\nmodel = "{tiny_bert}"\ntrain = "{TRAIN}"\n'
                      f'max-steps = 3\nbatch_size = 4\nscheduler = "cosine"\nlr = 0.001\n'
                      f'[task_options]\nmulti_label = false\n')
    run = tmp_path / "run"
    result = run_cli("train", "--config", str(config), "--output", str(run), "--batch-size", "2",
                     "--quiet", "--no-tensorboard")
    assert result.returncode == 0, result.stderr
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["batch_size"] == 2 and saved["max_steps"] == 3 and saved["scheduler"] == "cosine"
    assert json.loads((run / "nlpforge.json").read_text())["training"]["batch_size"] == 2

    config.write_text('colour = "blue"\n')
    bad = run_cli("train", "--config", str(config), "--output", str(tmp_path / "x"))
    assert bad.returncode != 0 and "unknown setting 'colour'" in bad.stderr
    config.write_text('task = "text-classification"\nmodel = "m"\ntrain = "t"\nepochs = "many"\n')
    bad = run_cli("train", "--config", str(config), "--output", str(tmp_path / "x"))
    assert bad.returncode != 0 and "--epochs: expected a number" in bad.stderr
    yaml_config = tmp_path / "train.yaml"
    yaml_config.write_text("warmup_ratio: 2\n")
    bad = run_cli("train", "--config", str(yaml_config), "--task", "text-classification",
                  "--model", "m", "--train", "t", "--output", str(tmp_path / "x"))
    assert bad.returncode != 0 and "--warmup-ratio must be in [0, 1)" in bad.stderr


def test_freeze_base_trains_only_the_head(still_bert, tmp_path):
    run = tmp_path / "run"
    result = run_cli(*base_args(still_bert, run, "--max-steps", "3", "--freeze-base",
                                "--precision", "bf16", "--gradient-checkpointing"))
    assert result.returncode == 0, result.stderr
    before = load_file(str(still_bert / "model.safetensors"))
    after = weights(run)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(after[key], before[key.removeprefix("bert.")])
    assert "classifier.weight" in after


def test_lora_is_merged_on_save(tiny_bert, tmp_path):
    """The saved weights are the base model's with the trained adapter merged in: rebuilt here
    from the last checkpoint's adapter (PEFT's own ``merge_and_unload``), they are equal; the
    layers LoRA adapts differ from the base, the others do not."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = tmp_path / "run"
    result = run_cli(*base_args(tiny_bert, run, "--max-steps", "3", "--save-steps", "3",
                                "--lora-r", "4", "--lora-target-modules", "query,value"))
    assert result.returncode == 0, result.stderr
    merged = weights(run)
    assert not [k for k in merged if "lora" in k] and "classifier.weight" in merged

    adapter = load_file(str(run / "checkpoints" / "step-3" / "model.safetensors"))
    assert any("lora_B" in k for k in adapter)  # the checkpoint holds the PEFT model
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["query", "value"],
                                             modules_to_save=["classifier"]))
    model.load_state_dict(adapter)
    plain = model.merge_and_unload().eval()
    rebuilt = plain.state_dict()
    assert rebuilt.keys() == merged.keys()
    for key in merged:
        torch.testing.assert_close(merged[key], rebuilt[key], atol=1e-6, rtol=0, msg=key)

    base = load_file(str(tiny_bert / "model.safetensors"))
    layer = "encoder.layer.0.attention.self"
    for name in ("query", "value"):
        assert not torch.allclose(merged[f"bert.{layer}.{name}.weight"],
                                  base[f"{layer}.{name}.weight"], atol=1e-4), name
    torch.testing.assert_close(merged[f"bert.{layer}.key.weight"], base[f"{layer}.key.weight"])

    predicted = run_cli("predict", str(run), "a fine film")  # the run dir loads as saved
    assert predicted.returncode == 0, predicted.stderr
    with torch.no_grad():
        probs = plain(**AutoTokenizer.from_pretrained(run)("a fine film", return_tensors="pt")
                      ).logits.softmax(-1)[0]
    labels = json.loads((run / "nlpforge.json").read_text())["task"]["state"]["labels"]
    got = json.loads(predicted.stdout)
    assert got["label"] == labels[int(probs.argmax())]
    assert got["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_tensorboard_and_metrics_log(tiny_bert, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--task", "text-classification", "--model", str(tiny_bert),
                     "--train", TRAIN, "--output", str(run), "--max-steps", "4",
                     "--logging-steps", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    assert all(x["examples_per_s"] > 0 and x["tokens_per_s"] > 0 for x in lines)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_split_by_length_trains_the_same_weights(still_bert, tmp_path, monkeypatch):
    """Micro-batches of similar length are a cheaper way to the same gradient: the weights
    after training match those of unsplit batches."""
    from nlpforge.training import loop
    from nlpforge.training.batches import split_by_length
    from nlpforge.training.config import TrainConfig

    splits = []

    def eager(lengths):  # a cost of 1 token per pass: split wherever padding can be saved
        parts = split_by_length(lengths, cost=1)
        splits.append(len(parts))
        return parts

    monkeypatch.setattr(loop, "split_by_length", eager)
    common = dict(task="text-classification", model=str(still_bert), train=TRAIN, batch_size=8,
                  lr=1e-3, max_steps=6, group_by_length=False, progress=False, tensorboard=False,
                  validation=VALID)
    loop.train(TrainConfig(output=str(tmp_path / "plain"), **common))
    assert not splits
    loop.train(TrainConfig(output=str(tmp_path / "split"), split_by_length=True, **common))
    assert len(splits) == 6 and max(splits) > 1
    assert_same_weights(tmp_path / "plain", tmp_path / "split", atol=2e-5)
    resolved = json.loads((tmp_path / "split" / "train_config.json").read_text())
    assert resolved["split_by_length"] is True
