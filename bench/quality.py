#!/usr/bin/env python
"""Quality: one multi-task model vs one single-task model per task vs the original design, on real corpora.

With the offline MiniLM-L6 encoder and equal hyper-parameters and epochs, trains

(a) mtl_hf: ``MultiTaskModel.from_encoder`` + ``MultiTaskTrainer`` on CoNLL-2003 NER and BBC topics together
    (proportional sampling: each example once per epoch, so the work equals (b));
(b) one HF ``Trainer`` per task, the run_ner.py / run_glue.py recipe (``AutoModelFor{Token,Sequence}Classification``,
    their tokenization functions, ``DataCollatorForTokenClassification`` / ``DataCollatorWithPadding``);
(c) the original design's loop (batch size 1, tasks alternating, NER word tags padded to the sub-token length) on a
    seeded sample of both corpora, next to (a) and (b) trained on the same sample;

and scores every model the same way on the full test sets: word-level strict-IOB2 seqeval entity F1 on CoNLL test,
accuracy on BBC test, plus the parameter count of what must be deployed. Results go to
``<output_dir>/quality.json`` (written after every contender) and, unless ``--quick`` or ``--no_docs``, into
``docs/benchmarks.md`` and ``docs/benchmarks.png``.

``--suite five`` (issue 11) is the same comparison of (a) and (b) over five task types: CoNLL NER, BBC topics,
VitaminC fact verification (sentence pairs), VADER sentiment intensity (regression) and question typing (multi-label),
each contender trained once per seed (``--seeds``, default three) on a reduced budget that fits a 2-core CPU, so that
every gap is judged against its seed-to-seed spread. Single-task baselines: run_ner.py, run_glue.py (pairs,
regression) and run_classification.py (multi-label) recipes with ``problem_type`` set. Results go to
``<output_dir>/quality_five.json`` and into their own section of ``docs/benchmarks.md``.

``--suite qa`` (issue 12): (a) one ``MultiTaskModel`` on extractive QA (SQuAD v1.1 rows, scored on SQuADShifts
new_wiki), CoNLL NER and BBC topics, against (b) a single-task ``AutoModelForQuestionAnswering`` trained with
transformers' run_qa.py recipe on the same QA rows, once per seed; SQuAD exact match / F1 of both, NER F1 and topic
accuracy of (a). Results go to ``<output_dir>/quality_qa.json`` and into their own section of ``docs/benchmarks.md``
(spliced in; the rest of the page is left as it is).

    python bench/fetch_data.py && python bench/quality.py            # ~40 min on 2 CPU cores
    python bench/quality.py --quick                                  # smoke run, a few minutes
    python bench/fetch_data.py --all && python bench/quality.py --suite five          # ~45 min on 2 CPU cores
    python bench/quality.py --suite five --quick                     # smoke run, a few minutes
    python bench/quality.py --suite qa                               # issue 12's QA suite (see below)
    python bench/quality.py --suite qa --quick                       # smoke run
    python bench/quality.py --suite heads                            # issue 13's head comparison (~40 min)
    python bench/quality.py --suite balancing                        # issue 14's loss balancing (~90 min)

``--suite heads`` (issue 13): the linear sequence head against the architecture's own classifier
(``classifier: native``), one MultiTaskModel on BBC topics + VitaminC pairs per seed and head; results go to
``<output_dir>/quality_heads.json`` and their own section of ``docs/benchmarks.md``.

``--suite balancing`` (issue 14): the five tasks with ``--loss_balancing`` static, uncertainty and dwa, each with
``--save_best_per_task``, against the single-task Trainers, per seed; the final model's and each task's best state's
test scores go to ``<output_dir>/quality_balancing.json`` and their own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (puts the repository root on sys.path)
from common import (
    BALANCING_HEADING,
    DEFAULT_OUTPUT_DIR,
    HEADS_HEADING,
    DOCS_MD,
    QA_HEADING,
    QA_MAX_SEQ_LENGTH,
    QA_SETTINGS,
    QA_TASK,
    QUALITY_QA_JSON,
    ROOT,
    FIVE_TASKS,
    HPARAMS,
    QUALITY_FIVE_JSON,
    QUALITY_JSON,
    OriginalMultiTaskNet,
    TrainingLoopTimer,
    accuracy,
    alternate,
    classification_scores,
    count_parameters,
    evaluate_five_targets,
    evaluate_qa_target,
    first_subtoken_tags,
    head,
    load_corpora,
    load_five_corpora,
    load_qa_corpora,
    machine_info,
    model_path,
    multilabel_scores,
    ner_scores,
    original_epoch,
    original_ner_example,
    original_topic_example,
    positional_tags,
    postprocess_qa_predictions,
    regression_scores,
    SPEED_HEADING,
    NOISE_P,
    _mean_std,
    _splice,
    render_docs,
    run_classification_multi_label_preprocess_function,
    run_glue_preprocess_function,
    run_ner_tokenize_and_align_labels,
    run_qa_prepare_train_features,
    run_qa_prepare_validation_features,
    sample,
    setup_torch,
    splice_qa_section,
    squad_scores,
    welch_p,
    write_json,
)

import datasets
import numpy as np
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    get_linear_schedule_with_warmup,
    set_seed,
)

from mtl_hf import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from mtl_hf.data import load_tokenizer, preprocess_task


def log(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Shared training arguments
# ---------------------------------------------------------------------------------------------------------------------


def trainer_kwargs(cfg: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The TrainingArguments every Trainer-based contender shares."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=cfg["per_device_train_batch_size"],
        per_device_eval_batch_size=64,
        learning_rate=cfg["learning_rate"],
        num_train_epochs=cfg["num_train_epochs"],
        warmup_steps=cfg["warmup_ratio"],  # a float < 1 is a ratio of the total steps (transformers 5)
        weight_decay=cfg["weight_decay"],
        lr_scheduler_type=cfg["lr_scheduler_type"],
        seed=cfg["seed"],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=100,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


# ---------------------------------------------------------------------------------------------------------------------
# (a) mtl_hf
# ---------------------------------------------------------------------------------------------------------------------


def train_mtl(specs: dict[str, Any], train: dict[str, datasets.Dataset], test: dict[str, datasets.Dataset],
              raw_test: dict[str, datasets.Dataset], tokenizer, cfg: dict[str, Any],
              save_to: Path | None = None) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """One ``MultiTaskModel`` on every task of ``specs`` (in their order), ``MultiTaskTrainer`` with proportional
    sampling (each example once per epoch, so the work equals the single-task runs together). Returns the test
    predictions in label space (NER tag lists padded with ``O`` to every word: words cut off by max_seq_length count
    as ``O``, as for the single-task model) and the run's cost, with ``predict``'s own metrics as a cross-check."""
    set_seed(cfg["seed"])
    model = MultiTaskModel.from_encoder(model_path(), list(specs.values()))
    timer = TrainingLoopTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = MultiTaskTrainingArguments(**trainer_kwargs(cfg, tmp), sampling_strategy="proportional")
        trainer = MultiTaskTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                                   callbacks=[timer])
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        output = trainer.predict(test)
    if save_to is not None:
        model.save_pretrained(save_to)
        tokenizer.save_pretrained(save_to)
    predictions = dict(output.predictions)
    for name, spec in specs.items():
        if spec.type == "ner":
            words = list(raw_test[name][spec.text_column_name])
            predictions[name] = [tags + ["O"] * (len(w) - len(tags)) for tags, w in zip(predictions[name], words)]
    cost = {"parameters": count_parameters(model), "train_seconds": round(seconds, 1),
            "loop_seconds": round(timer.seconds, 2),
            "train_examples": round(sum(len(d) for d in train.values()) * cfg["num_train_epochs"]),
            "train_steps": trainer.state.global_step,
            "trainer_metrics": {k: float(v) for k, v in output.metrics.items() if isinstance(v, (int, float))}}
    return predictions, cost


def run_mtl(specs, train: dict[str, datasets.Dataset], test: dict[str, datasets.Dataset], raw_test, tokenizer,
            cfg: dict[str, Any], save_to: Path | None = None) -> dict[str, Any]:
    """(a) of the two-task suite."""
    predictions, cost = train_mtl({t: specs[t] for t in ("topic", "ner")}, train, test, raw_test, tokenizer, cfg,
                                  save_to)
    return {
        "models": 1,
        "parameters": cost["parameters"],
        "ner": ner_scores(predictions["ner"], list(raw_test["ner"]["ner_tags"])),
        "topic_accuracy": accuracy(predictions["topic"], list(raw_test["topic"]["label"])),
        "train_seconds": cost["train_seconds"],
        "train_steps": cost["train_steps"],
        "trainer_metrics": cost["trainer_metrics"],
    }


# ---------------------------------------------------------------------------------------------------------------------
# (b) single-task Trainers
# ---------------------------------------------------------------------------------------------------------------------


def train_single_ner(spec, raw_train: datasets.Dataset, raw_test: datasets.Dataset, tokenizer,
                     cfg: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    """run_ner.py's recipe for one NER task: word tags of every test sentence (read at first sub-tokens; words cut off
    by truncation get ``O``) and the run's cost (parameters, wall and step-loop seconds, examples trained on)."""
    max_len = cfg["max_seq_length"]
    label_to_id = {label: i for i, label in enumerate(spec.labels)}
    fn = run_ner_tokenize_and_align_labels(tokenizer, label_to_id, max_len, spec.text_column_name,
                                           spec.label_column_name)
    train_ds = raw_train.map(fn, batched=True, desc="Running tokenizer on train dataset")
    test_ds = raw_test.map(fn, batched=True, desc="Running tokenizer on prediction dataset")
    set_seed(cfg["seed"])
    model = AutoModelForTokenClassification.from_pretrained(
        model_path(), num_labels=len(spec.labels), id2label=spec.id2label, label2id=label_to_id)
    logits, cost = _train_and_predict(model, train_ds, test_ds, DataCollatorForTokenClassification(tokenizer),
                                      tokenizer, cfg)
    predicted_ids = np.asarray(logits).argmax(-1)
    words = list(raw_test[spec.text_column_name])
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_len)
    predicted = [first_subtoken_tags(predicted_ids[i], encoding.word_ids(i), len(w), spec.id2label)
                 for i, w in enumerate(words)]
    return predicted, cost


# AutoModelForSequenceClassification's problem_type per mtl_hf task type (transformers' own loss selection).
PROBLEM_TYPES = {"classification": "single_label_classification", "regression": "regression",
                 "multilabel": "multi_label_classification"}


def train_single_sequence(spec, raw_train: datasets.Dataset, raw_test: datasets.Dataset, tokenizer,
                          cfg: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The run_glue.py / run_classification.py recipe for one sequence task of type classification (a pair task when
    ``spec.text_pair_column_name`` is set), regression or multilabel: ``AutoModelForSequenceClassification`` with the
    matching ``problem_type``, ``DataCollatorWithPadding``. Returns the test predictions in label space (a label,
    a float, or the labels whose sigmoid reaches the task's threshold) and the run's cost."""
    kind = spec.type
    if spec.label_column_name != "label":  # both scripts rename the label column to "label"
        raw_train = raw_train.rename_column(spec.label_column_name, "label")
        raw_test = raw_test.rename_column(spec.label_column_name, "label")
    label_to_id = None if kind == "regression" else {label: i for i, label in enumerate(spec.labels)}
    if kind == "multilabel":
        fn = run_classification_multi_label_preprocess_function(tokenizer, label_to_id, cfg["max_seq_length"],
                                                                spec.text_column_name)
    else:
        fn = run_glue_preprocess_function(tokenizer, label_to_id, cfg["max_seq_length"], spec.text_column_name,
                                          spec.text_pair_column_name)
    train_ds = raw_train.map(fn, batched=True, desc="Running tokenizer on dataset")
    test_ds = raw_test.map(fn, batched=True, desc="Running tokenizer on dataset")
    set_seed(cfg["seed"])
    label_kwargs = {} if label_to_id is None else {"id2label": spec.id2label, "label2id": label_to_id}
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path(), num_labels=1 if kind == "regression" else len(spec.labels), problem_type=PROBLEM_TYPES[kind],
        **label_kwargs)
    logits, cost = _train_and_predict(model, train_ds, test_ds, DataCollatorWithPadding(tokenizer), tokenizer, cfg)
    logits = np.asarray(logits)
    if kind == "regression":
        predicted: list[Any] = [float(x) for x in logits.reshape(-1)]
    elif kind == "multilabel":
        probabilities = 1 / (1 + np.exp(-logits))
        threshold = spec.threshold if spec.threshold is not None else 0.5
        predicted = [[spec.labels[j] for j in np.flatnonzero(row >= threshold)] for row in probabilities]
    else:
        predicted = [spec.labels[int(i)] for i in logits.argmax(-1)]
    return predicted, cost


def _train_and_predict(model, train_ds: datasets.Dataset, test_ds: datasets.Dataset, collator, tokenizer,
                       cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Train one single-task ``Trainer`` and predict the test split: (logits, cost)."""
    timer = TrainingLoopTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model=model, args=TrainingArguments(**trainer_kwargs(cfg, tmp)), train_dataset=train_ds,
                          processing_class=tokenizer, data_collator=collator, callbacks=[timer])
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        logits = trainer.predict(test_ds).predictions
    cost = {"parameters": count_parameters(model), "train_seconds": round(seconds, 1),
            "loop_seconds": round(timer.seconds, 2), "train_examples": round(len(train_ds) * cfg["num_train_epochs"]),
            "train_steps": trainer.state.global_step}
    return logits, cost


def run_single(specs, raw_train, raw_test, tokenizer, cfg: dict[str, Any]) -> dict[str, Any]:
    """raw_train / raw_test: {task: raw Dataset}. One Trainer per task, the example scripts' recipe."""
    ner_predicted, ner_cost = train_single_ner(specs["ner"], raw_train["ner"], raw_test["ner"], tokenizer, cfg)
    topic_predicted, topic_cost = train_single_sequence(specs["topic"], raw_train["topic"], raw_test["topic"],
                                                        tokenizer, cfg)
    return {
        "models": 2,
        "ner": ner_scores(ner_predicted, list(raw_test["ner"]["ner_tags"])),
        "ner_parameters": ner_cost["parameters"],
        "ner_train_seconds": ner_cost["train_seconds"],
        "topic_accuracy": accuracy(topic_predicted, list(raw_test["topic"]["label"])),
        "topic_parameters": topic_cost["parameters"],
        "topic_train_seconds": topic_cost["train_seconds"],
        "parameters": ner_cost["parameters"] + topic_cost["parameters"],
        "train_seconds": round(ner_cost["train_seconds"] + topic_cost["train_seconds"], 1),
    }


# ---------------------------------------------------------------------------------------------------------------------
# (c) the original design
# ---------------------------------------------------------------------------------------------------------------------


def run_original(specs, raw_train, raw_test, tokenizer, cfg: dict[str, Any], aligned: bool = False) -> dict[str, Any]:
    """The original loop. ``aligned=False``: as designed (word tags padded to the sub-token length, read back by
    position). ``aligned=True``: the control, the same loop with each word's tag on its first sub-token (mtl_hf's
    alignment) and predictions read back at first sub-tokens."""
    max_len = cfg["max_seq_length"]
    ner_spec, topic_spec = specs["ner"], specs["topic"]
    ner_label2id, topic_label2id = ner_spec.label2id, topic_spec.label2id
    name = "original loop, aligned labels" if aligned else "original loop"
    ner_examples = [original_ner_example(tokenizer, w, t, ner_label2id, max_len, aligned=aligned)
                    for w, t in zip(list(raw_train["ner"]["tokens"]), list(raw_train["ner"]["ner_tags"]))]
    topic_examples = [original_topic_example(tokenizer, x, topic_label2id[y], max_len)
                      for x, y in zip(list(raw_train["topic"]["text"]), list(raw_train["topic"]["label"]))]
    set_seed(cfg["seed"])
    model = OriginalMultiTaskNet(model_path(), len(ner_spec.labels), len(topic_spec.labels))
    epochs = cfg["num_train_epochs"]
    total_steps = epochs * (len(ner_examples) + len(topic_examples))
    # As designed: torch's AdamW with its defaults (on CPU the per-parameter implementation).
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(cfg["warmup_ratio"] * total_steps), total_steps)
    rng = random.Random(cfg["seed"])
    start = time.perf_counter()
    losses = []
    for epoch in range(1, epochs + 1):
        ner_order, topic_order = ner_examples[:], topic_examples[:]
        rng.shuffle(ner_order)
        rng.shuffle(topic_order)
        losses.append(original_epoch(model, optimizer, alternate(ner_order, topic_order), scheduler, epoch, epochs,
                                     log=lambda line: log(f"{name}: {line}")))
    seconds = time.perf_counter() - start

    # Score on words like everyone else, reading word i at sub-token position i (the rule it was trained with).
    model.eval()
    words_all, tags_all = list(raw_test["ner"]["tokens"]), list(raw_test["ner"]["ner_tags"])
    predicted: list[list[str]] = []
    own_correct = own_total = 0
    with torch.no_grad():
        for first in range(0, len(words_all), 64):
            words = words_all[first:first + 64]
            enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_len, padding=True,
                            return_tensors="pt")
            ids = model(enc["input_ids"], enc["attention_mask"], "ner").argmax(-1)
            lengths = enc["attention_mask"].sum(-1).tolist()
            for row, (w, tags) in enumerate(zip(words, tags_all[first:first + 64])):
                if aligned:
                    predicted.append(first_subtoken_tags(ids[row].tolist(), enc.word_ids(row), len(w),
                                                         ner_spec.id2label))
                else:
                    predicted.append(positional_tags(ids[row].tolist(), lengths[row], len(w), ner_spec.id2label))
                # How its own design scored itself: sub-token positions against its training labels.
                own = original_ner_example(tokenizer, w, tags, ner_label2id, max_len, aligned)["labels"][0].tolist()
                pairs = [(p, y) for p, y in zip(ids[row, :lengths[row]].tolist(), own) if y != -100]
                own_correct += sum(int(p == y) for p, y in pairs)
                own_total += len(pairs)
        topic_predicted = []
        texts = list(raw_test["topic"]["text"])
        for first in range(0, len(texts), 64):
            enc = tokenizer(texts[first:first + 64], truncation=True, max_length=max_len, padding=True,
                            return_tensors="pt")
            ids = model(enc["input_ids"], enc["attention_mask"], "topic").argmax(-1).tolist()
            topic_predicted += [topic_spec.id2label[i] for i in ids]
    steps = epochs * (len(ner_examples) + len(topic_examples))
    return {
        "models": 1,
        "parameters": count_parameters(model),
        "ner": ner_scores(predicted, tags_all),
        "topic_accuracy": accuracy(topic_predicted, list(raw_test["topic"]["label"])),
        "own_subtoken_accuracy": round(100 * own_correct / max(own_total, 1), 2),
        "train_seconds": round(seconds, 1),
        "train_steps": steps,
        "examples_per_s": round(steps / seconds, 2),
        "epoch_losses": losses,
    }


# ---------------------------------------------------------------------------------------------------------------------
# The five-task suite (issue 11): CoNLL NER, BBC topics, VitaminC pairs, VADER regression, question typing
# ---------------------------------------------------------------------------------------------------------------------

# A budget that fits three seeds of both contenders into about 45 minutes on 2 CPU cores (VitaminC pairs, ~57
# sub-tokens each, dominate the cost), and the --quick smoke run.
FIVE_BUDGET: dict[str, Any] = {"max_train_samples": 1000, "max_test_samples": 1000, "epochs": 2, "seeds": [0, 1, 2]}
FIVE_QUICK: dict[str, Any] = {"max_train_samples": 32, "max_test_samples": 64, "epochs": 1, "seeds": [0, 1]}
# On 1,000 rows per task the two-task suite's batch size 32 and learning rate 5e-5 make 63 NER steps that end at
# entity F1 28 (single-task, seed 0, 500 test sentences); batch size 16 and 1e-4 reach 65 in the same time. Both
# contenders use these.
FIVE_HPARAMS: dict[str, Any] = {"per_device_train_batch_size": 16, "learning_rate": 1e-4}


def trivial_baselines(specs, raw_train, raw_test) -> dict[str, dict[str, float]]:
    """What a model that ignores its input scores, to read the scores against: the accuracy of always predicting the
    most frequent training label (classification), the MSE of always predicting the training mean (regression), and
    the micro-F1 of always predicting the labels at least half the training rows have (multilabel)."""
    out: dict[str, dict[str, float]] = {}
    for name, spec in specs.items():
        train_labels = list(raw_train[name][spec.label_column_name])
        test_labels = list(raw_test[name][spec.label_column_name])
        if spec.type == "classification":
            majority = max(set(train_labels), key=train_labels.count)
            out[name] = {"majority_accuracy": accuracy([majority] * len(test_labels), test_labels)}
        elif spec.type == "regression":
            mean = float(np.mean(train_labels))
            out[name] = {"mean_mse": round(float(np.mean((np.asarray(test_labels) - mean) ** 2)), 4)}
        elif spec.type == "multilabel":
            # Every row gets the labels that at least half the training rows have (none if no label is that common).
            frequent = [label for label in spec.labels
                        if sum(label in row for row in train_labels) >= len(train_labels) / 2]
            scores = multilabel_scores([frequent] * len(test_labels), test_labels, spec.labels)
            out[name] = {"frequent_labels": frequent, "frequent_micro_f1": scores["micro_f1"]}
    return out


def score_five(specs: dict[str, Any], predictions: dict[str, list[Any]],
               raw_test: dict[str, datasets.Dataset]) -> dict[str, dict[str, float]]:
    """Every task scored by ``bench/common.py``'s functions from label-space predictions against the raw test rows,
    the same way for every contender (not by mtl_hf's metrics, which are what is being checked)."""
    scores: dict[str, dict[str, float]] = {}
    for name, spec in specs.items():
        gold = list(raw_test[name][spec.label_column_name])
        if spec.type == "ner":
            scores[name] = ner_scores(predictions[name], gold)
        elif spec.type == "regression":
            scores[name] = regression_scores(predictions[name], gold)
        elif spec.type == "multilabel":
            scores[name] = multilabel_scores(predictions[name], gold, spec.labels)
        else:
            scores[name] = classification_scores(predictions[name], gold)
    return scores


def run_mtl_five(specs, train, test, raw_test, tokenizer, cfg: dict[str, Any]) -> dict[str, Any]:
    """(a): one multi-task model on all five tasks."""
    predictions, cost = train_mtl(specs, train, test, raw_test, tokenizer, cfg)
    return {"models": 1, "scores": score_five(specs, predictions, raw_test), **cost}


def run_single_five(specs, raw_train, raw_test, tokenizer, cfg: dict[str, Any]) -> dict[str, Any]:
    """(b): one single-task HF Trainer per task, one after the other; costs are summed over the five runs."""
    predictions: dict[str, list[Any]] = {}
    costs: dict[str, dict[str, Any]] = {}
    for name, spec in specs.items():
        train_one = train_single_ner if spec.type == "ner" else train_single_sequence
        predictions[name], costs[name] = train_one(spec, raw_train[name], raw_test[name], tokenizer, cfg)
    totals = {key: round(sum(cost[key] for cost in costs.values()), 2)
              for key in ("parameters", "train_seconds", "loop_seconds", "train_examples", "train_steps")}
    return {"models": len(specs), "scores": score_five(specs, predictions, raw_test), **totals, "tasks": costs}


def main_five(args: argparse.Namespace) -> None:
    """Both contenders once per seed (alternating which goes first, so that a drift in machine load hits both),
    writing ``<output_dir>/quality_five.json`` after every run."""
    setup_torch()
    cfg = dict(HPARAMS, **FIVE_HPARAMS, num_train_epochs=args.epochs, max_train_samples=args.max_train_samples,
               max_test_samples=args.max_test_samples, seeds=args.seeds)
    cfg.pop("seed")
    out_path = args.output_dir / QUALITY_FIVE_JSON
    results: dict[str, Any] = {"suite": "five", "machine": machine_info(), "config": cfg, "quick": args.quick}
    log(f"five-task suite; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; config: {cfg}")

    specs, raws = load_five_corpora(args.output_dir)
    tokenizer = load_tokenizer(model_path())
    raw_train = {t: head(raws[t]["train"], args.max_train_samples) for t in specs}
    raw_test = {t: head(raws[t]["test"], args.max_test_samples) for t in specs}
    mtl_data = {t: preprocess_task(specs[t], datasets.DatasetDict(train=raw_train[t], test=raw_test[t]), tokenizer,
                                   max_seq_length=cfg["max_seq_length"]) for t in specs}
    mtl_train = {t: mtl_data[t]["train"] for t in specs}
    mtl_test = {t: mtl_data[t]["test"] for t in specs}
    results["train_rows"] = {t: len(d) for t, d in raw_train.items()}
    results["test_rows"] = {t: len(d) for t, d in raw_test.items()}
    results["task_types"] = {t: spec.type for t, spec in specs.items()}
    results["trivial_baselines"] = trivial_baselines(specs, raw_train, raw_test)
    results["runs"] = []
    total_start = time.perf_counter()
    for index, seed in enumerate(args.seeds):
        run_cfg = dict(cfg, seed=seed)
        order = ["mtl", "single"] if index % 2 == 0 else ["single", "mtl"]
        run: dict[str, Any] = {"seed": seed, "order": order}
        results["runs"].append(run)
        for contender in order:
            log(f"seed {seed}: {'(a) MultiTaskTrainer, five tasks' if contender == 'mtl' else '(b) five Trainers'}")
            if contender == "mtl":
                run["mtl"] = run_mtl_five(specs, mtl_train, mtl_test, raw_test, tokenizer, run_cfg)
            else:
                run["single"] = run_single_five(specs, raw_train, raw_test, tokenizer, run_cfg)
            res = run[contender]
            main = ", ".join(f"{t} {res['scores'][t][info['main']]}" for t, info in FIVE_TASKS.items())
            log(f"seed {seed} {contender}: {main}; {res['train_examples'] / res['loop_seconds']:.1f} examples/s, "
                f"{res['train_seconds']:.0f} s")
            write_json(out_path, results)
    results["total_seconds"] = round(time.perf_counter() - total_start, 1)
    write_json(out_path, results)
    for target in evaluate_five_targets(results):
        log(f"{target['target']}: {target['measured']} -> {'met' if target['met'] else 'MISSED'}")
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    if not args.no_docs:
        written = render_docs(args.output_dir)
        log("updated " + " and ".join(str(path.relative_to(ROOT)) for path in written))


# ---------------------------------------------------------------------------------------------------------------------
# The QA suite (issue 12): extractive QA (SQuAD) beside CoNLL NER and BBC topics, against a run_qa.py model
# ---------------------------------------------------------------------------------------------------------------------

# A budget that fits three seeds of both contenders on 2 CPU cores: QA rows are seeded random samples (the SQuAD
# files are ordered by article, so the first rows would be a handful of articles), NER and topic rows the first ones,
# as in the five-task suite. Hyper-parameters: the five-task suite's.
QA_BUDGET: dict[str, Any] = {"qa_train_samples": 1000, "qa_test_samples": 500, "max_train_samples": 1000,
                             "max_test_samples": 1000, "epochs": 2, "seeds": [0, 1, 2]}
QA_QUICK: dict[str, Any] = {"qa_train_samples": 48, "qa_test_samples": 32, "max_train_samples": 32,
                            "max_test_samples": 64, "epochs": 1, "seeds": [0]}
# The seed of the QA samples: the same rows in every seed's runs (the seeds vary the training only).
QA_SAMPLE_SEED = 42


def train_single_qa(spec, raw_train: datasets.Dataset, raw_test: datasets.Dataset, tokenizer,
                    cfg: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """run_qa.py's recipe for one SQuAD v1 task: ``AutoModelForQuestionAnswering``, ``prepare_train_features`` /
    ``prepare_validation_features`` (dynamic padding by ``DataCollatorWithPadding``), ``Trainer``, the start and end
    logits of ``Trainer.predict`` post-processed by utils_qa.py's ``postprocess_qa_predictions``. Returns one answer
    text per test row (in order) and the run's cost."""
    max_len = min(cfg["qa_max_seq_length"], tokenizer.model_max_length)
    columns = {"question_column_name": spec.question_column_name, "context_column_name": spec.context_column_name}
    train_fn = run_qa_prepare_train_features(tokenizer, max_len, cfg["doc_stride"],
                                             answer_column_name=spec.answers_column_name, **columns)
    test_fn = run_qa_prepare_validation_features(tokenizer, max_len, cfg["doc_stride"], **columns)
    train_ds = raw_train.map(train_fn, batched=True, remove_columns=raw_train.column_names,
                             desc="Running tokenizer on train dataset")
    test_features = raw_test.map(test_fn, batched=True, remove_columns=raw_test.column_names,
                                 desc="Running tokenizer on prediction dataset")
    set_seed(cfg["seed"])
    model = AutoModelForQuestionAnswering.from_pretrained(model_path())
    (start_logits, end_logits), cost = _train_and_predict(
        model, train_ds, test_features.remove_columns(["example_id", "offset_mapping"]),
        DataCollatorWithPadding(tokenizer), tokenizer, cfg)
    answers = postprocess_qa_predictions(raw_test, test_features, (start_logits, end_logits),
                                         n_best_size=cfg["n_best_size"], max_answer_length=cfg["max_answer_length"])
    cost["train_windows"] = len(train_ds)
    cost["test_windows"] = len(test_features)
    return [answers[example_id] for example_id in raw_test["id"]], cost


def score_qa_suite(specs: dict[str, Any], predictions: dict[str, list[Any]],
                   raw_test: dict[str, datasets.Dataset]) -> dict[str, dict[str, float]]:
    """Each task of ``predictions`` scored by bench/common.py's functions against the raw test rows: SQuAD EM / F1,
    seqeval on words, accuracy and macro-F1."""
    scores: dict[str, dict[str, float]] = {}
    for name, predicted in predictions.items():
        spec = specs[name]
        if spec.type == "extractive_qa":
            scores[name] = squad_scores(list(predicted), raw_test[name])
        elif spec.type == "ner":
            scores[name] = ner_scores(predicted, list(raw_test[name][spec.label_column_name]))
        else:
            scores[name] = classification_scores(predicted, list(raw_test[name][spec.label_column_name]))
    return scores


def main_qa(args: argparse.Namespace) -> None:
    """``--suite qa``: (a) one MultiTaskModel on QA + NER + topics and (b) the run_qa.py single-task QA model, once per
    seed (alternating which goes first), writing ``<output_dir>/quality_qa.json`` after every run and, unless
    ``--quick`` / ``--no_docs``, splicing its section into ``docs/benchmarks.md``."""
    setup_torch()
    cfg = dict(HPARAMS, **FIVE_HPARAMS, num_train_epochs=args.epochs, max_train_samples=args.max_train_samples,
               max_test_samples=args.max_test_samples, qa_train_samples=args.qa_train_samples,
               qa_test_samples=args.qa_test_samples, qa_max_seq_length=QA_MAX_SEQ_LENGTH, **QA_SETTINGS,
               qa_sample_seed=QA_SAMPLE_SEED, seeds=args.seeds)
    cfg.pop("seed")
    out_path = args.output_dir / QUALITY_QA_JSON
    results: dict[str, Any] = {"suite": "qa", "machine": machine_info(), "config": cfg, "quick": args.quick}
    log(f"QA suite; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; config: {cfg}")

    specs, raws = load_qa_corpora(args.output_dir)
    tokenizer = load_tokenizer(model_path())
    raw_train, raw_test = {}, {}
    for name in specs:
        if name == QA_TASK:
            raw_train[name] = sample(raws[name]["train"], args.qa_train_samples, seed=QA_SAMPLE_SEED)
            raw_test[name] = sample(raws[name]["test"], args.qa_test_samples, seed=QA_SAMPLE_SEED)
        else:
            raw_train[name] = head(raws[name]["train"], args.max_train_samples)
            raw_test[name] = head(raws[name]["test"], args.max_test_samples)
    lengths = {name: cfg["qa_max_seq_length"] if name == QA_TASK else cfg["max_seq_length"] for name in specs}
    mtl_data = {name: preprocess_task(specs[name], datasets.DatasetDict(train=raw_train[name], test=raw_test[name]),
                                      tokenizer, max_seq_length=lengths[name]) for name in specs}
    mtl_train = {name: mtl_data[name]["train"] for name in specs}
    mtl_test = {name: mtl_data[name]["test"] for name in specs}
    results["train_rows"] = {name: len(d) for name, d in raw_train.items()}
    results["test_rows"] = {name: len(d) for name, d in raw_test.items()}
    results["qa_windows"] = {"train": len(mtl_train[QA_TASK]), "test": len(mtl_test[QA_TASK])}
    results["task_types"] = {name: spec.type for name, spec in specs.items()}
    results["runs"] = []
    total_start = time.perf_counter()
    for index, seed in enumerate(args.seeds):
        run_cfg = dict(cfg, seed=seed)
        order = ["mtl", "single"] if index % 2 == 0 else ["single", "mtl"]
        run: dict[str, Any] = {"seed": seed, "order": order}
        results["runs"].append(run)
        for contender in order:
            if contender == "mtl":
                log(f"seed {seed}: (a) MultiTaskTrainer, QA + NER + topics")
                predictions, cost = train_mtl(specs, mtl_train, mtl_test, raw_test, tokenizer, run_cfg)
                run["mtl"] = {"models": 1, "scores": score_qa_suite(specs, predictions, raw_test), **cost}
            else:
                log(f"seed {seed}: (b) run_qa.py Trainer, QA only")
                answers, cost = train_single_qa(specs[QA_TASK], raw_train[QA_TASK], raw_test[QA_TASK], tokenizer,
                                                run_cfg)
                run["single"] = {"models": 1, "scores": score_qa_suite(specs, {QA_TASK: answers}, raw_test), **cost}
            res = run[contender]
            line = ", ".join(f"{t} {k} {v}" for t, s in res["scores"].items() for k, v in s.items()
                             if k in ("exact_match", "f1", "accuracy") and (t != "ner" or k == "f1"))
            log(f"seed {seed} {contender}: {line}; train {res['train_seconds']:.0f} s")
            write_json(out_path, results)
    results["total_seconds"] = round(time.perf_counter() - total_start, 1)
    write_json(out_path, results)
    target = evaluate_qa_target(results)
    if target is not None:
        log(f"{target['target']}: {target['measured']} -> {'met' if target['met'] else 'MISSED'} ({target['noise']})")
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    if not args.no_docs:
        splice_qa_section(DOCS_MD, results)
        log(f"updated {DOCS_MD.relative_to(ROOT)} (section {QA_HEADING!r} only)")


# ---------------------------------------------------------------------------------------------------------------------
# The heads suite (issue 13): the linear head vs the architecture's own sequence classifier (`classifier: native`)
# ---------------------------------------------------------------------------------------------------------------------

HEADS_TASKS = ("topic", "vitaminc")  # BBC topics (single texts) and VitaminC (pairs)
HEADS = ("linear", "native")
# Train rows per task: VitaminC needs more than the five-task suite's 1,000 to rise above chance on this encoder,
# BBC reaches 85% on far fewer; --max_train_samples caps both. One torch thread: the suite shares the 2-core machine with other work, and two threads on a busy core run
# several times slower.
HEADS_TRAIN_ROWS = {"topic": 600, "vitaminc": 2400}
HEADS_MAX_SEQ_LENGTH = 64  # VitaminC pairs average ~57 sub-tokens; a BBC document's first 64 name its topic
HEADS_BUDGET: dict[str, Any] = {"max_test_samples": 1000, "epochs": 2, "seeds": [0, 1, 2]}
HEADS_QUICK: dict[str, Any] = {"max_train_samples": 32, "max_test_samples": 64, "epochs": 1, "seeds": [0, 1]}
QUALITY_HEADS_JSON = "quality_heads.json"


def main_heads(args: argparse.Namespace) -> None:
    """One MultiTaskModel on BBC topics + VitaminC pairs per seed and head, both tasks with the same head, the
    five-task suite's hyper-parameters; heads alternate which goes first. Writes ``<output_dir>/quality_heads.json``
    after every run and, unless --no_docs, splices its section into docs/benchmarks.md."""
    import dataclasses

    setup_torch(num_threads=1)
    rows = {t: min(n, args.max_train_samples or n) for t, n in HEADS_TRAIN_ROWS.items()}
    cfg = dict(HPARAMS, **FIVE_HPARAMS, num_train_epochs=args.epochs, train_rows=rows,
               max_test_samples=args.max_test_samples, seeds=args.seeds, torch_threads=1,
               max_seq_length=HEADS_MAX_SEQ_LENGTH)
    cfg.pop("seed")
    out_path = args.output_dir / QUALITY_HEADS_JSON
    results: dict[str, Any] = {"suite": "heads", "machine": machine_info(), "config": cfg, "quick": args.quick}
    log(f"heads suite; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; config: {cfg}")
    specs, raws = load_five_corpora(args.output_dir)
    specs = {t: specs[t] for t in HEADS_TASKS}
    tokenizer = load_tokenizer(model_path())
    raw_train = {t: head(raws[t]["train"], rows[t]) for t in specs}
    raw_test = {t: head(raws[t]["test"], args.max_test_samples) for t in specs}
    data = {t: preprocess_task(specs[t], datasets.DatasetDict(train=raw_train[t], test=raw_test[t]), tokenizer,
                               max_seq_length=cfg["max_seq_length"]) for t in specs}
    results["train_rows"] = {t: len(d) for t, d in raw_train.items()}
    results["test_rows"] = {t: len(d) for t, d in raw_test.items()}
    results["trivial_baselines"] = trivial_baselines(specs, raw_train, raw_test)
    results["runs"] = []
    total_start = time.perf_counter()
    for index, seed in enumerate(args.seeds):
        run: dict[str, Any] = {"seed": seed, "order": list(HEADS if index % 2 == 0 else reversed(HEADS))}
        results["runs"].append(run)
        for classifier in run["order"]:
            headed = {t: dataclasses.replace(spec, classifier=classifier) for t, spec in specs.items()}
            log(f"seed {seed}: {classifier} heads")
            predictions, cost = train_mtl(headed, {t: data[t]["train"] for t in specs},
                                          {t: data[t]["test"] for t in specs}, raw_test, tokenizer,
                                          dict(cfg, seed=seed))
            run[classifier] = {"scores": score_five(headed, predictions, raw_test), **cost}
            log(f"seed {seed} {classifier}: " + ", ".join(
                f"{t} {run[classifier]['scores'][t]['accuracy']}" for t in specs)
                + f"; {cost['train_seconds']:.0f} s")
            write_json(out_path, results)
    results["total_seconds"] = round(time.perf_counter() - total_start, 1)
    write_json(out_path, results)
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    for line in render_heads(results):
        print(line, flush=True)
    if not args.no_docs:
        splice_quality_section(HEADS_HEADING, render_heads(results))
        log(f"updated {DOCS_MD.relative_to(ROOT)} (section {HEADS_HEADING!r} only)")


def render_heads(results: dict[str, Any]) -> list[str]:
    """The docs section of the heads suite: per task and head, accuracy and macro-F1 as mean ± std over the seeds,
    with Welch's p for native vs linear."""
    runs = [run for run in results["runs"] if all(h in run for h in HEADS)]
    cfg = results["config"]
    out = [HEADS_HEADING, "",
           "Which head a classification, pair, regression or multilabel task gets by default (`classifier` in the "
           "task file). `linear` is mtl_hf's first-token vector -> dropout -> linear layer; `native` is the "
           "encoder architecture's own sequence classifier (BERT's pretrained pooler, RoBERTa's dense + tanh, ...), "
           "which exports exactly as `AutoModelForSequenceClassification`. One MultiTaskModel on BBC topics and "
           f"VitaminC pairs per seed and head, both tasks with that head, MiniLM-L6, inputs of "
           f"{cfg['max_seq_length']} sub-tokens, {cfg['num_train_epochs']:g} epochs, batch {cfg['per_device_train_batch_size']}, lr {cfg['learning_rate']:g}, the first "
           f"{results['train_rows']['topic']} BBC and {results['train_rows']['vitaminc']} VitaminC train rows, "
           f"scored on {results['test_rows']['topic']} and {results['test_rows']['vitaminc']} test rows; seeds "
           f"{', '.join(str(run['seed']) for run in runs)}. Reproduce: `python bench/quality.py --suite heads`.", "",
           "| task | metric | linear | native | native - linear | Welch p |", "|---|---|---|---|---|---|"]
    for task, title in (("topic", "BBC topics"), ("vitaminc", "VitaminC pairs")):
        for metric in ("accuracy", "macro_f1"):
            values = {h: [run[h]["scores"][task][metric] for run in runs] for h in HEADS}
            stats = {h: _mean_std(values[h]) for h in HEADS}
            p = welch_p(values["linear"], values["native"])
            out.append(f"| {title} | {metric} | {stats['linear']['mean']:.2f} ± {stats['linear']['std']:.2f} | "
                       f"{stats['native']['mean']:.2f} ± {stats['native']['std']:.2f} | "
                       f"{stats['native']['mean'] - stats['linear']['mean']:+.2f} | "
                       f"{'n/a' if p is None else f'{p:.2f}'} |")
    # The default: native only if it loses on neither task outside the seed noise (its exact export is worth a tie).
    losses = []
    for task, title in (("topic", "BBC"), ("vitaminc", "VitaminC")):
        values = {h: [run[h]["scores"][task]["accuracy"] for run in runs] for h in HEADS}
        p = welch_p(values["linear"], values["native"])
        if p is not None and p < NOISE_P and statistics.fmean(values["native"]) < statistics.fmean(values["linear"]):
            losses.append(f"{title} ({statistics.fmean(values['native']) - statistics.fmean(values['linear']):+.2f} "
                          f"points, p = {p:.2f})")
    if losses:
        verdict = ("**Default: `linear`.** The native head loses outside the seed noise on " + " and ".join(losses)
                   + "; it stays an option (`classifier: native`) for tasks that must export as a plain "
                   "`AutoModelForSequenceClassification`.")
    else:
        verdict = ("**The native head loses on neither task outside the seed noise**, and it exports exactly: it could "
                   "be the default.")
    majority = {t: results["trivial_baselines"][t]["majority_accuracy"] for t in HEADS_TASKS}
    out += ["", f"Always predicting the most frequent label scores {majority['topic']:.2f} (BBC) and "
                f"{majority['vitaminc']:.2f} (VitaminC) accuracy. Per seed (topic / VitaminC accuracy): "
            + "; ".join(f"seed {run['seed']}: linear {run['linear']['scores']['topic']['accuracy']:.2f} / "
                        f"{run['linear']['scores']['vitaminc']['accuracy']:.2f}, native "
                        f"{run['native']['scores']['topic']['accuracy']:.2f} / "
                        f"{run['native']['scores']['vitaminc']['accuracy']:.2f}" for run in runs) + ".", "",
            verdict, ""]
    vitaminc = statistics.fmean(run[h]["scores"]["vitaminc"]["accuracy"] for run in runs for h in HEADS)
    if vitaminc - majority["vitaminc"] < 5:
        out += [f"VitaminC stays within {vitaminc - majority['vitaminc']:.1f} points of the majority baseline with "
                "either head at this budget (the five-task suite's VitaminC did not learn either): the pair comparison "
                "says little; deciding it would take a budget where VitaminC learns (more rows and epochs, longer "
                "inputs), several hours on this 2-core machine.", ""]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The balancing suite (issue 14): static vs uncertainty vs dwa loss balancing, per-task best states vs the final model
# ---------------------------------------------------------------------------------------------------------------------

BALANCINGS = ("static", "uncertainty", "dwa")
# Three epochs, so that dwa acts at all: it needs two finished epochs' losses, so its weights are 1 (static) in epochs
# 1 and 2 and change in epoch 3. To fit three balancings and the single-task baselines over three seeds into about
# 90 minutes on one core, fewer rows and shorter inputs than the five-task suite (which took 2 epochs of 1,000 rows,
# 128 sub-tokens). The dev rows (the train rows after the training rows) pick each task's best state; the test rows
# score it.
BAL_BUDGET: dict[str, Any] = {"max_train_samples": 400, "dev_rows": 100, "max_test_samples": 1000, "epochs": 3,
                              "seeds": [0, 1, 2]}
BAL_QUICK: dict[str, Any] = {"max_train_samples": 32, "dev_rows": 16, "max_test_samples": 48, "epochs": 3,
                             "seeds": [0, 1]}
BAL_MAX_SEQ_LENGTH = 64
BAL_EVALS_PER_EPOCH = 2
QUALITY_BALANCING_JSON = "quality_balancing.json"


def predict_best_states(specs: dict[str, Any], output_dir: Path, test: dict[str, datasets.Dataset],
                        raw_test: dict[str, datasets.Dataset], tokenizer, max_seq_length: int) -> dict[str, Any]:
    """Each task's test predictions from what ``--save_best_per_task`` left in ``output_dir/best/<task>/``, loaded
    the way a user loads it: an exported NER model through ``AutoModelForTokenClassification`` (word tags read at
    first sub-tokens), a whole multi-task model through ``MultiTaskModel.from_pretrained`` and
    ``MultiTaskTrainer.predict``. Returns ``{task: {"predictions", "step", "format"}}``."""
    from mtl_hf.task_selection import read_best

    found = read_best(output_dir)
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        record = found[name]
        folder = output_dir / "best" / name
        if record["format"] == "transformers":
            if spec.type != "ner":
                raise RuntimeError(f"{name}: an exported {spec.type} best state; this suite reads NER exports only")
            model = AutoModelForTokenClassification.from_pretrained(folder).eval()
            words = list(raw_test[name][spec.text_column_name])
            predicted = []
            for start in range(0, len(words), 64):
                chunk = words[start:start + 64]
                encoding = tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=max_seq_length,
                                     padding=True, return_tensors="pt")
                with torch.no_grad():
                    ids = model(**encoding).logits.argmax(-1).numpy()
                predicted += [first_subtoken_tags(ids[i], encoding.word_ids(i), len(w), model.config.id2label)
                              for i, w in enumerate(chunk)]
        else:
            model = MultiTaskModel.from_pretrained(folder).eval()
            with tempfile.TemporaryDirectory() as tmp:
                args = MultiTaskTrainingArguments(output_dir=tmp, per_device_eval_batch_size=64, report_to="none",
                                                  disable_tqdm=True, dataloader_pin_memory=False)
                trainer = MultiTaskTrainer(model=model, args=args, processing_class=tokenizer)
                predicted = trainer.predict({name: test[name]}).predictions[name]
            if spec.type == "ner":
                words = list(raw_test[name][spec.text_column_name])
                predicted = [tags + ["O"] * (len(w) - len(tags)) for tags, w in zip(predicted, words)]
        out[name] = {"predictions": list(predicted), "step": record["step"], "format": record["format"],
                     "dev_value": record["value"]}
    return out


def run_balancing(specs, train, dev, test, raw_test, tokenizer, cfg: dict[str, Any], balancing: str) -> dict[str, Any]:
    """One MultiTaskModel on the five tasks with ``--loss_balancing balancing`` and ``--save_best_per_task``
    (evaluating on the dev rows twice an epoch): the final model's and the per-task best states' test scores."""
    set_seed(cfg["seed"])
    model = MultiTaskModel.from_encoder(model_path(), list(specs.values()))
    steps_per_epoch = sum(math.ceil(len(d) / cfg["per_device_train_batch_size"]) for d in train.values())
    timer = TrainingLoopTimer()
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = dict(trainer_kwargs(cfg, tmp), eval_strategy="steps",
                      eval_steps=math.ceil(steps_per_epoch / BAL_EVALS_PER_EPOCH))
        args = MultiTaskTrainingArguments(**kwargs, sampling_strategy="proportional", loss_balancing=balancing,
                                          save_best_per_task=True)
        trainer = MultiTaskTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                                   processing_class=tokenizer, callbacks=[timer])
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        final = dict(trainer.predict(test).predictions)
        best = predict_best_states(specs, Path(tmp), test, raw_test, tokenizer, cfg["max_seq_length"])
    for name, spec in specs.items():
        if spec.type == "ner":
            words = list(raw_test[name][spec.text_column_name])
            final[name] = [tags + ["O"] * (len(w) - len(tags)) for tags, w in zip(final[name], words)]
    history = trainer.state.log_history
    weights = {}  # each task's effective weight at the last logged step (weight_<task>)
    for entry in history:
        weights.update({key[len("weight_"):]: value for key, value in entry.items() if key.startswith("weight_")})
    evaluations = [{k: v for k, v in entry.items() if k.startswith("eval_") or k == "step"}
                   for entry in history if any(k.startswith("eval_") for k in entry)]
    return {"scores": score_five(specs, final, raw_test),
            "best": {name: {"scores": score_five({name: specs[name]}, {name: b["predictions"]}, raw_test)[name],
                            "step": b["step"], "format": b["format"], "dev_value": b["dev_value"]}
                     for name, b in best.items()},
            "final_weights": weights, "evaluations": evaluations, "train_seconds": round(seconds, 1),
            "loop_seconds": round(timer.seconds, 2), "train_steps": trainer.state.global_step}


def main_balancing(args: argparse.Namespace) -> None:
    """Per seed: one MultiTaskModel per balancing (the order rotating from seed to seed) and the five single-task
    Trainers, on the same rows; writes ``<output_dir>/quality_balancing.json`` after every run and, unless
    --no_docs, splices its section into docs/benchmarks.md."""
    setup_torch(num_threads=1)
    cfg = dict(HPARAMS, **FIVE_HPARAMS, num_train_epochs=args.epochs, max_train_samples=args.max_train_samples,
               dev_rows=args.dev_rows, max_test_samples=args.max_test_samples, seeds=args.seeds, torch_threads=1,
               max_seq_length=BAL_MAX_SEQ_LENGTH, evaluations_per_epoch=BAL_EVALS_PER_EPOCH)
    cfg.pop("seed")
    out_path = args.output_dir / QUALITY_BALANCING_JSON
    results: dict[str, Any] = {"suite": "balancing", "machine": machine_info(), "config": cfg, "quick": args.quick}
    log(f"balancing suite; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; config: {cfg}")
    specs, raws = load_five_corpora(args.output_dir)
    tokenizer = load_tokenizer(model_path())
    n, n_dev = args.max_train_samples, args.dev_rows
    raw_train = {t: head(raws[t]["train"], n) for t in specs}
    raw_dev = {t: raws[t]["train"].select(range(n, n + n_dev)) for t in specs}
    raw_test = {t: head(raws[t]["test"], args.max_test_samples) for t in specs}
    data = {t: preprocess_task(specs[t], datasets.DatasetDict(train=raw_train[t], dev=raw_dev[t], test=raw_test[t]),
                               tokenizer, max_seq_length=cfg["max_seq_length"]) for t in specs}
    train, dev, test = ({t: data[t][split] for t in specs} for split in ("train", "dev", "test"))
    results["train_rows"] = {t: len(d) for t, d in raw_train.items()}
    results["dev_rows"] = {t: len(d) for t, d in raw_dev.items()}
    results["test_rows"] = {t: len(d) for t, d in raw_test.items()}
    results["trivial_baselines"] = trivial_baselines(specs, raw_train, raw_test)
    results["runs"] = []
    total_start = time.perf_counter()
    for index, seed in enumerate(args.seeds):
        contenders = [*BALANCINGS, "single"]
        order = contenders[index % len(contenders):] + contenders[:index % len(contenders)]
        run: dict[str, Any] = {"seed": seed, "order": order}
        results["runs"].append(run)
        run_cfg = dict(cfg, seed=seed)
        for contender in order:
            log(f"seed {seed}: {contender}")
            if contender == "single":
                run["single"] = run_single_five(specs, raw_train, raw_test, tokenizer, run_cfg)
            else:
                run[contender] = run_balancing(specs, train, dev, test, raw_test, tokenizer, run_cfg, contender)
            res = run[contender]
            log(f"seed {seed} {contender}: " + ", ".join(
                f"{t} {res['scores'][t][FIVE_TASKS[t]['main']]}"
                + (f" (best {res['best'][t]['scores'][FIVE_TASKS[t]['main']]} @ {res['best'][t]['step']})"
                   if "best" in res else "") for t in specs) + f"; {res['train_seconds']:.0f} s")
            write_json(out_path, results)
    results["total_seconds"] = round(time.perf_counter() - total_start, 1)
    write_json(out_path, results)
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    for line in render_balancing(results):
        print(line, flush=True)
    if not args.no_docs:
        splice_balancing_section(results)
        log(f"updated {DOCS_MD.relative_to(ROOT)} (section {BALANCING_HEADING!r} only)")


def splice_quality_section(heading: str, lines: list[str]) -> None:
    """Replace the section ``heading`` of docs/benchmarks.md with ``lines`` (or insert it before the speed section):
    the rest of the page stays as it is."""
    page = DOCS_MD.read_text(encoding="utf-8")
    DOCS_MD.write_text(_splice(page, heading, "\n".join(lines) + "\n", (SPEED_HEADING, "## Method notes")),
                       encoding="utf-8")


def splice_balancing_section(results: dict[str, Any]) -> None:
    splice_quality_section(BALANCING_HEADING, render_balancing(results))


def _cell(values: list[float], digits: int) -> str:
    stats = _mean_std(values)
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _p(a: list[float], b: list[float]) -> str:
    p = welch_p(a, b)
    return "n/a" if p is None else f"{p:.2f}"


def paired_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of the paired t-test between two measurements of the same runs (a task's best state and the
    final model of each seed); None when it is undefined (one seed, or the same difference in every seed)."""
    from scipy import stats

    differences = [x - y for x, y in zip(a, b)]
    if len(differences) < 2 or len(set(differences)) == 1:
        return None
    return float(stats.ttest_rel(a, b).pvalue)


def render_balancing(results: dict[str, Any]) -> list[str]:
    """The docs section of the balancing suite: every task's main test metric as mean ± std over the seeds for the
    single-task baseline and each balancing's final model, then each balancing's per-task best states against its
    final model, with Welch's p; the effective weights reached; and a verdict that counts only differences outside
    the seed noise (p < NOISE_P)."""
    runs = [run for run in results["runs"] if all(c in run for c in (*BALANCINGS, "single"))]
    cfg = results["config"]
    tasks = [t for t in FIVE_TASKS if t in results["train_rows"]]

    def main_values(contender: str, task: str, best: bool = False) -> list[float]:
        metric = FIVE_TASKS[task]["main"]
        if best:
            return [run[contender]["best"][task]["scores"][metric] for run in runs]
        return [run[contender]["scores"][task][metric] for run in runs]

    def digits(task: str) -> int:
        return 3 if FIVE_TASKS[task]["main"] == "pearson" else 2

    out = [BALANCING_HEADING, "",
           "Does weighting the task losses help, and does keeping each task's best state beat the final model? "
           "One MultiTaskModel on the five tasks of the five-task section per seed and `--loss_balancing` "
           "(`static`: task weights 1; `uncertainty`: Kendall et al.'s learned log-variances; `dwa`: Liu et al.'s "
           "dynamic weight average, temperature 2), each with `--save_best_per_task`, against the five single-task "
           "Trainers of the five-task section on the same rows. MiniLM-L6, the first "
           f"{cfg['max_train_samples']} train rows of every task, {cfg['num_train_epochs']:g} epochs (dwa needs two "
           "finished epochs, so it differs from static in the third only), inputs of "
           f"{cfg['max_seq_length']} sub-tokens, batch {cfg['per_device_train_batch_size']}, lr "
           f"{cfg['learning_rate']:g}, linear schedule with 10% warm-up, proportional sampling, one torch thread. "
           f"Model selection: {cfg['evaluations_per_epoch']} evaluations an epoch on the next {cfg['dev_rows']} "
           f"train rows of every task (dev rows, never trained on); every score below is on the first "
           f"{cfg['max_test_samples']} test rows, mean ± standard deviation over seeds "
           f"{', '.join(str(run['seed']) for run in runs)}. Reproduce: `python bench/fetch_data.py --all && "
           "python bench/quality.py --suite balancing`"
           + (f" ({results['total_seconds'] / 60:.0f} minutes on one core)." if results.get("total_seconds") else ".")
           , "",
           "### Final models against the single-task baselines", "",
           "| task | metric | single-task | static | uncertainty | dwa | p static vs single | p uncertainty vs static "
           "| p dwa vs static |", "|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        d = digits(task)
        single, static = main_values("single", task), main_values("static", task)
        out.append(f"| {FIVE_TASKS[task]['title']} | {FIVE_TASKS[task]['main']} | {_cell(single, d)} | "
                   + " | ".join(_cell(main_values(b, task), d) for b in BALANCINGS)
                   + f" | {_p(static, single)} | {_p(main_values('uncertainty', task), static)} | "
                   f"{_p(main_values('dwa', task), static)} |")
    out += ["", "### Per-task best states against the final model", "",
            "Each task's state at its best dev evaluation (`best/<task>/`: the exported `AutoModelForTokenClassification`"
            " for NER, the whole multi-task model for the linear sequence heads), scored on the test rows like the "
            "final model; the step is where its dev metric peaked (of "
            f"{runs[0]['static']['train_steps'] if runs else '?'} steps).", "",
            "| task | balancing | final | best state | best - final | paired p | best at step (per seed) |",
            "|---|---|---|---|---|---|---|"]
    for task in tasks:
        d = digits(task)
        for balancing in BALANCINGS:
            final, best = main_values(balancing, task), main_values(balancing, task, best=True)
            steps = ", ".join(str(run[balancing]["best"][task]["step"]) for run in runs)
            out.append(f"| {FIVE_TASKS[task]['title']} | {balancing} | {_cell(final, d)} | {_cell(best, d)} | "
                       f"{statistics.fmean(best) - statistics.fmean(final):+.{d}f} | "
                       f"{'n/a' if (p := paired_p(best, final)) is None else f'{p:.2f}'} | {steps} |")
    out += ["", "Effective loss weight of each task at the end of training (`weight_<task>`, mean over seeds; "
            "static is 1 throughout; uncertainty's regression form starts a regression task at 0.5):", "",
            "| balancing | " + " | ".join(FIVE_TASKS[t]["title"] for t in tasks) + " |",
            "|---|" + "---|" * len(tasks)]
    for balancing in ("uncertainty", "dwa"):
        out.append(f"| {balancing} | " + " | ".join(
            f"{statistics.fmean(run[balancing]['final_weights'].get(t, 1.0) for run in runs):.2f}" for t in tasks)
            + " |")
    out += ["", *balancing_verdict(tasks, main_values), ""]
    at_end = sum(run[b]["best"][t]["step"] == run[b]["train_steps"] for run in runs for b in BALANCINGS for t in tasks)

    def trivial(task: str) -> float | None:  # the score of ignoring the input, for a classification-like task
        base = results.get("trivial_baselines", {}).get(task, {})
        return base.get("majority_accuracy", base.get("frequent_micro_f1"))

    flat = [FIVE_TASKS[t]["title"] for t in tasks if trivial(t) is not None
            and all(run[b]["scores"][t][FIVE_TASKS[t]["main"]] <= trivial(t) + 2 for run in runs for b in BALANCINGS)]
    out += [f"How to read it: {at_end} of the {len(runs) * len(BALANCINGS) * len(tasks)} best states are the last "
            "evaluation's (there the best state is the final model); the others peaked earlier on the "
            f"{cfg['dev_rows']} dev rows of their task, and on the test rows they score as the table shows. "
            + (f"{', '.join(flat)} stay within 2 points of always predicting the most frequent labels, so they say "
               "nothing about balancing at this budget. " if flat else "")
            + "A larger budget (more rows and epochs, where tasks peak and overfit at different times) is where the "
            "learned balancings and per-task selection have room to differ.", ""]
    return out


def balancing_verdict(tasks: list[str], main_values) -> list[str]:
    """What the numbers say, counting a difference only where Welch's p < NOISE_P."""
    lines = []
    learned_wins = False
    for balancing in ("uncertainty", "dwa"):
        wins, losses = [], []
        for task in tasks:
            ours, static = main_values(balancing, task), main_values("static", task)
            p = welch_p(ours, static)
            if p is not None and p < NOISE_P:
                gap = statistics.fmean(ours) - statistics.fmean(static)
                (wins if gap > 0 else losses).append(f"{FIVE_TASKS[task]['title']} ({gap:+.3g}, p = {p:.2f})")
        learned_wins = learned_wins or bool(wins)
        if not wins and not losses:
            lines.append(f"- **`{balancing}`** changes no task's final score outside the seed noise.")
        else:
            lines.append(f"- **`{balancing}`**: better on {', '.join(wins) or 'no task'}; worse on "
                         f"{', '.join(losses) or 'no task'} (outside the seed noise).")
    best_wins = []
    for task in tasks:
        for balancing in BALANCINGS:
            best, final = main_values(balancing, task, best=True), main_values(balancing, task)
            p = paired_p(best, final)
            if p is not None and p < NOISE_P and statistics.fmean(best) > statistics.fmean(final):
                best_wins.append(f"{FIVE_TASKS[task]['title']} with {balancing}")
    lines.append("- **Per-task best states** beat the final model outside the seed noise on "
                 + (", ".join(best_wins) if best_wins else "no task") + ".")
    lines.append("- **The default stays `static`**: " + (
        "neither learned balancing wins on any task outside the noise." if not learned_wins else
        "a learned balancing wins on some task (above), not across the board; use it where its task matters most."))
    return lines


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("two", "five", "qa", "heads", "balancing"), default="two",
                        help="two: CoNLL + BBC against single-task Trainers and the original loop (quality.json); "
                             "five: the five task types of issue 11 over several seeds (quality_five.json); "
                             "qa: extractive QA beside NER and topics against a run_qa.py model, issue 12 "
                             "(quality_qa.json); heads: the linear head vs the architecture's own classifier on "
                             "BBC and VitaminC, issue 13 (quality_heads.json); balancing: static vs uncertainty vs dwa "
                             "loss balancing and per-task best states vs the final model, issue 14 "
                             "(quality_balancing.json).")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="Where the JSON results (and, for --suite two, the multi-task model) go (default "
                             "bench/results, bench/results/quick with --quick).")
    parser.add_argument("--epochs", type=float, default=None,
                        help=f"Default {HPARAMS['num_train_epochs']} (two), {FIVE_BUDGET['epochs']} (five), "
                             f"{QA_BUDGET['epochs']} (qa).")
    parser.add_argument("--max_train_samples", type=int, default=None,
                        help="Keep the first N train rows per task for (a) and (b) (default: all for two, "
                             f"{FIVE_BUDGET['max_train_samples']} for five; NER and topics for qa).")
    parser.add_argument("--max_test_samples", type=int, default=None,
                        help=f"Score on the first N test rows per task (default: all for two, "
                             f"{FIVE_BUDGET['max_test_samples']} for five; NER and topics for qa).")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"--suite five / qa: one run of each contender per seed (default {FIVE_BUDGET['seeds']}).")
    parser.add_argument("--dev_rows", type=int, default=None,
                        help=f"--suite balancing: the N train rows after the training rows pick each task's best "
                             f"state (default {BAL_BUDGET['dev_rows']}).")
    parser.add_argument("--qa_train_samples", type=int, default=None,
                        help=f"--suite qa: a seeded random sample of N SQuAD train questions (default "
                             f"{QA_BUDGET['qa_train_samples']}).")
    parser.add_argument("--qa_test_samples", type=int, default=None,
                        help=f"--suite qa: a seeded random sample of N SQuADShifts test questions (default "
                             f"{QA_BUDGET['qa_test_samples']}).")
    parser.add_argument("--original_samples", type=int, default=None,
                        help="--suite two: sample size per task for (c) and its like-for-like (a)/(b) runs "
                             "(default 500).")
    parser.add_argument("--skip_full", action="store_true", help="--suite two: only the sample comparison.")
    parser.add_argument("--skip_sample", action="store_true", help="--suite two: only the full-data comparison.")
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run, docs untouched. two: 64 train rows per task, 16 for the original loop, "
                             f"1 epoch, 200 test rows. five: {FIVE_QUICK['max_train_samples']} train and "
                             f"{FIVE_QUICK['max_test_samples']} test rows per task, {FIVE_QUICK['epochs']} epoch, "
                             f"seeds {FIVE_QUICK['seeds']}. qa: {QA_QUICK['qa_train_samples']} / "
                             f"{QA_QUICK['qa_test_samples']} QA and {QA_QUICK['max_train_samples']} / "
                             f"{QA_QUICK['max_test_samples']} NER and topic train / test rows, "
                             f"{QA_QUICK['epochs']} epoch, seeds {QA_QUICK['seeds']}.")
    parser.add_argument("--no_docs", action="store_true", help="Do not rewrite docs/benchmarks.md.")
    args = parser.parse_args()
    if args.quick:
        args.output_dir = args.output_dir or DEFAULT_OUTPUT_DIR / "quick"
        args.no_docs = True
        quick = {"five": FIVE_QUICK, "qa": QA_QUICK, "heads": HEADS_QUICK, "balancing": BAL_QUICK}.get(args.suite, {"epochs": 1, "max_train_samples": 64,
                                                                      "max_test_samples": 200, "original_samples": 16})
        for key, value in quick.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    if args.suite in ("five", "qa", "heads", "balancing"):
        budgets = {"five": FIVE_BUDGET, "qa": QA_BUDGET, "heads": HEADS_BUDGET, "balancing": BAL_BUDGET}
        for key, value in budgets[args.suite].items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.output_dir = args.output_dir or DEFAULT_OUTPUT_DIR
    args.original_samples = args.original_samples or 500
    return args


def main() -> None:
    args = parse_args()
    if args.suite == "five":
        main_five(args)
        return
    if args.suite == "qa":
        main_qa(args)
        return
    if args.suite == "heads":
        main_heads(args)
        return
    if args.suite == "balancing":
        main_balancing(args)
        return
    setup_torch()
    cfg = dict(HPARAMS)
    if args.epochs is not None:
        cfg["num_train_epochs"] = args.epochs
    cfg["max_train_samples"] = args.max_train_samples
    cfg["max_test_samples"] = args.max_test_samples
    out_path = args.output_dir / QUALITY_JSON
    results: dict[str, Any] = {"machine": machine_info(), "config": cfg, "quick": args.quick}
    log(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; config: {cfg}")

    specs, raws = load_corpora()
    tokenizer = load_tokenizer(model_path())
    raw_test = {t: head(raws[t]["test"], args.max_test_samples) for t in specs}
    mtl_test = {t: head(preprocess_task(specs[t], datasets.DatasetDict(test=raws[t]["test"]), tokenizer,
                                        max_seq_length=cfg["max_seq_length"])["test"], args.max_test_samples)
                for t in specs}
    total_start = time.perf_counter()

    if not args.skip_full:
        raw_train = {t: head(raws[t]["train"], args.max_train_samples) for t in specs}
        mtl_train = {t: head(preprocess_task(specs[t], datasets.DatasetDict(train=raws[t]["train"]), tokenizer,
                                             max_seq_length=cfg["max_seq_length"])["train"], args.max_train_samples)
                     for t in specs}
        full: dict[str, Any] = {"train_rows": {t: len(d) for t, d in raw_train.items()},
                                "test_rows": {t: len(d) for t, d in raw_test.items()}}
        results["full"] = full
        log(f"(a) MultiTaskTrainer on {full['train_rows']} train rows, {cfg['num_train_epochs']} epochs")
        full["mtl"] = run_mtl(specs, mtl_train, mtl_test, raw_test, tokenizer, cfg,
                              save_to=args.output_dir / "mtl_model")
        log(f"(a) done: NER F1 {full['mtl']['ner']['f1']}, topic accuracy {full['mtl']['topic_accuracy']}, "
            f"{full['mtl']['train_seconds']} s")
        write_json(out_path, results)
        log("(b) single-task Trainers")
        full["single"] = run_single(specs, raw_train, raw_test, tokenizer, cfg)
        log(f"(b) done: NER F1 {full['single']['ner']['f1']}, topic accuracy {full['single']['topic_accuracy']}, "
            f"{full['single']['train_seconds']} s")
        write_json(out_path, results)

    if not args.skip_sample:
        n = args.original_samples
        raw_sample = {t: sample(raws[t]["train"], n, seed=cfg["seed"]) for t in specs}
        smp: dict[str, Any] = {"n_per_task": n}
        results["sample"] = smp
        for key, aligned in (("original", False), ("original_aligned", True)):
            log(f"sample of {n} per task: ({'c' if not aligned else 'd'}) original loop"
                f"{', labels aligned to first sub-tokens' if aligned else ''}")
            smp[key] = run_original(specs, raw_sample, raw_test, tokenizer, cfg, aligned=aligned)
            log(f"done: NER F1 {smp[key]['ner']['f1']}, topic accuracy {smp[key]['topic_accuracy']}, "
                f"{smp[key]['examples_per_s']} examples/s")
            write_json(out_path, results)
        # mtl_hf and the single-task Trainers on the same sample, same epochs (a reference, see docs: at batch size 32
        # a 500-example sample gives few optimizer steps).
        mtl_sample = {t: preprocess_task(specs[t], datasets.DatasetDict(train=raw_sample[t]), tokenizer,
                                         max_seq_length=cfg["max_seq_length"])["train"] for t in specs}
        log("sample: (a) MultiTaskTrainer")
        smp["mtl"] = run_mtl(specs, mtl_sample, mtl_test, raw_test, tokenizer, cfg)
        log("sample: (b) single-task Trainers")
        smp["single"] = run_single(specs, raw_sample, raw_test, tokenizer, cfg)
        log(f"sample done: mtl {smp['mtl']['ner']['f1']}/{smp['mtl']['topic_accuracy']}, single "
            f"{smp['single']['ner']['f1']}/{smp['single']['topic_accuracy']}")

    results["total_seconds"] = round(time.perf_counter() - total_start, 1)
    results["notes"] = miss_notes(results)
    write_json(out_path, results)
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    if not args.no_docs:
        if "full" in results and "sample" in results:
            render_docs(args.output_dir)
            log("updated docs/benchmarks.md and docs/benchmarks.png")
        else:
            log("partial run (--skip_full/--skip_sample): docs not updated")


def miss_notes(results: dict[str, Any]) -> dict[str, str]:
    """What a missed quality target would take, written next to the numbers."""
    notes: dict[str, str] = {}
    full = results.get("full")
    if not full or "single" not in full:
        return notes
    mtl, single = full["mtl"], full["single"]
    if mtl["ner"]["f1"] - single["ner"]["f1"] < -0.5:
        notes["miss_ner_f1"] = (
            "the shared encoder is also trained on topics (task weights 1; topic batches are about a tenth of the "
            "steps). What it would take: a higher NER weight (`task_weights`), more epochs, or keeping the best "
            "checkpoint by `eval_ner_f1`; and, since each contender is one run with one seed, several seeds to tell a "
            "gap this size from seed noise.")
    if mtl["topic_accuracy"] - single["topic_accuracy"] < -0.5:
        gap = single["topic_accuracy"] - mtl["topic_accuracy"]
        headlines = round(gap / 100 * full["test_rows"]["topic"])
        notes["miss_topic_accuracy"] = (
            f"the gap is {headlines} of {full['test_rows']['topic']} test headlines. The topic task is small "
            "(1,603 headlines, about a tenth of the steps) next to NER in a shared encoder. What it would take: a "
            "higher topic weight or `sampling_strategy=temperature` to give it more steps, more epochs, and several "
            "seeds to tell a gap this size from seed noise.")
    return notes


if __name__ == "__main__":
    main()
