"""Issue 11's "Done when", end to end: a task file mixing all five kinds of task (topic classification, NER, a
sentence-pair classification, a regression and a multilabel task) trains, evaluates, predicts and saves through
run_mtl.py in a real subprocess; the saved folder reloads through `AutoModel` (after `import mtl_hf`) and through
remote code in an interpreter that cannot import mtl_hf, with the same logits; it serves texts and pairs through
`MultiTaskPipeline`, and its card describes every task."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
import yaml

import mtl_hf  # noqa: F401  (registers the model with AutoModel)
from mtl_hf import MultiTaskModel, MultiTaskPipeline
from mtl_hf.tokenization import encode_text_pairs, encode_texts
from tests.conftest import save_tiny_bert
from tests.test_run_mtl import run
from tests.test_task_types import TOPICS
from tests.trainer_fixtures import pair_rows, sentiment_rows, topic_set_rows
from tests.trainer_fixtures import NER, TOPIC, write_task_files

SPLITS = (("train", 32, 10), ("dev", 16, 11), ("test", 7, 12))  # (name in the file names, rows, seed)
TAGS_THRESHOLD = 0.4


def write_new_task_files(data: Path) -> None:
    """`pair_*.jsonl` (text, text_b, label), `sentiment_*.tsv` (sentence, score) and `tags_*.csv` (text,
    topics as `business|sport`)."""
    for split, n, seed in SPLITS:
        rows = pair_rows(n, seed)
        with (data / f"pair_{split}.jsonl").open("w") as handle:
            for values in zip(rows["text"], rows["text_b"], rows["label"]):
                handle.write(json.dumps(dict(zip(("text", "text_b", "label"), values))) + "\n")
        rows = sentiment_rows(n, seed)
        (data / f"sentiment_{split}.tsv").write_text(
            "sentence\tscore\n" + "".join(f"{text}\t{score:g}\n" for text, score in zip(rows["text"], rows["label"])))
        rows = topic_set_rows(n, seed)
        with (data / f"tags_{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "topics"])
            writer.writerows([text, "|".join(labels)] for text, labels in zip(rows["text"], rows["labels"]))


def files(name: str, ext: str) -> dict[str, str]:
    return {"train_file": f"data/{name}_train.{ext}", "validation_file": f"data/{name}_dev.{ext}",
            "test_file": f"data/{name}_test.{ext}"}


TASKS = [
    {"name": "topic", "type": "classification", **files("topic", "jsonl"), "text_column_name": "sentence",
     "label_column_name": "category"},
    {"name": "ner", "type": "ner", **files("ner", "conll"), "labels": NER.labels},
    # The architecture's own classifier on two tasks, the linear head on the other two sequence tasks.
    {"name": "pair", "type": "classification", **files("pair", "jsonl"), "text_pair_column_name": "text_b",
     "classifier": "native"},
    {"name": "sentiment", "type": "regression", **files("sentiment", "tsv"), "text_column_name": "sentence",
     "label_column_name": "score", "main_metric": "spearmanr", "classifier": "native"},
    {"name": "tags", "type": "multilabel", **files("tags", "csv"), "label_column_name": "topics",
     "label_delimiter": "|", "threshold": TAGS_THRESHOLD},
]


CARD = {"license": "apache-2.0", "language": "en", "tags": ["news", "sentiment"], "datasets": ["conll2003"]}


def train_task_file(root: Path, tokenizer_dir: Path, tasks: list[dict], epochs: int, max_seq_length: int,
                    card: dict | None = None) -> dict[str, Path]:
    """run_mtl.py in a subprocess on `tasks` (data files under `root/data`; `card`: the task file's card section)
    from a tiny BERT: train, evaluate and predict into `root/out`."""
    encoder = save_tiny_bert(root / "tiny-bert", tokenizer_dir)
    (root / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks, **({"card": card} if card else {})}))
    out = root / "out"
    result = run(["--model_name_or_path", str(encoder), "--tasks", "tasks.yaml", "--output_dir", str(out),
                  "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", str(epochs),
                  "--per_device_train_batch_size", "8", "--learning_rate", "8e-3", "--max_seq_length",
                  str(max_seq_length), "--logging_steps", "10", "--save_strategy", "no", "--seed", "1",
                  "--report_to", "none", "--use_cpu"], cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"root": root, "out": out}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task_types_run")
    write_task_files(root / "data")
    write_new_task_files(root / "data")
    return train_task_file(root, tokenizer_dir, TASKS, epochs=5, max_seq_length=32, card=CARD)


def test_every_type_is_evaluated_and_combined(trained: dict[str, Path]) -> None:
    results = json.loads((trained["out"] / "all_results.json").read_text())
    expected = {
        "topic": ("accuracy", "macro_f1"), "ner": ("f1", "precision", "recall", "token_accuracy"),
        "pair": ("accuracy", "macro_f1"), "sentiment": ("pearson", "spearmanr", "mse"),
        "tags": ("micro_f1", "macro_f1", "subset_accuracy"),
    }
    for split in ("eval", "test"):
        for task, names in expected.items():
            for name in (*names, "loss"):
                value = results[f"{split}_{task}_{name}"]
                assert math.isfinite(value), (split, task, name)
                if name == "mse" or name == "loss":
                    assert value >= 0
                elif name in ("pearson", "spearmanr"):
                    assert -1 <= value <= 1
                else:
                    assert 0 <= value <= 1, (split, task, name)
    assert results["train_sentiment_samples"] == 32 and results["eval_tags_samples"] == 16
    assert results["test_pair_samples"] == 7
    # Learnt from single words within the short run (about 0.7 here; an untrained head correlates by chance only):
    # the score counts "good" minus "bad". The NER tags follow the words themselves.
    assert results["eval_sentiment_pearson"] > 0.5, results["eval_sentiment_pearson"]
    assert results["eval_ner_f1"] > 0.5, results["eval_ner_f1"]
    # combined_score averages the main metrics: the types' defaults, and spearmanr where the task file says so.
    for split in ("eval", "test"):
        mains = [results[f"{split}_{key}"] for key in ("topic_accuracy", "ner_f1", "pair_accuracy",
                                                       "sentiment_spearmanr", "tags_micro_f1")]
        assert results[f"{split}_combined_score"] == pytest.approx(sum(mains) / 5)


def test_prediction_files_have_each_types_format(trained: dict[str, Path]) -> None:
    out, data = trained["out"], trained["root"] / "data"
    test_rows = 7
    for task in ("topic", "pair", "sentiment", "tags"):
        lines = (out / f"predict_results_{task}.txt").read_text().split("\n")
        assert lines[0] == "index\tprediction" and lines[-1] == "", task
        assert [line.split("\t")[0] for line in lines[1:-1]] == [str(i) for i in range(test_rows)], task
    values = {task: [line.split("\t", 1)[1] for line in (out / f"predict_results_{task}.txt").read_text().splitlines()[1:]]
              for task in ("topic", "pair", "sentiment", "tags")}
    assert set(values["topic"]) <= set(TOPIC.labels)
    assert set(values["pair"]) <= {"different", "same"}
    assert all(math.isfinite(float(value)) for value in values["sentiment"])
    # Multilabel: the labels whose probability reaches the task's threshold (the pipeline's scores), in label order,
    # joined by the task's delimiter ("|" here), empty where none passed.
    pipe = MultiTaskPipeline.from_pretrained(str(out))
    texts = [row["text"] for row in csv.DictReader((data / "tags_test.csv").open())]
    checked = 0
    for text, value in zip(texts, values["tags"]):
        scores = {entry["label"]: entry["score"] for entry in pipe(text, tasks="tags", all_scores=True)["tags"]}
        if any(abs(score - TAGS_THRESHOLD) < 1e-4 for score in scores.values()):
            continue  # too close to call: batch padding may move the score across the threshold
        assert value == "|".join(label for label in TOPICS if scores[label] >= TAGS_THRESHOLD), (text, scores)
        checked += 1
    assert checked >= 5
    assert any("|" in value for value in values["tags"]), values["tags"]  # the delimiter shows
    ner_lines = (out / "predict_results_ner.txt").read_text().splitlines()
    sentences = (data / "ner_test.conll").read_text().split("\n\n")[1:]
    assert [len(line.split()) for line in ner_lines] == [len(s.strip().splitlines()) for s in sentences]
    assert {tag for line in ner_lines for tag in line.split()} <= set(NER.labels)

    # The regression file holds the model's values: the pipeline gives the same score for each test text.
    texts = [line.split("\t")[0] for line in (data / "sentiment_test.tsv").read_text().splitlines()[1:]]
    scores = [result["sentiment"]["score"] for result in pipe(texts, tasks="sentiment")]
    assert [float(value) for value in values["sentiment"]] == pytest.approx(scores, abs=1e-4)


def test_config_lists_the_five_tasks_with_their_fields(trained: dict[str, Path]) -> None:
    config = json.loads((trained["out"] / "config.json").read_text())
    tasks = {task["name"]: task for task in config["tasks"]}
    assert [task["name"] for task in config["tasks"]] == ["topic", "ner", "pair", "sentiment", "tags"]
    assert {name: task["type"] for name, task in tasks.items()} == {
        "topic": "classification", "ner": "ner", "pair": "classification", "sentiment": "regression",
        "tags": "multilabel"}
    assert tasks["topic"]["labels"] == TOPIC.labels and "text_pair_column_name" not in tasks["topic"]
    assert tasks["ner"]["labels"] == NER.labels and tasks["ner"]["tag_scheme"] == "IOB2"
    assert tasks["pair"]["labels"] == ["different", "same"] and tasks["pair"]["text_pair_column_name"] == "text_b"
    assert tasks["sentiment"].get("labels") is None and tasks["sentiment"]["main_metric"] == "spearmanr"
    assert tasks["tags"]["labels"] == TOPICS and tasks["tags"]["threshold"] == TAGS_THRESHOLD
    for name in ("topic", "ner", "pair", "sentiment"):
        assert "threshold" not in tasks[name], name
    assert "tag_scheme" not in tasks["tags"] and "pooling" not in tasks["ner"]
    assert {name: task.get("classifier") for name, task in tasks.items()} == {
        "topic": "linear", "ner": None, "pair": "native", "sentiment": "native", "tags": "linear"}


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["mtl_hf"] = None  # an editable install would still be found: make `import mtl_hf` impossible
    try:
        import mtl_hf  # noqa: F401
        raise SystemExit("mtl_hf is importable")
    except ImportError:
        pass
    import torch, transformers
    model_dir, inputs_path, out_path = sys.argv[1:4]
    model = transformers.AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert "mtl_hf" not in type(model).__module__, type(model).__module__
    data = torch.load(inputs_path)
    with torch.no_grad():
        logits = {(kind, task): model(**inputs, task=task).logits
                  for kind, inputs in data["inputs"].items() for task in data["tasks"]}
    torch.save({"logits": logits, "class": type(model).__module__}, out_path)
    """
)


def remote_logits(model_dir: Path, inputs: dict[str, dict[str, torch.Tensor]], tasks: list[str], tmp_path: Path
                  ) -> dict:
    """`{"logits": {(kind, task): logits}, "class": module}` of the model in `model_dir` loaded with remote code by
    an isolated interpreter (`-I`) that cannot import mtl_hf, for each batch of `inputs` and each task."""
    torch.save({"inputs": inputs, "tasks": tasks}, tmp_path / "inputs.pt")
    (tmp_path / "load_remote.py").write_text(REMOTE_SCRIPT)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "load_remote.py"), str(model_dir), str(tmp_path / "inputs.pt"),
         str(tmp_path / "out.pt")], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "out.pt")


def test_reloads_through_automodel_and_remote_code_with_the_same_logits(trained: dict[str, Path], tmp_path: Path
                                                                        ) -> None:
    out = trained["out"]
    model = transformers.AutoModel.from_pretrained(out).eval()
    assert isinstance(model, MultiTaskModel)
    assert model.task_names == ["topic", "ner", "pair", "sentiment", "tags"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    keys = ("input_ids", "attention_mask", "token_type_ids")
    single = encode_texts(tokenizer, ["John visited Paris.", "good good app, bad market"], padding=True,
                          return_tensors="pt")
    pair = encode_text_pairs(tokenizer, ["the market rose", "a goal"], ["profit fell today", "the new phone app"],
                             padding=True, return_tensors="pt")
    inputs = {"single": {k: single[k] for k in keys}, "pair": {k: pair[k] for k in keys}}
    assert pair["token_type_ids"].max() == 1
    with torch.no_grad():
        expected = {(kind, task): model(**batch, task=task).logits
                    for kind, batch in inputs.items() for task in model.task_names}
    assert expected[("single", "sentiment")].shape == (2, 1) and expected[("pair", "tags")].shape == (2, 3)
    assert expected[("single", "ner")].shape[:2] == single["input_ids"].shape

    remote = remote_logits(out, inputs, model.task_names, tmp_path)
    assert remote["class"].startswith("transformers_modules")
    assert remote["logits"].keys() == expected.keys()
    for key, logits in expected.items():
        assert torch.equal(remote["logits"][key], logits), key


def test_the_pipeline_serves_a_text_and_a_pair(trained: dict[str, Path]) -> None:
    pipe = MultiTaskPipeline.from_pretrained(str(trained["out"]))
    result = pipe("Good news: the team won the cup in London.")
    assert set(result) == {"topic", "ner", "sentiment", "tags"}
    assert result["topic"]["label"] in TOPIC.labels and 0 < result["topic"]["score"] <= 1
    assert all({"entity_group", "score", "word", "start", "end"} <= set(span) for span in result["ner"])
    assert set(result["sentiment"]) == {"score"} and isinstance(result["sentiment"]["score"], float)
    assert all(entry["label"] in TOPICS and entry["score"] >= TAGS_THRESHOLD for entry in result["tags"])
    every = pipe("the market and the team", tasks="tags", all_scores=True)["tags"]
    assert sorted(entry["label"] for entry in every) == TOPICS
    assert all(entry["passed"] is (entry["score"] >= TAGS_THRESHOLD) for entry in every)

    pair = pipe({"text": "the market rose", "text_pair": "profit fell"})
    assert set(pair) == {"pair"} and pair["pair"]["label"] in ("different", "same")
    assert 0.5 <= pair["pair"]["score"] <= 1
    both = pipe(["the market rose", {"text": "the market rose", "text_pair": "profit fell"}])
    assert both[1] == pair and set(both[0]) == set(result)


def test_the_card_carries_the_task_files_metadata_and_every_tasks_results(trained: dict[str, Path]) -> None:
    """The task file's `card` section reaches the Hub metadata, which huggingface_hub parses, with the eval results
    of every task in the model index."""
    from huggingface_hub import ModelCard

    data = ModelCard.load(trained["out"] / "README.md").data
    assert data.license == "apache-2.0" and data.language == ["en"] and data.datasets == ["conll2003"]
    assert {"news", "sentiment", "mtl_hf", "token-classification"} <= set(data.tags)
    assert {result.task_name for result in data.eval_results} >= {"topic", "ner", "pair", "sentiment", "tags"}
    main = {(result.task_name, result.dataset_split, result.metric_type): result.metric_value
            for result in data.eval_results}
    results = json.loads((trained["out"] / "all_results.json").read_text())
    assert main[("pair", "test", "accuracy")] == pytest.approx(results["test_pair_accuracy"])


def test_the_card_describes_every_task(trained: dict[str, Path]) -> None:
    card = (trained["out"] / "README.md").read_text()
    assert "\n# mtl_hf multi-task model: topic, ner, pair, sentiment, tags\n" in card
    for row in ("| topic | classification | `business`, `sport`, `tech` | 1 |",
                "| ner | ner | `O`, `B-PER`, `I-PER`, `B-LOC`, `I-LOC` | 1 |",
                "| pair | classification (text pairs) | `different`, `same` | 1 |",
                "| sentiment | regression | one score (targets as in the data, not scaled) | 1 |",
                "| tags | multilabel | `business`, `sport`, `tech` (any number per example; threshold 0.4) | 1 |"):
        assert row in card, row
    for task, main in (("topic", "accuracy"), ("ner", "f1"), ("pair", "accuracy"), ("sentiment", "spearmanr"),
                       ("tags", "micro_f1")):
        rows = [line for line in card.splitlines() if line.startswith(f"| {task} | eval | ")]
        assert rows and rows[0].startswith(f"| {task} | eval | {main} | "), (task, rows[:1])
        assert f"- **{task}**: files `data/{task}_train." in card, task


def test_native_heads_export_and_serve_as_transformers_classifiers(trained: dict[str, Path], tmp_path: Path) -> None:
    """The tasks trained with `classifier: native` export with the command (no linear head could) and transformers'
    own text-classification pipeline gives what mtl_hf's pipeline gives: the pair's label and probability, the
    regression value."""
    out = trained["out"]
    for task in ("pair", "sentiment"):
        result = subprocess.run([sys.executable, "-m", "mtl_hf.export", str(out), task, str(tmp_path / task)],
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "AutoModelForSequenceClassification" in result.stdout
    mtl = MultiTaskPipeline.from_pretrained(str(out))
    pair = {"text": "the market rose", "text_pair": "profit fell"}
    served = transformers.pipeline("text-classification", model=str(tmp_path / "pair"))([pair])[0]
    expected = mtl(pair)["pair"]
    assert served["label"] == expected["label"]
    assert served["score"] == pytest.approx(expected["score"], abs=1e-5)
    text = "Good news: the team won the cup in London."
    served = transformers.pipeline("text-classification", model=str(tmp_path / "sentiment"))([text])[0]
    assert served["score"] == pytest.approx(mtl(text, tasks="sentiment")["sentiment"]["score"], abs=1e-5)
