"""The model card: its snippets run as pasted (with and without mtl_hf, never prompting), it names the data, leads
each task with its main metric, says how each NER task is scored, its metadata parses with `huggingface_hub.ModelCard`
and carries every task's scores in the model index; and the training curves show a single point."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from huggingface_hub import ModelCard

from mtl_hf import MultiTaskConfig, MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
from mtl_hf.model_card import EXAMPLE_QUESTION, MultiTaskModelCardData, build_model_card, training_curves_figure
from tests.conftest import tiny_encoder_config

REPO = Path(__file__).resolve().parents[1]
TOPIC = TaskSpec(name="topic", type="classification", labels=["business", "sport", "tech"])
NER = TaskSpec(name="ner", type="ner", labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], tag_scheme="IOB2")
# What transformers prints when it falls back to asking, or to a plain config, instead of loading the stored code.
PROMPT = "Do you wish to run the custom code"
TYPE_MISMATCH = "You are using a model of type"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A saved multi-task model with its tokenizer and remote code, as `run_mtl.py` leaves it."""
    import mtl_hf  # noqa: F401  (save_pretrained writes auto_map and copies the code only for registered classes)

    path = tmp_path_factory.mktemp("card") / "out"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", tokenizer.vocab_size), tasks=[TOPIC, NER])
    MultiTaskModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)


def run_snippet(code: str, folder: Path, with_mtl_hf: bool) -> subprocess.CompletedProcess:
    """Run `code` as a file, exactly as pasted, with stdin closed (an interactive prompt reads EOF and shows in the
    output). Without mtl_hf, a package of that name that fails to import comes first on the path, ahead of the
    editable install."""
    script = folder / "snippet.py"
    script.write_text(code)
    if with_mtl_hf:
        python_path = str(REPO)
    else:
        blocker = folder / "blocker" / "mtl_hf"
        blocker.mkdir(parents=True, exist_ok=True)
        (blocker / "__init__.py").write_text("raise ImportError('mtl_hf is not installed in this environment')\n")
        python_path = str(blocker.parent)
    env = {**os.environ, "PYTHONPATH": python_path, "HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "hf_home")}
    return subprocess.run([sys.executable, str(script)], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


def test_snippets_run_as_pasted_with_and_without_mtl_hf(model_dir: Path, tmp_path: Path) -> None:
    card = MultiTaskModelCardData(title="t", model_id=str(model_dir), base_model=None,
                                  tasks=MultiTaskConfig.from_pretrained(model_dir).task_specs).render()
    blocks = python_blocks(card)
    assert len(blocks) == 2, card
    transformers_only, with_pipeline = blocks
    assert "mtl_hf" not in transformers_only

    no_mtl_hf = run_snippet("import mtl_hf\n", tmp_path, with_mtl_hf=False)
    assert no_mtl_hf.returncode != 0 and "not installed in this environment" in no_mtl_hf.stderr  # isolation works

    for code, with_mtl_hf in ((transformers_only, False), (transformers_only, True), (with_pipeline, True)):
        result = run_snippet(code, tmp_path, with_mtl_hf)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert PROMPT not in output and TYPE_MISMATCH not in output, output[-3000:]
        if code is transformers_only:
            lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
            assert lines["topic"] in TOPIC.labels
            tags = ast.literal_eval(lines["ner"])  # one tag per word of the 8-word example
            assert len(tags) == 8 and set(tags) <= set(NER.labels)
        else:
            assert "'topic'" in result.stdout and "'ner'" in result.stdout


def test_card_of_a_local_run_has_a_title_its_data_and_a_loadable_path(model_dir: Path, tmp_path: Path) -> None:
    """Written by the trainer into a folder called `out`: the title says what the model is, the snippets load the
    folder from anywhere, and each task's data is named."""
    output_dir = tmp_path / "out"
    model = MultiTaskModel.from_pretrained(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    args = MultiTaskTrainingArguments(str(output_dir), report_to=[], use_cpu=True)
    trainer = MultiTaskTrainer(model=model, args=args, processing_class=tokenizer)
    data = [
        TaskSpec(name="topic", type="classification", train_file="/home/me/data/topic/train.jsonl",
                 validation_file="/home/me/data/topic/dev.jsonl"),
        TaskSpec(name="ner", type="ner", dataset_name="someone/conll-like", dataset_config_name="en"),
    ]
    trainer.create_model_card(task_data=data)
    card = (output_dir / "README.md").read_text()
    assert re.search(r"^# mtl_hf multi-task model: topic, ner$", card, flags=re.MULTILINE), card[:400]
    assert "# out" not in card
    assert f'model_id = "{output_dir.resolve()}"' in card
    assert "- **topic**: files `topic/train.jsonl` (train), `topic/dev.jsonl` (validation)" in card
    assert ("- **ner**: the Hub dataset [someone/conll-like](https://huggingface.co/datasets/someone/conll-like) "
            "(configuration `en`)") in card
    assert "datasets:\n- someone/conll-like\n---" in card
    assert "/home/me" not in card
    metadata = ModelCard.load(output_dir / "README.md").data
    assert metadata.datasets == ["someone/conll-like"] and metadata.eval_results is None  # no evaluation was run
    assert metadata.library_name == "transformers"


def results_of(path: Path) -> dict[tuple[str, str, str], tuple[str, str, str | None, float]]:
    """The card's model index as read by huggingface_hub: (task, split, metric) -> (task type, dataset, configuration,
    value); the metrics of each task and split in the order listed."""
    results = ModelCard.load(path).data.eval_results
    by_key = {(r.task_name, r.dataset_split, r.metric_type): (r.task_type, r.dataset_type, r.dataset_config,
                                                              r.metric_value) for r in results}
    assert len(by_key) == len(results)  # one result per task, split and metric
    assert all(r.dataset_name == r.dataset_type for r in results)
    return by_key


def test_card_written_by_the_trainer_carries_its_metadata_and_eval_results(model_dir: Path, tmp_path: Path) -> None:
    """The metrics `run_mtl.py` saves (`eval_results.json`, `predict_results.json`) reach the model index, per task
    and split, main metric first; base model, license, language, tags and the Hub datasets reach the metadata."""
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "eval_results.json").write_text(json.dumps({
        "eval_topic_accuracy": 0.75, "eval_topic_macro_f1": 0.5, "eval_topic_loss": 0.6, "eval_topic_runtime": 0.1,
        "eval_ner_f1": 0.25, "eval_ner_PER_f1": 0.5, "eval_ner_loss": 1.5, "eval_ner_samples": 8,
        "eval_combined_score": 0.5, "eval_loss": 1.0}))
    (output_dir / "predict_results.json").write_text(json.dumps({"test_topic_accuracy": 0.625, "test_ner_f1": 0.125}))
    trainer = MultiTaskTrainer(model=MultiTaskModel.from_pretrained(model_dir),
                               args=MultiTaskTrainingArguments(str(output_dir), report_to=[], use_cpu=True),
                               processing_class=transformers.AutoTokenizer.from_pretrained(model_dir))
    data = [TaskSpec(name="topic", type="classification", train_file="/data/topic/train.jsonl"),
            TaskSpec(name="ner", type="ner", dataset_name="someone/conll-like", dataset_config_name="en")]
    trainer.create_model_card(finetuned_from="google-bert/bert-base-uncased", task_data=data, license="apache-2.0",
                              language="en", tags=["demo", "mtl_hf"])
    path = output_dir / "README.md"
    card = ModelCard.load(path)
    assert card.data.base_model == "google-bert/bert-base-uncased" and card.data.license == "apache-2.0"
    assert card.data.language == ["en"] and card.data.datasets == ["someone/conll-like"]
    assert card.data.tags == ["mtl_hf", "multi-task", "text-classification", "token-classification", "demo"]
    assert card.data.model_name == "mtl_hf multi-task model: topic, ner"
    assert card.data.to_dict()["model-index"][0]["name"] == card.data.model_name
    assert list(results_of(path).items()) == [
        (("topic", "validation", "accuracy"), ("text-classification", "topic", None, 0.75)),
        (("topic", "validation", "macro_f1"), ("text-classification", "topic", None, 0.5)),
        (("topic", "test", "accuracy"), ("text-classification", "topic", None, 0.625)),
        (("ner", "validation", "f1"), ("token-classification", "someone/conll-like", "en", 0.25)),
        (("ner", "validation", "PER_f1"), ("token-classification", "someone/conll-like", "en", 0.5)),
        (("ner", "test", "f1"), ("token-classification", "someone/conll-like", "en", 0.125)),
    ]  # no losses, runtimes, sample counts or combined score
    text = path.read_text()
    assert "| topic | eval | accuracy | 0.7500 |" in text and "| ner | eval | loss | 1.5000 |" in text  # the table
    assert "| all | eval | combined_score | 0.5000 |" in text
    assert text == build_model_card(trainer, base_model="google-bert/bert-base-uncased", task_data=data,
                                    license="apache-2.0", language="en", tags=["demo", "mtl_hf"]).render()


def test_model_index_has_each_tasks_type_and_keeps_tasks_on_one_dataset_apart(tmp_path: Path) -> None:
    """Extractive QA is reported as question-answering, NER as token-classification, classification and regression
    as text-classification. Two tasks on one Hub dataset and configuration stay two entries, each under its own name
    (huggingface_hub alone would merge them into the first); a score that is not a number is left out of the index;
    a local base model is not named in the metadata."""
    qa = TaskSpec(name="squad", type="extractive_qa")
    pos = TaskSpec(name="pos", type="ner", labels=["NN", "VB", "DT"], tag_scheme="IO")
    score = TaskSpec(name="score", type="regression")
    data = {"ner": TaskSpec(name="ner", type="ner", dataset_name="someone/conll-like", dataset_config_name="en"),
            "pos": TaskSpec(name="pos", type="ner", dataset_name="someone/conll-like", dataset_config_name="en"),
            "squad": TaskSpec(name="squad", type="extractive_qa", dataset_name="rajpurkar/squad")}
    metrics = {"eval_topic_accuracy": 0.5, "eval_ner_f1": 0.25, "eval_pos_token_accuracy": 0.75, "eval_pos_loss": 0.5,
               "eval_squad_exact_match": 0.125, "eval_squad_f1": 0.375, "test_squad_f1": 0.3,
               "eval_score_spearmanr": math.nan, "eval_score_mse": 2.0}
    card = MultiTaskModelCardData(title="someone/model", model_id="someone/model", base_model=str(tmp_path),
                                  tasks=[TOPIC, NER, pos, qa, score], task_data=data, metrics=metrics, license="mit")
    path = tmp_path / "README.md"
    card.to_model_card().save(path)
    assert path.read_text() == card.render()
    assert "- question-answering" in card.render().split("---")[1]
    assert list(results_of(path).items()) == [
        (("topic", "validation", "accuracy"), ("text-classification", "topic", None, 0.5)),
        (("ner", "validation", "f1"), ("token-classification", "someone/conll-like", "en", 0.25)),
        (("pos", "validation", "token_accuracy"), ("token-classification", "someone/conll-like", "en", 0.75)),
        (("squad", "validation", "f1"), ("question-answering", "rajpurkar/squad", None, 0.375)),
        (("squad", "validation", "exact_match"), ("question-answering", "rajpurkar/squad", None, 0.125)),
        (("squad", "test", "f1"), ("question-answering", "rajpurkar/squad", None, 0.3)),
        (("score", "validation", "mse"), ("text-classification", "score", None, 2.0)),
    ]
    entries = yaml.safe_load(path.read_text().split("---")[1])["model-index"][0]["results"]  # as the Hub reads it
    assert [entry["task"]["name"] for entry in entries] == ["topic", "ner", "pos", "squad", "squad", "score"]
    metadata = ModelCard.load(path).data
    assert metadata.base_model is None and metadata.license == "mit"
    assert metadata.datasets == ["someone/conll-like", "rajpurkar/squad"]
    assert metadata.tags == ["mtl_hf", "multi-task", "question-answering", "text-classification",
                             "token-classification"]


def test_metrics_lead_with_each_tasks_main_metric_and_schemes_are_named() -> None:
    pos = TaskSpec(name="pos", type="ner", labels=["NN", "VB", "DT"], tag_scheme="IO")
    bioes = TaskSpec(name="ner", type="ner", labels=["O", "S-PER", "B-PER", "E-PER", "I-PER"], tag_scheme="IOBES")
    metrics = {
        "eval_topic_accuracy": 0.75, "eval_topic_loss": 0.61, "eval_topic_macro_f1": 0.7, "eval_topic_runtime": 0.2,
        "eval_ner_LOC_f1": 0.1, "eval_ner_PER_f1": 0.3, "eval_ner_f1": 0.2, "eval_ner_loss": 1.2,
        "eval_ner_precision": 0.25, "eval_pos_NN_f1": 0.9, "eval_pos_loss": 0.4, "eval_pos_macro_f1": 0.8,
        "eval_pos_token_accuracy": 0.85, "eval_topic_fine_accuracy": 0.5, "eval_combined_score": 0.6,
    }
    topic_fine = TaskSpec(name="topic_fine", type="classification", labels=["a", "b"])  # `topic_` is its prefix
    card = MultiTaskModelCardData(title="t", model_id="someone/m", base_model=None,
                                  tasks=[TOPIC, bioes, pos, topic_fine], metrics=metrics).render()
    rows = [line.split(" | ")[:3] for line in card.splitlines() if line.startswith("| ") and " | eval | " in line]
    metric_order = {}
    for task, _, metric in rows:
        metric_order.setdefault(task.removeprefix("| "), []).append(metric)
    assert metric_order == {
        "topic": ["accuracy", "loss", "macro_f1"],
        "ner": ["f1", "LOC_f1", "PER_f1", "loss", "precision"],
        "pos": ["token_accuracy", "NN_f1", "loss", "macro_f1"],
        "topic_fine": ["accuracy"],
        "all": ["combined_score"],
    }
    assert "strict IOB2" not in card
    assert "- ner: `f1`, entity-level F1 with seqeval on words, strict IOBES" in card
    assert "- pos: `token_accuracy`, the share of words given the right tag" in card


def test_training_curves_show_a_single_logged_point() -> None:
    """A run that logs once (Trainer's default logging_steps of 500 on a short run) must still show its point."""
    history = [{"loss": 1.3, "loss_topic": 1.1, "loss_ner": 1.5, "step": 300},
               {"eval_topic_accuracy": 0.5, "eval_ner_f1": 0.25, "eval_combined_score": 0.375, "step": 300}]
    figure = training_curves_figure(history, [TOPIC, NER])
    loss_panel, eval_panel = figure.axes
    for panel, expected in ((loss_panel, {"topic loss": 1.1, "ner loss": 1.5}),
                            (eval_panel, {"topic_accuracy": 0.5, "ner_f1": 0.25, "combined_score": 0.375})):
        drawn = {line.get_label(): line for line in panel.get_lines()}
        assert set(drawn) == set(expected)
        for label, line in drawn.items():
            assert list(line.get_xdata()) == [300] and list(line.get_ydata()) == [expected[label]]
            assert line.get_marker() not in (None, "", "None", " ") and line.get_markersize() > 0, label
    assert "lower --logging_steps" in loss_panel.get_title()
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_training_curves_plot_the_effective_weights_where_they_change() -> None:
    """`--loss_balancing uncertainty`/`dwa` change the weights: a middle panel shows them; static weights (constant)
    get none."""
    import matplotlib.pyplot as plt

    history = [{"loss": 1.3, "loss_topic": 1.1, "weight_topic": 1.0, "weight_ner": 1.0, "step": 1},
               {"loss": 1.2, "loss_ner": 1.4, "weight_topic": 0.8, "weight_ner": 1.3, "step": 2}]
    figure = training_curves_figure(history, [TOPIC, NER])
    assert len(figure.axes) == 3 and figure.axes[1].get_title() == "Effective loss weight per task"
    drawn = {line.get_label(): list(line.get_ydata()) for line in figure.axes[1].get_lines()}
    assert drawn == {"topic weight": [1.0, 0.8], "ner weight": [1.0, 1.3]}
    plt.close(figure)
    static = [{**entry, "weight_topic": 1.0, "weight_ner": 2.0} for entry in history]
    figure = training_curves_figure(static, [TOPIC, NER])
    assert len(figure.axes) == 2
    plt.close(figure)


def save_model(path: Path, tokenizer_dir: Path, tasks: list[TaskSpec]) -> Path:
    import mtl_hf  # noqa: F401

    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config("bert", tokenizer.vocab_size), tasks=tasks)
                   ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


PAIR_TASKS = [
    TaskSpec(name="nli", type="classification", labels=["yes", "no"], text_pair_column_name="hypothesis"),
    TaskSpec(name="sim", type="regression", text_pair_column_name="text_b"),
]


QA_TASK = TaskSpec(name="squad", type="extractive_qa")


@pytest.mark.parametrize("tasks", [
    [TOPIC, NER, TaskSpec(name="score", type="regression"),
     TaskSpec(name="tags", type="multilabel", labels=["a", "b", "c"], threshold=0.3), *PAIR_TASKS, QA_TASK],
    PAIR_TASKS,
    [QA_TASK],
], ids=["every-type", "pairs-only", "qa-only"])
def test_snippets_read_every_task_type_and_pairs(tasks: list[TaskSpec], tokenizer_dir: Path, tmp_path: Path) -> None:
    """Each task's line in the transformers-only snippet reads its prediction as its type does (a label, a number,
    a list of labels, a tag per word, a span of the context), pair tasks from a pair encoding, QA tasks from the
    question and context; the pipeline snippet serves texts, pairs and questions."""
    model_dir = save_model(tmp_path / "out", tokenizer_dir, tasks)
    card = MultiTaskModelCardData(title="t", model_id=str(model_dir), base_model=None,
                                  tasks=MultiTaskConfig.from_pretrained(model_dir).task_specs).render()
    transformers_only, with_pipeline = python_blocks(card)
    result = run_snippet(transformers_only, tmp_path, with_mtl_hf=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    printed = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert set(printed) == {task.name for task in tasks}
    for task in tasks:
        if task.type == "extractive_qa":
            assert printed[task.name] in EXAMPLE_QUESTION["context"]
            continue
        value = ast.literal_eval(printed[task.name]) if task.type != "classification" else printed[task.name]
        if task.type == "classification":
            assert value in task.labels
        elif task.type == "regression":
            assert isinstance(value, float)
        elif task.type == "multilabel":
            assert isinstance(value, list) and set(value) <= set(task.labels)
        else:
            assert len(value) == 8 and set(value) <= set(task.labels)
    result = run_snippet(with_pipeline, tmp_path, with_mtl_hf=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert all(f"'{task.name}'" in result.stdout for task in tasks)
