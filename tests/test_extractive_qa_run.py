"""Issue 12's "Done when", end to end: a task file with extractive QA (its train split in SQuAD's nested JSON, the
others as flat JSON lines) beside topic classification and NER trains, evaluates and predicts through run_mtl.py in
a real subprocess; `predict_results_<task>.json` maps ids to the answers the pipeline gives for the same questions;
the saved folder reloads through remote code in an interpreter that cannot import mtl_hf with the same QA logits;
the pipeline answers with correct character offsets, also on a context far longer than the model's maximum."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers

import mtl_hf  # noqa: F401  (registers the model with AutoModel)
from mtl_hf import MultiTaskPipeline
from mtl_hf.tokenization import encode_questions
from tests.test_task_types_run import remote_logits, train_task_file
from tests.trainer_fixtures import NER, qa_rows, write_task_files

MAX_SEQ_LENGTH = 48
SPLITS = (("train", 96, 20), ("dev", 16, 21), ("test", 9, 22))  # (name in the file names, rows, seed)


def write_qa_files(data: Path) -> None:
    """`where_train.json` in SQuAD's nested layout (one paragraph per question), `where_{dev,test}.jsonl` flat. The
    contexts run to several windows, so that training sees windows without the answer, as long contexts have."""
    for split, n, seed in SPLITS:
        rows = qa_rows(n, seed, filler=(2, 30))
        if split == "train":
            paragraphs = [{"context": context, "qas": [{"id": id_, "question": question, "answers": [
                {"text": text, "answer_start": start}
                for text, start in zip(answers["text"], answers["answer_start"])]}]}
                for id_, question, context, answers in zip(rows["id"], rows["question"], rows["context"],
                                                           rows["answers"])]
            document = {"version": "1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]}
            (data / "where_train.json").write_text(json.dumps(document))
            continue
        with (data / f"where_{split}.jsonl").open("w") as handle:
            for values in zip(*rows.values()):
                handle.write(json.dumps(dict(zip(rows, values))) + "\n")


TASKS = [
    {"name": "topic", "type": "classification", "train_file": "data/topic_train.jsonl",
     "validation_file": "data/topic_dev.jsonl", "test_file": "data/topic_test.jsonl",
     "text_column_name": "sentence", "label_column_name": "category"},
    {"name": "ner", "type": "ner", "train_file": "data/ner_train.conll", "validation_file": "data/ner_dev.conll",
     "test_file": "data/ner_test.conll", "labels": NER.labels},
    {"name": "where", "type": "extractive_qa", "train_file": "data/where_train.json",
     "validation_file": "data/where_dev.jsonl", "test_file": "data/where_test.jsonl", "doc_stride": 8,
     "max_answer_length": 5},
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qa_run")
    write_task_files(root / "data")
    write_qa_files(root / "data")
    return train_task_file(root, tokenizer_dir, TASKS, epochs=12, max_seq_length=MAX_SEQ_LENGTH)


def test_qa_is_evaluated_and_combined_with_the_other_tasks(trained: dict[str, Path]) -> None:
    results = json.loads((trained["out"] / "all_results.json").read_text())
    for split in ("eval", "test"):
        for name in ("f1", "exact_match", "loss"):
            assert math.isfinite(results[f"{split}_where_{name}"]), (split, name)
        assert 0 <= results[f"{split}_where_exact_match"] <= results[f"{split}_where_f1"] <= 1
        mains = [results[f"{split}_{key}"] for key in ("topic_accuracy", "ner_f1", "where_f1")]
        assert results[f"{split}_combined_score"] == pytest.approx(sum(mains) / 3)
    # The place follows "lives in": learnt in the short run (an untrained head picks filler words).
    assert results["eval_where_f1"] > 0.8, results["eval_where_f1"]


def test_predictions_are_a_json_map_from_id_to_the_pipelines_answer(trained: dict[str, Path]) -> None:
    out, data = trained["out"], trained["root"] / "data"
    rows = [json.loads(line) for line in (data / "where_test.jsonl").read_text().splitlines()]
    predicted = json.loads((out / "predict_results_where.json").read_text())
    assert list(predicted) == [row["id"] for row in rows]
    pipe = MultiTaskPipeline.from_pretrained(str(out))
    served = pipe([{"question": row["question"], "context": row["context"]} for row in rows], tasks="where")
    assert [result["where"]["answer"] for result in served] == list(predicted.values())
    right = sum(answer == row["answers"]["text"][0] for answer, row in zip(predicted.values(), rows))
    assert right >= len(rows) - 2, (predicted, [row["answers"]["text"][0] for row in rows])
    assert not (out / "predict_results_where.txt").exists()


def test_config_holds_the_qa_settings_and_no_columns(trained: dict[str, Path]) -> None:
    tasks = {task["name"]: task for task in json.loads((trained["out"] / "config.json").read_text())["tasks"]}
    assert tasks["where"] == {"name": "where", "type": "extractive_qa", "labels": None, "weight": 1.0,
                              "dropout": 0.0, "doc_stride": 8, "max_answer_length": 5, "n_best_size": 20,
                              "version_2_with_negative": False, "null_score_diff_threshold": 0.0}
    assert "doc_stride" not in tasks["topic"] and "doc_stride" not in tasks["ner"]


def test_the_pipeline_answers_with_character_offsets_beyond_the_models_maximum(trained: dict[str, Path]) -> None:
    pipe = MultiTaskPipeline.from_pretrained(str(trained["out"]))
    filler = " ".join(["the old and the new big a"] * 12)  # filler words of the training contexts
    long_context = f"{filler} mary lives in berlin today . {filler}"
    question = "where does mary live ?"
    tokenizer = transformers.AutoTokenizer.from_pretrained(trained["out"])
    windows = encode_questions(tokenizer, [question], [long_context], MAX_SEQ_LENGTH, 8)["input_ids"]
    assert len(windows) >= 5  # far longer than one window: the answer sits in a middle one
    short = {"question": "where does john live ?", "context": "a big john lives in rome ."}
    results = pipe([short, {"question": question, "context": long_context}, "the team won the cup"])
    for item, result in zip((short, {"context": long_context}), results):
        answer = result["where"]
        assert set(answer) == {"answer", "score", "start", "end"} and 0 < answer["score"] <= 1
        assert item["context"][answer["start"]:answer["end"]] == answer["answer"]
    assert results[0]["where"]["answer"] == "rome" and results[0]["where"]["start"] == short["context"].index("rome")
    assert results[1]["where"]["answer"] == "berlin"
    assert results[1]["where"]["start"] == long_context.index("berlin")
    # The text gets the single-text tasks, the questions the QA task, in one call.
    assert set(results[0]) == {"where"} and set(results[2]) == {"topic", "ner"}


def test_remote_code_gives_the_same_qa_logits(trained: dict[str, Path], tmp_path: Path) -> None:
    out = trained["out"]
    model = transformers.AutoModel.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    encoded = encode_questions(tokenizer, ["where does mary live ?", "where does anna live ?"],
                               ["mary lives in paris .", "the old anna lives in madrid and the new ."],
                               MAX_SEQ_LENGTH, 8, padding=True, return_tensors="pt")
    inputs = {"qa": {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids")}}
    with torch.no_grad():
        expected = {("qa", task): model(**inputs["qa"], task=task).logits for task in model.task_names}
    assert expected[("qa", "where")].shape == (*encoded["input_ids"].shape, 2)
    remote = remote_logits(out, inputs, model.task_names, tmp_path)
    for key, logits in expected.items():
        assert torch.equal(remote["logits"][key], logits), key


def test_the_card_lists_the_qa_task_and_its_metric(trained: dict[str, Path]) -> None:
    card = (trained["out"] / "README.md").read_text()
    assert "| where | extractive_qa | a span of the context | 1 |" in card
    assert "- question-answering" in card.split("---")[1]
    rows = [line for line in card.splitlines() if line.startswith("| where | eval | ")]
    assert rows and rows[0].startswith("| where | eval | f1 | ")
    assert '"question": "Where did Maria Keller join Northwind Systems?"' in card
