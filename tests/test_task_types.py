"""Task types as plug-ins (issue 11): the registry, and the new types' data, losses, metrics, gradient accumulation
and pipeline, in process on the tiny BERT of conftest.

Expected values are written out by hand or computed with torch, scipy and sklearn, never with the code under test.
The toy data generators below are shared with the end-to-end run in `test_task_types_run.py`; like the toy tasks of
`trainer_fixtures`, they are learnable from single words.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score

from mtl_hf import (
    MultiTaskConfig,
    MultiTaskModel,
    MultiTaskTrainer,
    MultiTaskTrainingArguments,
    TaskSpec,
)
from mtl_hf.configuration_multitask import TASK_TYPES
from mtl_hf.data import (
    MultiTaskDataCollator,
    load_raw_datasets,
    preprocess_task,
    resolve_labels,
)
from mtl_hf.metrics import MultiLabelMetric, RegressionMetric, SquadMetric, main_metric
from mtl_hf.modeling_multitask import task_loss
from mtl_hf.pipeline import MultiTaskPipeline
from mtl_hf.task_types import TaskType, get_task_type
from mtl_hf.tokenization import encode_texts
from tests.conftest import tiny_encoder_config
from tests.test_trainer import max_difference, run_two_processes, sgd_on_batches
from tests.trainer_fixtures import (
    MOOD,
    MULTIPROCESS_TYPES_ARGS,
    MULTIPROCESS_DEV_SEED,
    MULTIPROCESS_DEV_SIZE,
    MULTIPROCESS_TRAIN_SEED,
    MULTIPROCESS_TRAIN_SIZE,
    SAME,
    TOPIC,
    TOPIC_SET,
    TOPIC_WORDS,
    WHERE,
    make_tokenizer,
    pair_rows,
    qa_rows,
    sentiment_rows,
    tokenized_qa,
    tokenized_types,
    topic_set_rows,
)
from tests.trainer_fixtures import make_model as make_fixture_model

REPO = Path(__file__).resolve().parents[1]
TYPE_NAMES = {"classification", "regression", "multilabel", "ner", "extractive_qa"}
TOPICS = sorted(TOPIC_WORDS)  # business, sport, tech




def raw(split: str = "train", **columns: list) -> datasets.DatasetDict:
    return datasets.DatasetDict({split: datasets.Dataset.from_dict(columns)})


def make_model(tasks: list[TaskSpec], vocab_size: int, seed: int = 0) -> MultiTaskModel:
    """A tiny BERT with the given heads and no dropout anywhere (so a training step is deterministic)."""
    torch.manual_seed(seed)
    encoder = tiny_encoder_config("bert", vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    tasks = [TaskSpec(**{**spec.to_config_dict(), "dropout": 0.0}) for spec in tasks]
    return MultiTaskModel(MultiTaskConfig(encoder=encoder, tasks=tasks)).eval()


def words(text: str) -> list[str]:
    return text.split()


# ---- 1. registry -------------------------------------------------------------------------------------------------


def test_registry_holds_the_five_built_in_types() -> None:
    assert set(TASK_TYPES) == TYPE_NAMES
    for name in TYPE_NAMES:
        task_type = get_task_type(name)
        assert isinstance(task_type, TaskType)
        assert task_type.name == name
        labels = ["x"] if TASK_TYPES[name].has_labels else None
        assert get_task_type(TaskSpec(name="t", type=name, labels=labels)) is task_type
    assert len({id(get_task_type(name)) for name in TYPE_NAMES}) == 5
    with pytest.raises(ValueError, match="Unknown task type 'pos'"):
        get_task_type("pos")


def _type_branches(source: str) -> list[tuple[int, str]]:
    """Places in `source` that branch on a task type's name: comparisons with a type-name literal (alone or in a
    tuple/list/set, `==`, `!=`, `in`, `not in`), comparisons of an `X.type` attribute with anything but builtin types
    (argparse's `action.type in (int, float)`), `match` cases on a type name, dict literals keyed by type names, and
    `isinstance(..., SomethingTaskType)`."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []

    def is_name_literal(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in TYPE_NAMES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(is_name_literal(element) for element in node.elts)
        return False

    def is_builtin_type(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in {"int", "float", "str", "bool", "list", "dict", "None"}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return all(is_builtin_type(element) for element in node.elts)
        return isinstance(node, ast.Constant) and node.value is None

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(is_name_literal(operand) for operand in operands):
                found.append((node.lineno, "comparison with a type name"))
            elif any(isinstance(o, ast.Attribute) and o.attr == "type" for o in operands) and not all(
                is_builtin_type(o) for o in operands if not (isinstance(o, ast.Attribute) and o.attr == "type")
            ):
                found.append((node.lineno, "comparison of .type"))
        elif isinstance(node, ast.match_case) and any(
            isinstance(pattern, ast.MatchValue) and is_name_literal(pattern.value) for pattern in ast.walk(node.pattern)
        ):
            found.append((node.pattern.lineno, "match case on a type name"))
        elif isinstance(node, ast.Dict) and sum(key is not None and is_name_literal(key) for key in node.keys) >= 2:
            found.append((node.lineno, "dict keyed by type names"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance"
              and len(node.args) == 2 and re.search(r"TaskType\b", ast.unparse(node.args[1]))):
            found.append((node.lineno, "isinstance on a task type class"))
    return found


def test_the_branch_detector_finds_branches_on_type_names() -> None:
    """The scan below proves something only if it recognises the branches it is meant to rule out."""
    branches = [
        'if spec.type == "ner":\n    pass',
        'if "classification" != task.type:\n    pass',
        'x = spec.type in ("classification", "regression")',
        'x = task_type.name not in {"multilabel"}',
        'x = spec.type == NER_TYPE',
        'x = {"ner": 1, "classification": 2}[spec.type]',
        'match spec.type:\n    case "regression":\n        pass',
        'x = isinstance(get_task_type(spec), TokenClassificationTaskType)',
    ]
    for source in branches:
        assert _type_branches(source), source
    clean = [
        'if action.type in (int, float):\n    pass',
        'if spec.info.head == "token":\n    pass',
        'x = get_task_type(spec).predictions(spec, outputs, dataset)',
        'doc = "regression"',
        'x = {"ner": 2.0}',  # one key: a task named ner (task weights), not a table over types
    ]
    for source in clean:
        assert not _type_branches(source), source


def test_no_module_outside_the_task_types_branches_on_a_type_name() -> None:
    """The issue's "six branch sites are gone": only `mtl_hf/task_types/` and `configuration_multitask.py` (the
    `TASK_TYPES` table) may name types; model, data, trainer, pipeline, card, metrics and run_mtl.py look them up."""
    files = sorted((REPO / "mtl_hf").glob("*.py")) + [REPO / "run_mtl.py"]
    files = [path for path in files if path.name != "configuration_multitask.py"]
    names = {path.name for path in files}
    assert {"modeling_multitask.py", "data.py", "trainer.py", "pipeline.py", "model_card.py", "metrics.py",
            "run_mtl.py"} <= names
    offenders = [f"{path.relative_to(REPO)}:{line}: {what}"
                 for path in files for line, what in _type_branches(path.read_text(encoding="utf-8"))]
    assert offenders == []


# ---- 2. data -----------------------------------------------------------------------------------------------------


PAIR = TaskSpec(name="nli", type="classification", labels=["different", "same"], text_pair_column_name="text_b")


def test_a_pair_is_the_tokenizers_pair_encoding_with_segment_ids(bert_tokenizer) -> None:
    firsts = ["john visited paris", "the market shares rose"]
    seconds = ["mary met anna today", "profit fell"]
    data = preprocess_task(PAIR, raw(text=firsts, text_b=seconds, label=["same", "different"]), bert_tokenizer,
                           max_seq_length=32)["train"]
    expected = bert_tokenizer([words(t) for t in firsts], [words(t) for t in seconds], is_split_into_words=True)
    assert data["input_ids"] == expected["input_ids"]
    assert data["token_type_ids"] == expected["token_type_ids"]
    # Written out: [CLS] a [SEP] -> segment 0, b [SEP] -> segment 1; every word here is one token of the vocabulary.
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    ids = bert_tokenizer.convert_tokens_to_ids
    assert data["input_ids"][0] == [cls, *ids(words(firsts[0])), sep, *ids(words(seconds[0])), sep]
    assert data["token_type_ids"][0] == [0] * 5 + [1] * 5
    assert data["token_type_ids"][1] == [0] * 6 + [1] * 3
    assert data["labels"] == [1, 0]


def test_a_long_pair_is_cut_longest_first_and_counted(bert_tokenizer) -> None:
    long = "the market shares rose and the profit fell in paris"  # 10 words
    short = "the cup team"  # 3 words
    data = preprocess_task(PAIR, raw(text=[long, "chip"], text_b=[short, "data app"], label=["same", "same"]),
                           bert_tokenizer, max_seq_length=10)
    # 10 + 3 words + 3 special tokens > 10: only the longer text loses words (10 -> 4), the short one stays whole.
    ids = bert_tokenizer.convert_tokens_to_ids
    first = data["train"][0]
    assert first["input_ids"] == [bert_tokenizer.cls_token_id, *ids(words(long)[:4]), bert_tokenizer.sep_token_id,
                                  *ids(words(short)), bert_tokenizer.sep_token_id]
    assert first["token_type_ids"] == [0] * 6 + [1] * 4
    assert data["train"][1]["input_ids"] == bert_tokenizer(["chip"], ["data", "app"], is_split_into_words=True)[
        "input_ids"]
    assert data.truncation_report == {"train": (1, 2)}


def test_regression_targets_are_the_floats_given(bert_tokenizer) -> None:
    spec = TaskSpec(name="score", type="regression")
    assert spec.labels is None and spec.num_labels == 1
    assert resolve_labels(spec, raw(text=["a", "b"], label=[1.0, 2.0])) == spec  # nothing to derive
    targets = [0.5, -1.25, 3.0, 0.0]  # exact in float32
    data = preprocess_task(spec, raw(text=["good app", "bad data", "the cup", "a"], label=targets), bert_tokenizer,
                           max_seq_length=16)["train"]
    assert data["labels"] == targets
    assert data.features["labels"].dtype.startswith("float")
    batch = MultiTaskDataCollator(bert_tokenizer)([data[i] for i in range(4)])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == targets


def test_a_non_numeric_regression_target_names_task_split_row_and_column(bert_tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in
                            [{"text": "good app", "score": 1.5}, {"text": "the cup", "score": 2},
                             {"text": "bad data", "score": "high"}]))
    spec = TaskSpec(name="score", type="regression", train_file=str(path), label_column_name="score")
    data = load_raw_datasets(spec)
    with pytest.raises(ValueError, match=r"Task 'score', split 'train', row 2 .*line 3.*column 'score'.*'high'"):
        preprocess_task(resolve_labels(spec, data), data, bert_tokenizer, max_seq_length=16)
    with pytest.raises(ValueError, match=r"Task 'score', split 'validation', row 1, column 'label': missing label"):
        preprocess_task(TaskSpec(name="score", type="regression"),
                        raw("validation", text=["a", "b"], label=[1.0, None]), bert_tokenizer, max_seq_length=16)


def test_a_non_numeric_regression_target_in_a_csv_is_the_row_named(bert_tokenizer, tmp_path: Path) -> None:
    """One typo makes a CSV column strings as a whole: the error must still point at the typo, not at row 0."""
    path = tmp_path / "scores.csv"
    path.write_text("text,score\ngood app,1.5\nthe cup,2\nbad data,high\n")
    spec = TaskSpec(name="score", type="regression", train_file=str(path), label_column_name="score")
    data = load_raw_datasets(spec)
    with pytest.raises(ValueError, match=r"Task 'score', split 'train', row 2 .*column 'score'.*'high'"):
        preprocess_task(resolve_labels(spec, data), data, bert_tokenizer, max_seq_length=16)


def test_multilabel_from_a_csv_with_a_delimiter(bert_tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    path.write_text("text,labels\nmarket goal,sport|business\nthe chip,tech\nthe a,\nprice app cup,tech | business|sport\n")
    spec = TaskSpec(name="tags", type="multilabel", train_file=str(path), label_delimiter="|")
    assert spec.threshold == 0.5 and spec.label_column_name == "labels"
    data = load_raw_datasets(spec)
    spec = resolve_labels(spec, data)
    assert spec.labels == ["business", "sport", "tech"]  # the sorted set of the train labels
    encoded = preprocess_task(spec, data, bert_tokenizer, max_seq_length=16)["train"]
    assert encoded["labels"] == [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    batch = MultiTaskDataCollator(bert_tokenizer)([encoded[i] for i in range(4)])
    assert batch["labels"].shape == (4, 3) and batch["labels"].dtype == torch.float32


def test_multilabel_from_json_lists_and_an_unknown_label(bert_tokenizer, tmp_path: Path) -> None:
    spec = TaskSpec(name="tags", type="multilabel", labels=["business", "sport"])
    encoded = preprocess_task(spec, raw(text=["goal", "price goal", "the"], labels=[["sport"], ["business", "sport"],
                                                                                      []]),
                              bert_tokenizer, max_seq_length=16)["train"]
    assert encoded["labels"] == [[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    path = tmp_path / "tags.csv"
    path.write_text("text,labels\nmarket goal,sport|business\nthe chip,sport|weather\n")
    spec = TaskSpec(name="tags", type="multilabel", labels=["business", "sport"], train_file=str(path),
                    label_delimiter="|")
    data = load_raw_datasets(spec)
    with pytest.raises(ValueError, match=r"Task 'tags', split 'train', row 1 .*line 3.*column 'labels'.*unknown label "
                                         r"'weather'"):
        preprocess_task(resolve_labels(spec, data), data, bert_tokenizer, max_seq_length=16)


def test_fields_of_other_types_and_lower_is_better_main_metrics_are_refused() -> None:
    with pytest.raises(ValueError, match=r"Task 'score': field 'labels'.*regression tasks have no labels"):
        TaskSpec(name="score", type="regression", labels=["low", "high"])
    with pytest.raises(ValueError, match=r"Task 'ner': field 'threshold'.*multilabel"):
        TaskSpec(name="ner", type="ner", threshold=0.3)
    with pytest.raises(ValueError, match=r"Task 'topic': field 'label_delimiter'"):
        TaskSpec(name="topic", type="classification", label_delimiter="|")
    with pytest.raises(ValueError, match=r"Task 'tags': field 'text_pair_column_name'"):
        TaskSpec(name="tags", type="multilabel", text_pair_column_name="b")
    with pytest.raises(ValueError, match=r"field 'threshold'.*\(0, 1\)"):
        TaskSpec(name="tags", type="multilabel", threshold=1.5)

    rows = raw(text=["good", "bad"], label=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"Task 'score': field 'main_metric' is 'mse'.*pearson, spearmanr"):
        resolve_labels(TaskSpec(name="score", type="regression", main_metric="mse"), rows)
    with pytest.raises(ValueError, match=r"field 'main_metric' is 'accuracy'"):
        resolve_labels(TaskSpec(name="score", type="regression", main_metric="accuracy"), rows)
    accepted = resolve_labels(TaskSpec(name="score", type="regression", main_metric="spearmanr"), rows)
    assert main_metric(accepted) == "spearmanr"
    assert main_metric(TaskSpec(name="score", type="regression")) == "pearson"
    assert main_metric(TaskSpec(name="tags", type="multilabel", labels=["a"])) == "micro_f1"
    tagged = resolve_labels(TaskSpec(name="tags", type="multilabel", labels=["a", "b"], main_metric="subset_accuracy"),
                            raw(text=["x"], labels=[["a"]]))
    assert main_metric(tagged) == "subset_accuracy"


# ---- 3. losses ---------------------------------------------------------------------------------------------------


def test_regression_and_multilabel_losses_are_torchs_and_sum_over_count_is_the_mean() -> None:
    torch.manual_seed(0)
    regression = task_loss(TaskSpec(name="score", type="regression"))
    logits, targets = torch.randn(5, 1), torch.tensor([0.5, -2.0, 1.0, 3.0, 0.0])
    assert torch.allclose(regression.fn(logits, targets), torch.nn.MSELoss()(logits.squeeze(-1), targets))
    assert int(regression.count(targets)) == 5
    assert torch.allclose(regression.fn(logits, targets, "sum") / regression.count(targets),
                          regression.fn(logits, targets, "mean"))
    assert torch.allclose(regression.fn(logits, targets, "sum"), ((logits.squeeze(-1) - targets) ** 2).sum())

    multilabel = task_loss(TaskSpec(name="tags", type="multilabel", labels=["a", "b", "c"]))
    logits = torch.randn(4, 3)
    targets = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    assert torch.allclose(multilabel.fn(logits, targets), torch.nn.BCEWithLogitsLoss()(logits, targets))
    assert int(multilabel.count(targets)) == 12  # example x label entries
    assert torch.allclose(multilabel.fn(logits, targets, "sum") / multilabel.count(targets),
                          multilabel.fn(logits, targets, "mean"))
    by_hand = -(targets * torch.log(torch.sigmoid(logits)) + (1 - targets) * torch.log(1 - torch.sigmoid(logits)))
    assert torch.allclose(multilabel.fn(logits, targets), by_hand.mean(), atol=1e-6)


def test_the_model_computes_its_types_loss(bert_tokenizer) -> None:
    score = TaskSpec(name="score", type="regression")
    tags = TaskSpec(name="tags", type="multilabel", labels=["a", "b", "c"])
    model = make_model([score, tags], bert_tokenizer.vocab_size)
    encoded = encode_texts(bert_tokenizer, ["good app", "the bad cup"], padding=True, return_tensors="pt")
    inputs = {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    out = model(**inputs, task="score", labels=torch.tensor([1.0, -1.0]))
    assert out.logits.shape == (2, 1)
    assert torch.allclose(out.loss, ((out.logits.squeeze(-1) - torch.tensor([1.0, -1.0])) ** 2).mean())
    targets = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    out = model(**inputs, task="tags", labels=targets)
    assert out.logits.shape == (2, 3)
    assert torch.allclose(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))


# ---- 4. metrics --------------------------------------------------------------------------------------------------


def test_regression_metric() -> None:
    predictions, references = [1.0, 2.0, 3.0, 10.0], [1.0, 3.0, 2.0, 4.0]
    scores = RegressionMetric().compute(predictions=predictions, references=references)
    assert set(scores) == {"pearson", "spearmanr", "mse"}
    assert scores["mse"] == pytest.approx((0 + 1 + 1 + 36) / 4)
    # Ranks 1 2 3 4 against 1 3 2 4: d^2 sums to 2, so 1 - 6 * 2 / (4 * (16 - 1)) = 0.8.
    assert scores["spearmanr"] == pytest.approx(0.8)
    x, y = np.array(predictions), np.array(references)
    by_hand = ((x - x.mean()) * (y - y.mean())).sum() / math.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    assert scores["pearson"] == pytest.approx(by_hand) and scores["pearson"] == pytest.approx(pearsonr(x, y)[0])
    assert scores["pearson"] != pytest.approx(scores["spearmanr"], abs=1e-3)
    assert spearmanr(x, y)[0] == pytest.approx(0.8)
    # A constant prediction has no correlation: 0.0 rather than NaN, which would poison combined_score.
    flat = RegressionMetric().compute(predictions=[2.0, 2.0, 2.0], references=[1.0, 2.0, 4.0])
    assert flat["pearson"] == 0.0 and flat["spearmanr"] == 0.0 and flat["mse"] == pytest.approx((1 + 0 + 4) / 3)
    # Through the task type: evaluation keeps the one output per row, squeezed.
    spec = TaskSpec(name="score", type="regression")
    kept = get_task_type(spec).logits_for_metrics(spec, torch.tensor([[1.0], [2.0], [3.0], [10.0]]))
    assert kept.tolist() == predictions
    assert get_task_type(spec).compute_metrics(spec, kept.numpy(), np.array(references), None) == pytest.approx(scores)


def test_multilabel_metric() -> None:
    predictions = [[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]]
    references = [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]]
    scores = MultiLabelMetric().compute(predictions=predictions, references=references)
    assert set(scores) == {"micro_f1", "macro_f1", "subset_accuracy"}
    # Per label: a tp 2 -> F1 1; b tp 1, fp 1 -> 2/3; c fp 1, fn 1 -> 0; d never seen (left out of the macro mean).
    # Micro: tp 3, fp 2, fn 1 -> 6 / 9.
    assert scores["micro_f1"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert scores["subset_accuracy"] == pytest.approx(1 / 3)
    gold, predicted = np.array(references), np.array(predictions)
    assert scores["micro_f1"] == pytest.approx(f1_score(gold, predicted, average="micro"))
    assert scores["macro_f1"] == pytest.approx(f1_score(gold[:, :3], predicted[:, :3], average="macro"))

    # Through the task type: a label is predicted where its sigmoid reaches the task's threshold (0.7 here).
    spec = TaskSpec(name="tags", type="multilabel", labels=["a", "b", "c", "d"], threshold=0.7)
    logit = math.log(0.7 / 0.3)
    logits = torch.tensor([[3.0, -3.0, logit + 1e-3, 0.5], [-1.0, 2.0, logit - 1e-3, -2.0]])
    kept = get_task_type(spec).logits_for_metrics(spec, logits)
    assert kept.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]
    assert get_task_type(spec).predictions(spec, kept.numpy(), None) == [["a", "c"], ["b"]]
    from_type = get_task_type(spec).compute_metrics(spec, np.array(predictions), gold.astype(np.float32), None)
    assert from_type == pytest.approx(scores)


# ---- 5. gradient accumulation ------------------------------------------------------------------------------------


def trainer_args(output_dir: Path, **overrides) -> MultiTaskTrainingArguments:
    """Plain SGD at a constant rate without clipping, as tests/test_trainer.py's accumulation test: the weights
    move by exactly lr x gradient, so a wrongly normalised window shows."""
    defaults = {"use_cpu": True, "report_to": [], "optim": "sgd", "learning_rate": 1.0, "lr_scheduler_type": "constant",
                "max_grad_norm": 0.0, "max_steps": 1, "logging_steps": 1, "save_strategy": "no", "seed": 7,
                "disable_tqdm": True}
    return MultiTaskTrainingArguments(str(output_dir), **{**defaults, **overrides})


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("kind", ["regression", "multilabel", "extractive_qa"])
def test_gradient_accumulation_is_exact(kind: str, bert_tokenizer, tmp_path: Path) -> None:
    """5 rows: one step on all 5 against an accumulation window of a batch of 3 and a batch of 2 (so averaging the
    micro-batch means would be wrong), both against one plain SGD step on the 5 rows' mean loss. For extractive QA
    the rows differ in length, so the micro-batches are padded less than the whole batch: the span head's masking
    of padding keeps their losses those of the big batch."""
    length = 16
    if kind == "regression":
        spec, rows = TaskSpec(name="score", type="regression"), sentiment_rows(5, seed=1)
    elif kind == "multilabel":
        spec, rows = TaskSpec(name="tags", type="multilabel", labels=TOPICS), topic_set_rows(5, seed=1)
    else:
        spec, rows, length = WHERE, qa_rows(5, seed=1, filler=(1, 4)), 48
    data = preprocess_task(spec, raw(**rows), bert_tokenizer, max_seq_length=length)["train"]
    assert len(data) == 5
    base = make_model([spec], bert_tokenizer.vocab_size)

    reference = copy.deepcopy(base).train()
    reference(**MultiTaskDataCollator(bert_tokenizer)([data[i] for i in range(len(data))])).loss.backward()
    torch.optim.SGD(reference.parameters(), lr=1.0).step()
    expected, start = params(reference), params(base)
    assert max((expected[k] - start[k]).abs().max().item() for k in start) > 1e-3  # the step moved the weights

    # What an unnormalised window (mean of the micro-batch means) would give: the comparison must tell them apart.
    naive = copy.deepcopy(base).train()
    collate = MultiTaskDataCollator(bert_tokenizer)
    for part in ([0, 1, 2], [3, 4]):
        (naive(**collate([data[i] for i in part])).loss / 2).backward()
    torch.optim.SGD(naive.parameters(), lr=1.0).step()
    assert max((params(naive)[k] - expected[k]).abs().max().item() for k in start) > 1e-4

    for batch_size, accumulation in ((5, 1), (3, 2)):
        model = copy.deepcopy(base)
        MultiTaskTrainer(
            model=model,
            args=trainer_args(tmp_path / f"{batch_size}", per_device_train_batch_size=batch_size,
                              gradient_accumulation_steps=accumulation),
            train_dataset={spec.name: data},
            processing_class=bert_tokenizer,
        ).train()
        trained = params(model)
        for key in start:
            assert torch.allclose(trained[key], expected[key], atol=1e-5), (batch_size, key)


# ---- 6. pipeline -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(bert_tokenizer) -> tuple[MultiTaskModel, MultiTaskPipeline]:
    topic = TaskSpec(name="topic", type="classification", labels=TOPICS)
    score = TaskSpec(name="score", type="regression")
    tags = TaskSpec(name="tags", type="multilabel", labels=["w", "x", "y", "z"], threshold=0.8)
    pair_score = TaskSpec(name="similarity", type="regression", text_pair_column_name="text_b")
    model = make_model([topic, PAIR, score, tags, pair_score], bert_tokenizer.vocab_size, seed=3)
    with torch.no_grad():  # sigmoids near 0.95, 0.05, 0.73 and 0.27: only the first passes the threshold of 0.8
        model.heads["tags"].classifier.bias.copy_(torch.tensor([3.0, -3.0, 1.0, -1.0]))
    return model, MultiTaskPipeline(model, bert_tokenizer)


def logits_of(model: MultiTaskModel, encoded, task: str) -> torch.Tensor:
    inputs = {key: torch.tensor(encoded[key]) for key in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        return model(**inputs, task=task).logits[0]


def test_a_pair_reaches_the_model_as_training_encodes_it(served, bert_tokenizer, monkeypatch) -> None:
    model, pipe = served
    first, second = "John visited Paris, today.", "mary met the johnson team"
    trained = preprocess_task(PAIR, raw(text=[first], text_b=[second], label=["same"]), bert_tokenizer,
                              max_seq_length=64)["train"][0]
    assert 1 in trained["token_type_ids"]
    seen = []
    forward_tasks = model.forward_tasks

    def recording(input_ids, attention_mask=None, tasks=None, token_type_ids=None):
        seen.append((input_ids.tolist(), token_type_ids.tolist(), tasks))
        return forward_tasks(input_ids, attention_mask, tasks=tasks, token_type_ids=token_type_ids)

    monkeypatch.setattr(model, "forward_tasks", recording)
    result = pipe({"text": first, "text_pair": second}, tasks=["nli", "similarity"])
    assert seen == [([trained["input_ids"]], [trained["token_type_ids"]], ["nli", "similarity"])]
    probabilities = logits_of(model, {k: [v] for k, v in trained.items() if k != "task"}, "nli").softmax(-1)
    best = int(probabilities.argmax())
    assert result["nli"] == {"label": PAIR.labels[best], "score": pytest.approx(float(probabilities[best]))}
    similarity = logits_of(model, {k: [v] for k, v in trained.items() if k != "task"}, "similarity")
    assert result["similarity"] == {"score": pytest.approx(float(similarity[0]), abs=1e-6)}
    # Given no task list, a pair gets the pair tasks only, a text the single-text tasks only.
    assert set(pipe({"text": first, "text_pair": second})) == {"nli", "similarity"}
    assert set(pipe(first)) == {"topic", "score", "tags"}
    mixed = pipe([first, {"text": first, "text_pair": second}])
    assert set(mixed[0]) == {"topic", "score", "tags"} and set(mixed[1]) == {"nli", "similarity"}


def test_a_string_for_pair_tasks_only_is_refused(served) -> None:
    _, pipe = served
    with pytest.raises(ValueError, match=r"Input 0 is a text \(a string\), which no requested task reads: nli read "
                                         "a text pair"):
        pipe("john visited paris", tasks=["nli"])
    with pytest.raises(ValueError, match="Input 1 is a text pair .* which no requested task reads: topic, score read "
                                         r"a text \(a string\)"):
        pipe(["john", {"text": "john", "text_pair": "mary"}], tasks=["topic", "score"])


def test_regression_returns_the_models_score(served, bert_tokenizer) -> None:
    model, pipe = served
    text = "Good app, bad data."
    result = pipe(text, tasks="score")
    assert set(result) == {"score"} and set(result["score"]) == {"score"}
    assert isinstance(result["score"]["score"], float)
    expected = logits_of(model, encode_texts(bert_tokenizer, [text]), "score")
    assert result["score"]["score"] == pytest.approx(float(expected[0]), abs=1e-6)


def test_multilabel_returns_the_labels_passing_the_threshold(served, bert_tokenizer) -> None:
    model, pipe = served
    texts = ["the market and the goal", "chip"]
    for text, result in zip(texts, pipe(texts, tasks=["tags"])):
        probabilities = logits_of(model, encode_texts(bert_tokenizer, [text]), "tags").sigmoid().tolist()
        passing = sorted(((p, label) for p, label in zip(probabilities, ["w", "x", "y", "z"]) if p >= 0.8),
                         reverse=True)
        assert [label for _, label in passing] == ["w"]  # "y" (about 0.73) would pass the default 0.5
        assert [entry["label"] for entry in result["tags"]] == ["w"]
        assert result["tags"][0]["score"] == pytest.approx(passing[0][0], abs=1e-6)

        everything = pipe(text, tasks="tags", all_scores=True)["tags"]
        assert sorted(entry["label"] for entry in everything) == ["w", "x", "y", "z"]
        scores = [entry["score"] for entry in everything]
        assert scores == sorted(scores, reverse=True)
        for entry in everything:
            probability = probabilities[["w", "x", "y", "z"].index(entry["label"])]
            assert entry["score"] == pytest.approx(probability, abs=1e-6)
            assert entry["passed"] is (probability >= 0.8)


# ---- review fixes ----------------------------------------------------------------------------------------------------


def test_a_remote_code_model_serves_and_evaluates_like_the_native_one(served, bert_tokenizer, tmp_path: Path) -> None:
    """`trust_remote_code=True` gives specs of the copied configuration module's own TaskSpec class; the task types
    must still be found for the pipeline and the trainer."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    model, pipe = served
    model.save_pretrained(tmp_path / "model")
    bert_tokenizer.save_pretrained(tmp_path / "model")
    # What `AutoModel.from_pretrained(path, trust_remote_code=True)` builds when it runs before `import mtl_hf` (as
    # the card's first snippet does); in this process mtl_hf is imported, so the stored class is fetched directly.
    remote_class = get_class_from_dynamic_module("modeling_multitask.MultiTaskModel", str(tmp_path / "model"))
    remote = remote_class.from_pretrained(tmp_path / "model")
    assert type(remote).__module__.startswith("transformers_modules")
    assert type(remote.config.task_specs[0]) is not TaskSpec
    inputs = ["the market rose", {"text": "the goal", "text_pair": "a cup"}]
    assert MultiTaskPipeline(remote, bert_tokenizer)(inputs) == pipe(inputs)
    rows = sentiment_rows(6, 0)
    dev = preprocess_task(TaskSpec(name="score", type="regression"), raw("validation", **rows), bert_tokenizer,
                          max_seq_length=16)["validation"]
    metrics = MultiTaskTrainer(model=remote, args=trainer_args(tmp_path / "out"), processing_class=bert_tokenizer,
                               eval_dataset={"score": dev}).evaluate()
    assert math.isfinite(metrics["eval_score_mse"]) and metrics["eval_combined_score"] == metrics["eval_score_pearson"]


def test_the_pair_column_differs_from_the_text_and_label_columns() -> None:
    with pytest.raises(ValueError, match="'text_pair_column_name' is 'text', the same column as text_column_name"):
        TaskSpec(name="nli", type="classification", text_pair_column_name="text")  # the default text column
    with pytest.raises(ValueError, match="the same column as label_column_name"):
        TaskSpec(name="sim", type="regression", text_pair_column_name="label")


def test_multilabel_label_names_that_are_numbers_in_a_csv(bert_tokenizer, tmp_path: Path) -> None:
    """pandas reads a CSV column whose cells are all numbers ("1", "3") as numbers: they still name the labels."""
    (tmp_path / "train.csv").write_text("text,labels\nthe a,1|2\nthe b,3\n")
    (tmp_path / "dev.csv").write_text("text,labels\nthe a,1\nthe b,3\n")
    spec = TaskSpec(name="stars", type="multilabel", labels=["1", "2", "3"], train_file=str(tmp_path / "train.csv"),
                    validation_file=str(tmp_path / "dev.csv"), label_delimiter="|")
    data = preprocess_task(spec, load_raw_datasets(spec), bert_tokenizer, max_seq_length=16)
    assert data["train"]["labels"] == [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert data["validation"]["labels"] == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_unknown_pipeline_options_are_refused(served) -> None:
    _, pipe = served
    with pytest.raises(TypeError, match=r"unknown option\(s\) all_score; the requested tasks take: all_scores \(tags\)"):
        pipe("the market", all_score=True)
    with pytest.raises(TypeError, match="unknown option.*top_k.*take: none"):
        pipe("the market", tasks="topic", top_k=None)
    assert isinstance(pipe("the market", all_scores=True)["topic"], dict)  # other types ignore a known option


def test_label_smoothing_moves_multilabel_targets_and_is_reported_for_regression(bert_tokenizer, tmp_path, caplog):
    logits, targets = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
    smoothed = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[0.95, 0.05]]))
    assert torch.allclose(task_loss(TaskSpec(name="t", type="multilabel", labels=["a", "b"])).fn(
        logits, targets, label_smoothing=0.1), smoothed)
    model = make_model([TaskSpec(name="score", type="regression")], bert_tokenizer.vocab_size)
    with caplog.at_level("WARNING", logger="mtl_hf.trainer"):
        MultiTaskTrainer(model=model, args=trainer_args(tmp_path, label_smoothing_factor=0.1),
                         processing_class=bert_tokenizer)
    assert "label_smoothing_factor=0.1 applies to classification, multilabel and NER tasks; not to the regression " \
           "task(s) score" in caplog.text


def test_a_main_metric_the_task_never_reports_is_refused_by_the_trainer(bert_tokenizer, tmp_path: Path) -> None:
    """A model config built in Python skips the data pipeline's check; combined_score would silently leave the task
    out, so the trainer refuses it too."""
    model = make_model([TaskSpec(name="score", type="regression", main_metric="accuracy")], bert_tokenizer.vocab_size)
    with pytest.raises(ValueError, match="Task 'score': field 'main_metric' is 'accuracy'; a regression task's main "
                                         "metric is one of pearson, spearmanr"):
        MultiTaskTrainer(model=model, args=trainer_args(tmp_path), processing_class=bert_tokenizer)


# ---- two processes -----------------------------------------------------------------------------------------------


def test_two_processes_train_and_evaluate_the_new_types_like_one_process(tmp_path: Path) -> None:
    """Pair classification, regression and multilabel on two gloo ranks: the weights end where one process ends after
    the same global batches (each a plain SGD step on the model's own mean loss: the item counts of MSE and BCE summed
    over the ranks), predict() over an odd-sized eval set gives every row once in order, as one process does, and the
    gathered metrics are those of these predictions."""
    reports = run_two_processes(tmp_path, "types")
    trained = [report["trained"] for report in reports]
    for (task_0, rows_0), (task_1, rows_1) in zip(*trained):
        assert task_0 == task_1 and not set(rows_0) & set(rows_1)

    weights = [torch.load(tmp_path / f"weights{rank}.pt") for rank in (0, 1)]
    tokenizer = make_tokenizer(tmp_path / "tokenizer")
    start = make_fixture_model(tokenizer.vocab_size, specs=(SAME, MOOD, TOPIC_SET))
    reference = copy.deepcopy(start)
    data = tokenized_types(tokenizer, MULTIPROCESS_TRAIN_SIZE, seed=MULTIPROCESS_TRAIN_SEED)
    global_batches = [(task, rows_0 + rows_1) for (task, rows_0), (_, rows_1) in zip(*trained)]
    sgd_on_batches(reference, data, tokenizer, global_batches, lr=MULTIPROCESS_TYPES_ARGS["learning_rate"])
    assert max_difference(reference.state_dict(), start.state_dict()) > 0.02  # training moved the weights
    assert max_difference(weights[0], reference.state_dict()) < 1e-5

    dev = {name: rows for name, rows in (("same", pair_rows(MULTIPROCESS_DEV_SIZE, MULTIPROCESS_DEV_SEED)),
                                         ("mood", sentiment_rows(MULTIPROCESS_DEV_SIZE, MULTIPROCESS_DEV_SEED + 1)),
                                         ("topics", topic_set_rows(MULTIPROCESS_DEV_SIZE, MULTIPROCESS_DEV_SEED + 2)))}
    for report in reports:
        predicted, single = report["predictions"], report["single_process_predictions"]
        assert predicted == reports[0]["predictions"]
        assert {task: len(values) for task, values in predicted.items()} == dict.fromkeys(dev, MULTIPROCESS_DEV_SIZE)
        assert predicted["same"] == single["same"] and predicted["topics"] == single["topics"]
        assert predicted["mood"] == pytest.approx(single["mood"], abs=1e-5)
        metrics = report["metrics"]
        accuracy = np.mean([p == g for p, g in zip(predicted["same"], dev["same"]["label"])])
        assert metrics["eval_same_accuracy"] == pytest.approx(accuracy)
        assert metrics["eval_mood_pearson"] == pytest.approx(pearsonr(predicted["mood"], dev["mood"]["label"])[0],
                                                             abs=1e-5)
        gold = [[int(t in labels) for t in TOPICS] for labels in dev["topics"]["labels"]]
        hot = [[int(t in labels) for t in TOPICS] for labels in predicted["topics"]]
        assert metrics["eval_topics_micro_f1"] == pytest.approx(f1_score(gold, hot, average="micro", zero_division=0))


def test_multilabel_labels_written_as_a_list_string_are_refused(bert_tokenizer, tmp_path: Path) -> None:
    """A list saved into a text cell ('["sport", "tech"]') split at "," would become label names such as '["sport"'."""
    (tmp_path / "all.jsonl").write_text("".join(json.dumps({"text": "t", "labels": '["sport", "tech"]'}) + "\n"
                                                for _ in range(2)))
    spec = TaskSpec(name="tags", type="multilabel", train_file=str(tmp_path / "all.jsonl"))
    with pytest.raises(ValueError, match=r"Task 'tags', split 'train', row 0 \(.*all.jsonl, line 1\), column "
                                         r"'labels': the labels '\[\"sport\", \"tech\"\]' are a list written as a "
                                         "string; give a JSON list"):
        resolve_labels(spec, load_raw_datasets(spec))
    spec = TaskSpec(name="tags", type="multilabel", labels=["sport", "tech"], train_file=str(tmp_path / "all.jsonl"))
    with pytest.raises(ValueError, match=r"row 0 .*are a list written as a string"):
        preprocess_task(spec, load_raw_datasets(spec), bert_tokenizer, max_seq_length=16)


def test_the_card_says_which_main_metric_the_task_file_chose() -> None:
    from mtl_hf.model_card import MultiTaskModelCardData

    tasks = [TaskSpec(name="sim", type="regression", main_metric="spearmanr"), TaskSpec(name="score", type="regression")]
    card = MultiTaskModelCardData(title="t", model_id="m", base_model=None, tasks=tasks).render()
    assert ("- sim: `spearmanr`, chosen in the task file instead of the type's `pearson` (Pearson's correlation"
            in card)
    assert "- score: `pearson`, Pearson's correlation of the predicted with the true scores" in card


def test_two_processes_gather_every_window_of_a_question_before_answering(tmp_path: Path) -> None:
    """Extractive QA and topics on two gloo ranks, with contexts of several windows and an odd number of windows in
    the eval set (so the ranks' shards are padded and a question's windows are split between the ranks): the weights
    end where one process ends after the same global batches (the span loss's item count is examples), predict()
    gives one answer per question, in order, equal to one process's, and the gathered metrics are SQuAD's of those
    answers."""
    reports = run_two_processes(tmp_path, "qa")
    trained = reports[0]["trained"]
    assert {task for task, _ in trained} == {"where", "topic"}

    weights = [torch.load(tmp_path / f"weights{rank}.pt") for rank in (0, 1)]
    tokenizer = make_tokenizer(tmp_path / "tokenizer")
    start = make_fixture_model(tokenizer.vocab_size, specs=(WHERE, TOPIC))
    reference = copy.deepcopy(start)
    data = tokenized_qa(tokenizer, MULTIPROCESS_TRAIN_SIZE, seed=MULTIPROCESS_TRAIN_SEED)
    global_batches = [(task, rows_0 + rows_1) for (task, rows_0), (_, rows_1) in zip(*(r["trained"] for r in reports))]
    sgd_on_batches(reference, data, tokenizer, global_batches, lr=MULTIPROCESS_TYPES_ARGS["learning_rate"])
    assert max_difference(reference.state_dict(), start.state_dict()) > 0.02  # training moved the weights
    assert max_difference(weights[0], reference.state_dict()) < 1e-5

    dev = tokenized_qa(tokenizer, MULTIPROCESS_DEV_SIZE, seed=MULTIPROCESS_DEV_SEED)["where"]
    assert len(dev) % 2 == 1 and len(dev) > MULTIPROCESS_DEV_SIZE  # odd, and some questions span windows
    gold = qa_rows(MULTIPROCESS_DEV_SIZE, MULTIPROCESS_DEV_SEED, filler=(4, 28))["answers"]
    for report in reports:
        predicted, single = report["predictions"]["where"], report["single_process_predictions"]["where"]
        assert predicted == reports[0]["predictions"]["where"] == single
        assert len(predicted) == MULTIPROCESS_DEV_SIZE
        scores = SquadMetric().compute(predictions=predicted, references=[answer["text"] for answer in gold])
        assert report["metrics"]["eval_where_f1"] == pytest.approx(scores["f1"])
        assert report["metrics"]["eval_where_exact_match"] == pytest.approx(scores["exact_match"])
