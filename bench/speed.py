#!/usr/bin/env python
"""Speed: what the multi-task trainer and pipeline cost, measured side by side in one process.

1. Training throughput (examples/s) on the same pre-tokenized 1:1 sample of CoNLL-2003 and BBC, batch size 32:
   the original loop (batch size 1, tasks alternating), the single-task HF ``Trainer`` (one per task), mtl_hf's
   ``MultiTaskTrainer``, and a bare PyTorch forward/backward/step loop over the same pre-collated batches.
2. Inference (sentences/s): ``MultiTaskPipeline`` doing both tasks vs a token-classification plus a
   text-classification HF pipeline over the same texts and batch size.
3. Data preparation: ``mtl_hf.data.preprocess_task`` vs run_ner.py's ``tokenize_and_align_labels`` on the CoNLL
   train split.

Every section runs in rounds that interleave the contenders (rotating their order), after a warm-up round; medians
over rounds and the ratios of medians are reported. Results go to ``<output_dir>/speed.json`` and, unless ``--quick``
or ``--no_docs``, into ``docs/benchmarks.md`` / ``docs/benchmarks.png`` (together with quality.json).

``--five_training`` measures, instead, issue 11's five-task throughput target the same way: per round, one
``MultiTaskTrainer`` epoch over a sample of the five tasks of ``quality.py --suite five`` against one epoch of each of
its five single-task Trainers over the same rows. Results go to ``<output_dir>/speed_five.json`` and into their own
subsection of ``docs/benchmarks.md``.

``--qa_pipeline`` measures issue 12's inference target: answers per second of ``MultiTaskPipeline`` on
``{"question", "context"}`` dicts (one ``extractive_qa`` task) against run_qa.py's prediction path on a
``BertForQuestionAnswering`` with the same weights (transformers 5 has no question-answering pipeline any more), on the
same SQuADShifts test questions, and the share of questions both answer with the same span. Results go to
``<output_dir>/speed_qa.json`` and into their own subsection of ``docs/benchmarks.md`` (spliced in).

    python bench/speed.py                    # ~10 min on 2 CPU cores
    python bench/speed.py --quick            # smoke run
    python bench/speed.py --five_training    # ~8 min on 2 CPU cores (needs `python bench/fetch_data.py --all`)
    python bench/speed.py --qa_pipeline      # QA inference (issue 12; needs `python bench/fetch_data.py --all`)
    python bench/speed.py --onnx             # the ONNX backend (issue 13; needs `pip install -e .[onnx]`)

``--onnx`` measures issue 13's deployment targets: a MultiTaskModel (MiniLM, NER + topic heads) is trained on a
sample of CoNLL-2003 and the BBC headlines, exported with ``mtl_hf.export_onnx`` and quantized to int8, and
``MultiTaskPipeline`` runs it with each backend (PyTorch, ONNX Runtime float32, ONNX Runtime int8) on the same CoNLL
test sentences, both tasks on every text, in interleaved rounds; each backend is also scored on the CoNLL and BBC test
sets. Results go to ``<output_dir>/speed_onnx.json`` and into their own subsection of ``docs/benchmarks.md``
(spliced in).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common  # noqa: F401  (puts the repository root on sys.path)
from common import (
    DEFAULT_OUTPUT_DIR,
    DOCS_MD,
    SPEED_ONNX_HEADING,
    HPARAMS,
    NUM_THREADS,
    QA_MAX_SEQ_LENGTH,
    QA_SETTINGS,
    QA_TASK,
    ROOT,
    SPEED_FIVE_JSON,
    SPEED_JSON,
    SPEED_QA_HEADING,
    SPEED_QA_JSON,
    EpochTimer,
    OriginalMultiTaskNet,
    TrainingLoopTimer,
    _machine_lines,
    _met,
    _splice_speed_subsection,
    accuracy,
    alternate,
    head,
    load_corpora,
    load_five_corpora,
    load_qa_corpora,
    machine_info,
    model_path,
    ner_scores,
    original_ner_example,
    original_step,
    original_topic_example,
    render_docs,
    run_classification_multi_label_preprocess_function,
    run_glue_preprocess_function,
    run_ner_tokenize_and_align_labels,
    run_qa_answer,
    run_qa_prepare_validation_features,
    sample,
    setup_torch,
    splice_speed_qa_section,
    summarize,
    write_json,
)
from quality import FIVE_HPARAMS, PROBLEM_TYPES, train_mtl

import datasets
import torch
from torch.utils.data import ConcatDataset
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    pipeline,
    set_seed,
)

from mtl_hf import MultiTaskModel, MultiTaskPipeline, MultiTaskTrainer, MultiTaskTrainingArguments
from mtl_hf.data import MultiTaskDataCollator, load_tokenizer, preprocess_task
from mtl_hf.onnx_backend import ONNX_INT8_FILE, export_onnx, quantize_onnx
from mtl_hf.sampler import MultiTaskBatchSampler

TASK_ORDER = ("topic", "ner")  # as in bench/data/tasks.yaml
# --five_training: rows per task (16 batches of 16 per task), sized so that a warm-up and five timed rounds take about
# 8 minutes on 2 CPU cores (one round of 160 rows per task took 45 s there).
FIVE_ROWS_PER_TASK = 256


def log(message: str) -> None:
    print(f"[speed {time.strftime('%H:%M:%S')}] {message}", flush=True)


def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def interleave(
    contenders: dict[str, Callable[[], Any]],
    warmup: int,
    rounds: int,
    report: Callable[[int, bool, dict[str, Any]], None],
) -> dict[str, list[Any]]:
    """Run every contender once per round, in an order rotated each round, so that load from anything else on the
    machine hits all of them alike; keep the results of the timed (non-warm-up) rounds. `report(round_index, warm,
    results)` gets each round's results in the order they ran."""
    records: dict[str, list[Any]] = {name: [] for name in contenders}
    for round_index in range(warmup + rounds):
        warm = round_index < warmup
        results = {name: contenders[name]() for name in rotate(list(contenders), round_index)}
        if not warm:
            for name, result in results.items():
                records[name].append(result)
        report(round_index, warm, results)
    return records


def trainer_kwargs(output_dir: str, batch_size: int, seed: int,
                   learning_rate: float = HPARAMS["learning_rate"]) -> dict[str, Any]:
    """One epoch, nothing saved, logged or evaluated: the step loop is what is timed."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=HPARAMS["weight_decay"],
        warmup_steps=HPARAMS["warmup_ratio"],
        num_train_epochs=1,
        seed=seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


# ---------------------------------------------------------------------------------------------------------------------
# 1. Training throughput
# ---------------------------------------------------------------------------------------------------------------------


def bench_training(specs, raws, tokenizer, args) -> dict[str, Any]:
    path = model_path()
    bs, n, seed, max_len = args.batch_size, args.train_rows_per_task, HPARAMS["seed"], HPARAMS["max_seq_length"]
    raw = {t: sample(raws[t]["train"], n, seed=seed) for t in TASK_ORDER}

    # The same rows, prepared the way each contender prepares them.
    mtl_data = {t: preprocess_task(specs[t], datasets.DatasetDict(train=raw[t]), tokenizer,
                                   max_seq_length=max_len)["train"] for t in TASK_ORDER}
    ner_l2i = specs["ner"].label2id
    topic_l2i = specs["topic"].label2id
    single_data = {
        "ner": raw["ner"].map(run_ner_tokenize_and_align_labels(tokenizer, ner_l2i, max_len), batched=True),
        "topic": raw["topic"].map(run_glue_preprocess_function(tokenizer, topic_l2i, max_len), batched=True),
    }
    orig_ner = [original_ner_example(tokenizer, w, t, ner_l2i, max_len)
                for w, t in zip(list(raw["ner"]["tokens"]), list(raw["ner"]["ner_tags"]))]
    orig_topic = [original_topic_example(tokenizer, x, topic_l2i[y], max_len)
                  for x, y in zip(list(raw["topic"]["text"]), list(raw["topic"]["label"]))]
    half = args.original_examples_per_round // 2
    original_examples = alternate(orig_ner[:half], orig_topic[:half])
    total = sum(len(d) for d in mtl_data.values())

    tmp = tempfile.TemporaryDirectory()
    task_specs = [specs[t] for t in TASK_ORDER]

    # MultiTaskTrainer
    set_seed(seed)
    mtl_timer = EpochTimer()
    mtl_trainer = MultiTaskTrainer(
        model=MultiTaskModel.from_encoder(path, task_specs),
        args=MultiTaskTrainingArguments(**trainer_kwargs(tmp.name, bs, seed), sampling_strategy="proportional"),
        train_dataset=mtl_data, processing_class=tokenizer, callbacks=[mtl_timer])

    # Informational, not target contenders: MultiTaskTrainer with two of Trainer's own options that the default
    # recipe does not use: length grouping (less padding), and that plus bf16 autocast (CPUs with AVX512-BF16/AMX).
    variants = {"mtl_trainer_grouped": {"train_sampling_strategy": "group_by_length"},
                "mtl_trainer_grouped_bf16": {"train_sampling_strategy": "group_by_length", "bf16": True, "use_cpu": True}}
    variant_trainers = {}
    for key, extra in variants.items():
        timer = EpochTimer()
        trainer = MultiTaskTrainer(
            model=MultiTaskModel.from_encoder(path, task_specs),
            args=MultiTaskTrainingArguments(**trainer_kwargs(tmp.name, bs, seed), sampling_strategy="proportional",
                                            **extra),
            train_dataset=mtl_data, processing_class=tokenizer, callbacks=[timer])
        variant_trainers[key] = (trainer, timer)

    # Single-task Trainers (run_ner.py / run_glue.py)
    single_timers = {t: EpochTimer() for t in TASK_ORDER}
    ner_model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(ner_l2i), id2label=specs["ner"].id2label, label2id=ner_l2i)
    topic_model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(topic_l2i), id2label=specs["topic"].id2label, label2id=topic_l2i)
    single_trainers = {
        "ner": Trainer(model=ner_model, args=TrainingArguments(**trainer_kwargs(tmp.name, bs, seed)),
                       train_dataset=single_data["ner"], processing_class=tokenizer,
                       data_collator=DataCollatorForTokenClassification(tokenizer), callbacks=[single_timers["ner"]]),
        "topic": Trainer(model=topic_model, args=TrainingArguments(**trainer_kwargs(tmp.name, bs, seed)),
                         train_dataset=single_data["topic"], processing_class=tokenizer,
                         data_collator=DataCollatorWithPadding(tokenizer), callbacks=[single_timers["topic"]]),
    }

    # Bare loop: the batches MultiTaskTrainer's sampler and collator produce (epoch 0, same seed), collated up front.
    bare_model = MultiTaskModel.from_encoder(path, task_specs)
    sampler = MultiTaskBatchSampler({t: len(mtl_data[t]) for t in TASK_ORDER}, bs, seed=seed)
    concat = ConcatDataset([mtl_data[t] for t in TASK_ORDER])
    collator = MultiTaskDataCollator(tokenizer)
    bare_batches = [collator([concat[i] for i in indices]) for indices in sampler]
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(mtl_trainer.args)
    bare_optimizer = optimizer_cls(bare_model.parameters(), **optimizer_kwargs)

    # The original loop, as designed (torch.optim.AdamW defaults) and given the Trainer's fused AdamW.
    original = {}
    for key, kwargs in (("original_loop", {}), ("original_loop_fused", {"fused": True})):
        set_seed(seed)
        net = OriginalMultiTaskNet(path, len(ner_l2i), len(topic_l2i))
        original[key] = (net, torch.optim.AdamW(net.parameters(), lr=HPARAMS["learning_rate"],
                                                weight_decay=HPARAMS["weight_decay"], **kwargs))

    def run_mtl() -> dict[str, float]:
        mtl_trainer.train()
        return {"seconds": mtl_timer.seconds, "examples": total, "steps": len(mtl_timer.step_ends)}

    def make_variant(key: str):
        def run() -> dict[str, float]:
            trainer, timer = variant_trainers[key]
            trainer.train()
            return {"seconds": timer.seconds, "examples": total, "steps": len(timer.step_ends)}
        return run

    def run_single() -> dict[str, float]:
        out = {"seconds": 0.0, "examples": 0, "steps": 0}
        for t in TASK_ORDER:
            single_trainers[t].train()
            out[f"{t}_seconds"] = single_timers[t].seconds
            out[f"{t}_examples"] = len(single_data[t])
            out["seconds"] += single_timers[t].seconds
            out["examples"] += len(single_data[t])
            out["steps"] += len(single_timers[t].step_ends)
        return out

    def run_bare() -> dict[str, float]:
        bare_model.train()
        start = time.perf_counter()
        for batch in bare_batches:
            loss = bare_model(**batch).loss
            loss.backward()
            bare_optimizer.step()
            bare_optimizer.zero_grad()
        return {"seconds": time.perf_counter() - start, "examples": total, "steps": len(bare_batches)}

    def make_original(key: str):
        def run() -> dict[str, float]:
            net, optimizer = original[key]
            net.train()
            losses = {}
            start = time.perf_counter()
            for example in original_examples:  # per-task losses kept for the epoch print, as the design did
                losses.setdefault(example["task"], []).append(original_step(net, optimizer, example))
            return {"seconds": time.perf_counter() - start, "examples": len(original_examples),
                    "steps": len(original_examples)}
        return run

    contenders = {
        "original_loop": make_original("original_loop"),
        "original_loop_fused": make_original("original_loop_fused"),
        "single_trainer": run_single,
        "mtl_trainer": run_mtl,
        "bare_loop": run_bare,
        **{key: make_variant(key) for key in variants},
    }
    names = list(contenders)

    def report(round_index: int, warm: bool, results: dict[str, Any]) -> None:
        line = ", ".join(f"{name} {r['examples'] / r['seconds']:.1f}" for name, r in results.items())
        log(f"training round {round_index + 1}/{args.warmup_rounds + args.rounds}"
            f"{' (warm-up)' if warm else ''}: {line} examples/s")

    records = interleave(contenders, args.warmup_rounds, args.rounds, report)
    tmp.cleanup()

    out: dict[str, Any] = {"contenders": {}, "steps_per_round": len(bare_batches)}
    for name in names:
        rates = [r["examples"] / r["seconds"] for r in records[name]]
        out["contenders"][name] = {"examples_per_s": summarize(rates),
                                   "examples_per_round": records[name][0]["examples"],
                                   "steps_per_round": records[name][0]["steps"]}
    out["single_by_task"] = {
        t: summarize([r[f"{t}_examples"] / r[f"{t}_seconds"] for r in records["single_trainer"]]) for t in TASK_ORDER
    }
    med = {name: out["contenders"][name]["examples_per_s"]["median"] for name in names}
    out["ratios"] = {
        "mtl_vs_single_trainer": round(med["mtl_trainer"] / med["single_trainer"], 3),
        "mtl_vs_bare_loop": round(med["mtl_trainer"] / med["bare_loop"], 3),
        "mtl_vs_original_loop": round(med["mtl_trainer"] / med["original_loop"], 2),
        "mtl_vs_original_loop_fused": round(med["mtl_trainer"] / med["original_loop_fused"], 2),
        "mtl_grouped_vs_mtl": round(med["mtl_trainer_grouped"] / med["mtl_trainer"], 3),
        "mtl_grouped_vs_original_loop": round(med["mtl_trainer_grouped"] / med["original_loop"], 2),
        "mtl_grouped_bf16_vs_mtl": round(med["mtl_trainer_grouped_bf16"] / med["mtl_trainer"], 3),
        "mtl_grouped_bf16_vs_original_loop": round(med["mtl_trainer_grouped_bf16"] / med["original_loop"], 2),
    }

    def per_round(a: str, b: str) -> list[float]:
        return [round((x["examples"] / x["seconds"]) / (y["examples"] / y["seconds"]), 3)
                for x, y in zip(records[a], records[b])]

    out["per_round_ratios"] = {"mtl_vs_single_trainer": per_round("mtl_trainer", "single_trainer"),
                               "mtl_vs_bare_loop": per_round("mtl_trainer", "bare_loop")}
    lengths = {t: sum(len(ids) for ids in mtl_data[t]["input_ids"]) / len(mtl_data[t]) for t in TASK_ORDER}
    out["mean_subtokens"] = {t: round(v, 1) for t, v in lengths.items()}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# 2. Inference
# ---------------------------------------------------------------------------------------------------------------------


def bench_inference(specs, raws, tokenizer, args) -> dict[str, Any]:
    path = model_path()
    trained = args.output_dir / "mtl_model"
    if (trained / "config.json").is_file():
        mtl_model = MultiTaskModel.from_pretrained(trained)
        note = (f"All models carry the weights of the multi-task model trained by quality.py (`{trained.name}`): the "
                "HF pipelines' `BertForTokenClassification` / `BertForSequenceClassification` get its encoder and its "
                "heads' linear layers (the sequence classifier also applies BERT's pooler, as it always does), so "
                "both sides predict on trained weights and group realistic numbers of entities.")
    else:
        set_seed(HPARAMS["seed"])
        mtl_model = MultiTaskModel.from_encoder(path, [specs[t] for t in TASK_ORDER])
        note = ("No trained multi-task model was found (run quality.py first for that), so all models are MiniLM with "
                "fresh heads (speed only, quality irrelevant); the HF pipelines' models get the same encoder and head "
                "weights.")
    mtl_model.eval()
    ner_spec, topic_spec = specs["ner"], specs["topic"]
    ner_model = AutoModelForTokenClassification.from_config(AutoConfig.from_pretrained(
        path, num_labels=len(ner_spec.labels), id2label=ner_spec.id2label, label2id=ner_spec.label2id))
    topic_model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(
        path, num_labels=len(topic_spec.labels), id2label=topic_spec.id2label, label2id=topic_spec.label2id))
    encoder_state = mtl_model.encoder.state_dict()
    missing, _ = ner_model.bert.load_state_dict(encoder_state, strict=False)  # no pooler in token classification
    assert not missing, missing
    topic_model.bert.load_state_dict(encoder_state)
    ner_model.classifier.load_state_dict(mtl_model.heads["ner"].classifier.state_dict())
    topic_model.classifier.load_state_dict(mtl_model.heads["topic"].classifier.state_dict())
    ner_model.eval()
    topic_model.eval()

    rows = sample(raws["ner"]["test"], args.inference_texts, seed=HPARAMS["seed"])
    texts = [" ".join(words) for words in rows["tokens"]]
    bs = args.batch_size
    mtl_pipe = MultiTaskPipeline(mtl_model, tokenizer, device="cpu", batch_size=bs)
    ner_pipe = pipeline("token-classification", model=ner_model, tokenizer=tokenizer, aggregation_strategy="first",
                        device="cpu")
    topic_pipe = pipeline("text-classification", model=topic_model, tokenizer=tokenizer, device="cpu")

    def run_mtl() -> dict[str, float]:
        start = time.perf_counter()
        results = mtl_pipe(texts, tasks=["ner", "topic"], batch_size=bs)
        assert len(results) == len(texts)
        return {"seconds": time.perf_counter() - start}

    def run_pair() -> dict[str, float]:
        start = time.perf_counter()
        entities = ner_pipe(texts, batch_size=bs)
        middle = time.perf_counter()
        topics = topic_pipe(texts, batch_size=bs)
        end = time.perf_counter()
        assert len(entities) == len(topics) == len(texts)
        return {"seconds": end - start, "ner_seconds": middle - start, "topic_seconds": end - middle}

    contenders = {"mtl_pipeline": run_mtl, "two_pipelines": run_pair}

    def report(round_index: int, warm: bool, results: dict[str, Any]) -> None:
        line = ", ".join(f"{name} {len(texts) / r['seconds']:.1f}" for name, r in results.items())
        log(f"inference round {round_index + 1}/{args.warmup_rounds + args.rounds}"
            f"{' (warm-up)' if warm else ''}: {line} sentences/s")

    with torch.inference_mode():
        records = interleave(contenders, args.warmup_rounds, args.rounds, report)

    out: dict[str, Any] = {"texts": len(texts), "batch_size": bs, "model_note": note,
                           "trained_weights": (trained / "config.json").is_file()}
    for name in contenders:
        out[name] = {"sentences_per_s": summarize([len(texts) / r["seconds"] for r in records[name]])}
    for key in ("ner", "topic"):
        out[f"{key}_pipeline"] = {
            "sentences_per_s": summarize([len(texts) / r[f"{key}_seconds"] for r in records["two_pipelines"]])}
    out["ratio_mtl_vs_two_pipelines"] = round(
        out["mtl_pipeline"]["sentences_per_s"]["median"] / out["two_pipelines"]["sentences_per_s"]["median"], 2)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# 3. Data preparation
# ---------------------------------------------------------------------------------------------------------------------


def bench_data_prep(specs, raws, tokenizer, args) -> dict[str, Any]:
    raw = raws["ner"]["train"]
    if args.data_prep_rows:
        raw = raw.select(range(min(args.data_prep_rows, len(raw))))
    spec = specs["ner"]
    max_len = HPARAMS["max_seq_length"]
    fn = run_ner_tokenize_and_align_labels(tokenizer, spec.label2id, max_len)

    def run_mtl() -> float:
        start = time.perf_counter()
        out = preprocess_task(spec, datasets.DatasetDict(train=raw), tokenizer, max_seq_length=max_len,
                              load_from_cache_file=False, num_proc=None)
        assert len(out["train"]) == len(raw)
        return time.perf_counter() - start

    def run_ner() -> float:
        start = time.perf_counter()
        out = raw.map(fn, batched=True, num_proc=None, load_from_cache_file=False,
                      desc="Running tokenizer on train dataset")
        assert len(out) == len(raw)
        return time.perf_counter() - start

    contenders = {"mtl_hf": run_mtl, "run_ner": run_ner}

    def report(round_index: int, warm: bool, results: dict[str, float]) -> None:
        if not warm:
            log(f"data prep repetition {round_index}: " + ", ".join(f"{n} {s:.2f} s" for n, s in results.items()))

    records = interleave(contenders, 1, args.data_prep_repetitions, report)
    out: dict[str, Any] = {"sentences": len(raw), "repetitions": args.data_prep_repetitions}
    for name in contenders:
        out[name] = {"seconds": summarize(records[name])}
    out["ratio_mtl_vs_run_ner_time"] = round(out["mtl_hf"]["seconds"]["median"] / out["run_ner"]["seconds"]["median"], 2)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# 4. Five-task training throughput (--five_training)
# ---------------------------------------------------------------------------------------------------------------------


def single_task_trainer(spec, raw_train: datasets.Dataset, tokenizer, output_dir: str, batch_size: int,
                        learning_rate: float, seed: int) -> tuple[Trainer, TrainingLoopTimer]:
    """One task's single-task HF ``Trainer`` built as quality.py's ``train_single_ner`` / ``train_single_sequence``
    build it (run_ner.py, run_glue.py with pairs and regression, run_classification.py's multi-label labels;
    ``problem_type`` set), with a timer of its step loop. Built here rather than called, because those functions also
    train and predict in one go, and this benchmark trains the same Trainer again in every round."""
    max_len = HPARAMS["max_seq_length"]
    kind = spec.type
    label_to_id = None if kind == "regression" else {label: i for i, label in enumerate(spec.labels)}
    label_kwargs = {} if label_to_id is None else {"id2label": spec.id2label, "label2id": label_to_id}
    set_seed(seed)
    if kind == "ner":
        fn = run_ner_tokenize_and_align_labels(tokenizer, label_to_id, max_len, spec.text_column_name,
                                               spec.label_column_name)
        model = AutoModelForTokenClassification.from_pretrained(model_path(), num_labels=len(spec.labels),
                                                                **label_kwargs)
        collator = DataCollatorForTokenClassification(tokenizer)
    else:
        if spec.label_column_name != "label":  # both scripts rename the label column to "label"
            raw_train = raw_train.rename_column(spec.label_column_name, "label")
        if kind == "multilabel":
            fn = run_classification_multi_label_preprocess_function(tokenizer, label_to_id, max_len,
                                                                    spec.text_column_name)
        else:
            fn = run_glue_preprocess_function(tokenizer, label_to_id, max_len, spec.text_column_name,
                                              spec.text_pair_column_name)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path(), num_labels=1 if kind == "regression" else len(spec.labels),
            problem_type=PROBLEM_TYPES[kind], **label_kwargs)
        collator = DataCollatorWithPadding(tokenizer)
    timer = TrainingLoopTimer()
    training_args = TrainingArguments(**trainer_kwargs(output_dir, batch_size, seed, learning_rate))
    trainer = Trainer(model=model, args=training_args, train_dataset=raw_train.map(fn, batched=True),
                      processing_class=tokenizer, data_collator=collator, callbacks=[timer])
    return trainer, timer


def bench_five_training(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 11's throughput target in interleaved rounds: (a) one ``MultiTaskTrainer`` epoch over ``N`` rows of each
    of the five tasks (proportional sampling) against (b) one epoch of each task's single-task ``Trainer`` over the
    same rows, examples/s from the step-loop time of ``trainer.train()`` ((b) summed over its five runs). The quality
    runs measure it too, but one contender after the other, so a change in machine load between them enters the
    ratio; here it hits both alike."""
    seed, bs, lr = HPARAMS["seed"], args.batch_size, FIVE_HPARAMS["learning_rate"]
    specs, raws = load_five_corpora(args.output_dir)
    tokenizer = load_tokenizer(model_path())
    raw = {t: sample(raws[t]["train"], args.five_rows_per_task, seed=seed) for t in specs}
    mtl_data = {t: preprocess_task(specs[t], datasets.DatasetDict(train=raw[t]), tokenizer,
                                   max_seq_length=HPARAMS["max_seq_length"])["train"] for t in specs}
    mtl_rows = sum(len(d) for d in mtl_data.values())

    tmp = tempfile.TemporaryDirectory()
    set_seed(seed)
    mtl_timer = TrainingLoopTimer()
    mtl_trainer = MultiTaskTrainer(
        model=MultiTaskModel.from_encoder(model_path(), list(specs.values())),
        args=MultiTaskTrainingArguments(**trainer_kwargs(tmp.name, bs, seed, lr), sampling_strategy="proportional"),
        train_dataset=mtl_data, processing_class=tokenizer, callbacks=[mtl_timer])
    singles = {t: single_task_trainer(specs[t], raw[t], tokenizer, tmp.name, bs, lr, seed) for t in specs}
    assert all(len(singles[t][0].train_dataset) == len(mtl_data[t]) for t in specs), "contenders differ in rows"

    def run_mtl() -> dict[str, float]:
        mtl_trainer.train()
        return {"seconds": mtl_timer.seconds, "examples": mtl_rows, "steps": mtl_trainer.state.global_step}

    def run_singles() -> dict[str, float]:
        out = {"seconds": 0.0, "examples": 0, "steps": 0}
        for t, (trainer, timer) in singles.items():
            trainer.train()
            out[f"{t}_seconds"] = timer.seconds
            out[f"{t}_examples"] = len(trainer.train_dataset)
            out["seconds"] += timer.seconds
            out["examples"] += len(trainer.train_dataset)
            out["steps"] += trainer.state.global_step
        return out

    first_per_round: list[str] = []

    def report(round_index: int, warm: bool, results: dict[str, Any]) -> None:
        rates = {name: r["examples"] / r["seconds"] for name, r in results.items()}
        if not warm:
            first_per_round.append(next(iter(results)))
        log(f"five-task training round {round_index + 1}/{args.warmup_rounds + args.rounds}"
            f"{' (warm-up)' if warm else ''}: " + ", ".join(f"{n} {v:.1f}" for n, v in rates.items())
            + f" examples/s, ratio {rates['mtl_trainer'] / rates['single_trainers']:.3f}")

    records = interleave({"mtl_trainer": run_mtl, "single_trainers": run_singles}, args.warmup_rounds, args.rounds,
                         report)
    tmp.cleanup()

    out: dict[str, Any] = {"rows": {t: len(d) for t, d in mtl_data.items()}, "contenders": {}}
    for name, rounds in records.items():
        out["contenders"][name] = {"examples_per_s": summarize([r["examples"] / r["seconds"] for r in rounds]),
                                   "examples_per_round": rounds[0]["examples"], "steps_per_round": rounds[0]["steps"]}
    out["single_by_task"] = {t: summarize([r[f"{t}_examples"] / r[f"{t}_seconds"] for r in records["single_trainers"]])
                             for t in specs}
    med = {name: c["examples_per_s"]["median"] for name, c in out["contenders"].items()}
    out["ratio"] = round(med["mtl_trainer"] / med["single_trainers"], 3)
    out["per_round_ratios"] = [round((a["examples"] / a["seconds"]) / (b["examples"] / b["seconds"]), 3)
                               for a, b in zip(records["mtl_trainer"], records["single_trainers"])]
    out["first_per_round"] = first_per_round
    out["mean_subtokens"] = {t: round(sum(len(ids) for ids in d["input_ids"]) / len(d), 1)
                             for t, d in mtl_data.items()}
    return out


def main_five_training(args: argparse.Namespace) -> None:
    """``--five_training``: only the five-task measurement, into ``speed_five.json`` and its docs subsection."""
    setup_torch(NUM_THREADS)
    results: dict[str, Any] = {
        "machine": machine_info(), "quick": args.quick,
        "config": {"rows_per_task": args.five_rows_per_task, "batch_size": args.batch_size,
                   "learning_rate": FIVE_HPARAMS["learning_rate"], "max_seq_length": HPARAMS["max_seq_length"],
                   "rounds": args.rounds, "warmup_rounds": args.warmup_rounds, "num_threads": NUM_THREADS}}
    log(f"five-task training; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"config: {results['config']}")
    start = time.perf_counter()
    results.update(bench_five_training(args))
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    out_path = args.output_dir / SPEED_FIVE_JSON
    write_json(out_path, results)
    log(f"ratio of medians (a) / (b): {results['ratio']}; per round {results['per_round_ratios']}")
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    if not args.no_docs:
        written = render_docs(args.output_dir)
        log("updated " + " and ".join(str(path.relative_to(ROOT)) for path in written))


# ---------------------------------------------------------------------------------------------------------------------
# 5. Question answering inference (--qa_pipeline)
# ---------------------------------------------------------------------------------------------------------------------

QA_QUESTIONS = 300
QA_BATCH_SIZE = 32  # windows per forward pass, both contenders
QA_BASELINE_LABEL = ("run_qa.py's prediction path on `BertForQuestionAnswering` (`prepare_validation_features`, "
                     "batches padded by `DataCollatorWithPadding`, one forward pass each, utils_qa.py's "
                     "`postprocess_qa_predictions`)")
QA_BASELINE_NOTE = (
    "The reference: the issue names transformers' `pipeline(\"question-answering\")`, but transformers 5 removed "
    "that task (`pipeline(\"question-answering\", ...)` raises *The task question-answering has been removed from "
    "transformers*), and mtl_hf requires transformers >= 5.24. What transformers 5 still ships for extractive QA is "
    "the example script run_qa.py, so the reference is its prediction path, the same functions as the "
    "single-task model of the QA quality section, run as the pipeline ran them: the questions' windows (question "
    "first, `only_second` truncation, `stride=doc_stride`), forward passes in batches, the best start + end span "
    "mapped back to the context's characters. It does what the removed pipeline did per call, except that it "
    "tokenizes all questions in one batched tokenizer call (the pipeline tokenized them one at a time) and skips the "
    "pipeline's softmax scores, so if anything it is the faster reference.")


def qa_models(spec) -> tuple[MultiTaskModel, Any]:
    """A ``MultiTaskModel`` with the one QA task (a fresh head, seeded) and a ``BertForQuestionAnswering`` with the
    same weights: our encoder's state in ``.bert`` (which has no pooler), our head's ``Linear(hidden, 2)`` (output 0:
    start logits, 1: end logits) in ``qa_outputs``. Both in eval mode; :func:`check_same_logits` checks them."""
    set_seed(HPARAMS["seed"])
    mtl_model = MultiTaskModel.from_encoder(model_path(), [spec]).eval()
    qa_model = AutoModelForQuestionAnswering.from_pretrained(model_path()).eval()
    missing, unexpected = qa_model.bert.load_state_dict(mtl_model.encoder.state_dict(), strict=False)
    assert not missing, f"keys of BertForQuestionAnswering.bert not in the MultiTaskModel's encoder: {missing}"
    assert all(key.startswith("pooler.") for key in unexpected), unexpected
    qa_model.qa_outputs.load_state_dict(mtl_model.heads[spec.name].classifier.state_dict())
    return mtl_model, qa_model


def check_same_logits(mtl_model, qa_model, tokenizer, spec, questions: list[str], contexts: list[str],
                      max_length: int) -> float:
    """Start and end logits of both models on one padded batch (run_qa.py's pair encoding); they must agree within
    1e-5. Returns the largest absolute difference."""
    encoding = tokenizer([q.lstrip() for q in questions], contexts, truncation="only_second", max_length=max_length,
                         padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = mtl_model(**encoding, task=spec.name).logits
        theirs = qa_model(**encoding)
    mask = encoding["attention_mask"].bool()
    diff = max(float((ours[..., 0] - theirs.start_logits)[mask].abs().max()),
               float((ours[..., 1] - theirs.end_logits)[mask].abs().max()))
    assert diff <= 1e-5, f"start/end logits differ by {diff}: the weights were not copied right"
    return diff


def bench_qa_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """Answers per second of ``MultiTaskPipeline`` on ``{"question", "context"}`` dicts against run_qa.py's prediction
    path (see :data:`QA_BASELINE_NOTE`) on the same weights and questions, interleaved rounds; and the share of
    questions where both give the same span."""
    specs, raws = load_qa_corpora(args.output_dir, names=(QA_TASK,))
    spec = specs[QA_TASK]
    tokenizer = load_tokenizer(model_path())
    rows = sample(raws[QA_TASK]["test"], args.qa_questions, seed=HPARAMS["seed"])
    ids, questions, contexts = list(rows["id"]), list(rows["question"]), list(rows["context"])
    bs, max_length = args.batch_size, QA_MAX_SEQ_LENGTH
    mtl_model, qa_model = qa_models(spec)
    diff = check_same_logits(mtl_model, qa_model, tokenizer, spec, questions[:bs], contexts[:bs], max_length)
    log(f"same weights: start/end logits agree (largest difference {diff:.1e})")

    pipe = MultiTaskPipeline(mtl_model, tokenizer, batch_size=bs, max_length=max_length)
    inputs = [{"question": q, "context": c} for q, c in zip(questions, contexts)]
    examples = {"id": ids, "question": questions, "context": contexts}
    windows = len(run_qa_prepare_validation_features(tokenizer, max_length, spec.doc_stride)(dict(examples))
                  ["input_ids"])
    answers: dict[str, Any] = {}

    def run_mtl() -> dict[str, float]:
        start = time.perf_counter()
        results = pipe(inputs)
        seconds = time.perf_counter() - start
        assert len(results) == len(inputs)
        answers["mtl_pipeline"] = [result[spec.name] for result in results]
        return {"seconds": seconds}

    def run_baseline() -> dict[str, float]:
        start = time.perf_counter()
        spans = run_qa_answer(qa_model, tokenizer, examples, max_length, spec.doc_stride, bs,
                              n_best_size=spec.n_best_size, max_answer_length=spec.max_answer_length)
        seconds = time.perf_counter() - start
        assert len(spans) == len(ids)
        answers["baseline"] = [spans[example_id] for example_id in ids]
        return {"seconds": seconds}

    first_per_round: list[str] = []

    def report(round_index: int, warm: bool, results: dict[str, Any]) -> None:
        rates = {name: len(inputs) / r["seconds"] for name, r in results.items()}
        if not warm:
            first_per_round.append(next(iter(results)))
        log(f"QA round {round_index + 1}/{args.warmup_rounds + args.rounds}{' (warm-up)' if warm else ''}: "
            + ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())
            + f" answers/s, ratio {rates['mtl_pipeline'] / rates['baseline']:.2f}")

    with torch.inference_mode():
        records = interleave({"mtl_pipeline": run_mtl, "baseline": run_baseline}, args.warmup_rounds, args.rounds,
                             report)

    ours, theirs = answers["mtl_pipeline"], answers["baseline"]
    same_span = sum((a["start"], a["end"]) == (b["start"], b["end"]) for a, b in zip(ours, theirs)) / len(ours)
    same_text = sum(a["answer"] == b["text"] for a, b in zip(ours, theirs)) / len(ours)
    out: dict[str, Any] = {
        "questions": len(inputs), "windows": windows, "logits_max_abs_diff": diff,
        "baseline": "run_qa", "baseline_label": QA_BASELINE_LABEL, "baseline_note": QA_BASELINE_NOTE,
        "contenders": {name: {"answers_per_s": summarize([len(inputs) / r["seconds"] for r in rounds])}
                       for name, rounds in records.items()},
        "per_round_ratios": [round(b["seconds"] / a["seconds"], 3)
                             for a, b in zip(records["mtl_pipeline"], records["baseline"])],
        "first_per_round": first_per_round,
        "agreement": {"same_span": round(same_span, 4), "same_text": round(same_text, 4), "questions": len(ours)},
        "differing_examples": [{"id": example_id, "mtl_pipeline": [a["start"], a["end"], a["answer"]],
                                "baseline": [b["start"], b["end"], b["text"]]}
                               for example_id, a, b in zip(ids, ours, theirs)
                               if (a["start"], a["end"]) != (b["start"], b["end"])][:10],
    }
    med = {name: c["answers_per_s"]["median"] for name, c in out["contenders"].items()}
    out["ratio"] = round(med["mtl_pipeline"] / med["baseline"], 3)
    return out


def main_qa_pipeline(args: argparse.Namespace) -> None:
    """``--qa_pipeline``: only the QA inference measurement, into ``speed_qa.json`` and its docs subsection (spliced
    in; the rest of the page is left as it is)."""
    setup_torch(NUM_THREADS)
    results: dict[str, Any] = {
        "machine": machine_info(), "quick": args.quick,
        "config": {"questions": args.qa_questions, "batch_size": args.batch_size, "max_length": QA_MAX_SEQ_LENGTH,
                   **QA_SETTINGS, "rounds": args.rounds, "warmup_rounds": args.warmup_rounds,
                   "num_threads": NUM_THREADS}}
    log(f"QA pipeline; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"config: {results['config']}")
    start = time.perf_counter()
    results.update(bench_qa_pipeline(args))
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    out_path = args.output_dir / SPEED_QA_JSON
    write_json(out_path, results)
    log(f"ratio of medians MultiTaskPipeline / run_qa.py: {results['ratio']}; per round {results['per_round_ratios']};"
        f" same span {results['agreement']['same_span']:.1%}, same text {results['agreement']['same_text']:.1%}")
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    if not args.no_docs:
        splice_speed_qa_section(DOCS_MD, results)
        log(f"updated {DOCS_MD.relative_to(ROOT)} (subsection {SPEED_QA_HEADING!r} only)")


# ---------------------------------------------------------------------------------------------------------------------
# 6. The ONNX backend (--onnx)
# ---------------------------------------------------------------------------------------------------------------------

ONNX_TRAIN_ROWS = 4000  # train rows per task, a seeded sample: 4,000 CoNLL sentences, every BBC headline (1,603)
ONNX_EPOCHS = 1
ONNX_TEXTS = 500  # CoNLL test sentences per timed round (as the inference section)
ONNX_MODEL_DIR = "onnx_model"  # under --output_dir: the trained model, its tokenizer and its onnx/ export
ONNX_SPEEDUP = 1.3  # targets: ONNX (float) and int8 sentences/s against the PyTorch pipeline's, and int8's loss
INT8_SPEEDUP = 2.0
INT8_MAX_LOSS = 1.0  # points, on either task
SPEED_ONNX_JSON = "speed_onnx.json"
_ORT_THREADS = {"model_kwargs": {"intra_op_num_threads": NUM_THREADS}}
ONNX_BACKENDS = {  # contender: (MultiTaskPipeline.from_pretrained keywords, label in the docs)
    "torch": ({}, "`MultiTaskPipeline.from_pretrained(path)` (PyTorch)"),
    "onnx": ({"backend": "onnx", **_ORT_THREADS},
             '`MultiTaskPipeline.from_pretrained(path, backend="onnx")` (ONNX Runtime, float32)'),
    "onnx_int8": ({"backend": "onnx", "quantize": True, **_ORT_THREADS},
                  '`MultiTaskPipeline.from_pretrained(path, backend="onnx", quantize=True)` (int8 weights)'),
}


def onnx_word_tags(words: list[str], entities: list[dict[str, Any]]) -> list[str]:
    """IOB2 tags of CoNLL words from the pipeline's entity spans over ``" ".join(words)``: a word takes the span that
    covers its first character (``B-`` where the span starts there, ``I-`` where it started before), as the project's
    evaluation reads a word's tag at its first sub-token; other words are ``O``."""
    tags, start = [], 0
    spans = sorted((entity["start"], entity["end"], entity["entity_group"]) for entity in entities)
    for word in words:
        covering = next(((begin, group) for begin, end, group in spans if begin <= start < end), None)
        tags.append("O" if covering is None else f"{'B' if covering[0] == start else 'I'}-{covering[1]}")
        start += len(word) + 1
    return tags


def train_onnx_model(specs, raws, tokenizer, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The benchmark's model: MiniLM with the topic and NER heads, trained by ``quality.py``'s ``train_mtl`` on a
    seeded sample of up to ``--onnx_train_rows`` train rows per task, saved with its tokenizer to ``folder``."""
    cfg = {**HPARAMS, "num_train_epochs": args.onnx_epochs}
    train, test, raw_test = {}, {}, {}
    for task in TASK_ORDER:
        raw = sample(raws[task]["train"], args.onnx_train_rows, seed=cfg["seed"])
        train[task] = preprocess_task(specs[task], datasets.DatasetDict(train=raw), tokenizer,
                                      max_seq_length=cfg["max_seq_length"])["train"]
        # train_mtl also predicts a test set (a cross-check the backends' scores below do not need): a few rows
        raw_test[task] = head(raws[task]["test"], 32)
        test[task] = preprocess_task(specs[task], datasets.DatasetDict(test=raw_test[task]), tokenizer,
                                     max_seq_length=cfg["max_seq_length"])["test"]
    _, cost = train_mtl({task: specs[task] for task in TASK_ORDER}, train, test, raw_test, tokenizer, cfg,
                        save_to=folder)
    return {"train_rows": {task: len(train[task]) for task in TASK_ORDER}, "epochs": cfg["num_train_epochs"],
            "learning_rate": cfg["learning_rate"], "train_seconds": cost["train_seconds"],
            "train_steps": cost["train_steps"]}


def onnx_quality(pipe: MultiTaskPipeline, ner_rows: datasets.Dataset, topic_rows: datasets.Dataset,
                 batch_size: int) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A backend's scores, as the benchmark scores every model: word-level strict-IOB2 seqeval on the CoNLL test
    sentences (word tags from the pipeline's entities, :func:`onnx_word_tags`) and accuracy on the BBC test
    headlines; and its predictions (entity lists, topic labels)."""
    words = list(ner_rows["tokens"])
    entities = [result["ner"] for result in pipe([" ".join(w) for w in words], tasks=["ner"], batch_size=batch_size)]
    topics = [result["topic"]["label"]
              for result in pipe(list(topic_rows["text"]), tasks=["topic"], batch_size=batch_size)]
    scores = {"ner": ner_scores([onnx_word_tags(w, e) for w, e in zip(words, entities)], list(ner_rows["ner_tags"])),
              "topic_accuracy": accuracy(topics, list(topic_rows["label"]))}
    return scores, {"ner": [[(e["entity_group"], e["start"], e["end"]) for e in found] for found in entities],
                    "topic": topics}


def bench_onnx(args: argparse.Namespace) -> dict[str, Any]:
    """The ONNX backend against the PyTorch pipeline on a trained model: the export's cost, sentences per second of
    the three backends on CoNLL test sentences (both tasks on every text) in interleaved rounds, and each backend's
    quality on the CoNLL and BBC test sets."""
    specs, raws = load_corpora()
    tokenizer = load_tokenizer(model_path())
    folder = args.output_dir / ONNX_MODEL_DIR
    shutil.rmtree(folder, ignore_errors=True)  # a model (and export) of an earlier run would be stale
    log(f"training MiniLM on up to {args.onnx_train_rows} train rows per task, {args.onnx_epochs} epochs")
    out: dict[str, Any] = {"training": train_onnx_model(specs, raws, tokenizer, args, folder)}
    log(f"trained: {out['training']}")

    model = MultiTaskModel.from_pretrained(folder).eval()
    start = time.perf_counter()
    fp32 = export_onnx(model, folder)
    middle = time.perf_counter()
    int8 = quantize_onnx(fp32, folder / ONNX_INT8_FILE)
    out["export"] = {"export_seconds": round(middle - start, 1), "quantize_seconds": round(time.perf_counter() - middle, 1),
                     "pytorch_mb": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6, 1),
                     "onnx_mb": round(fp32.stat().st_size / 1e6, 1), "onnx_int8_mb": round(int8.stat().st_size / 1e6, 1)}
    log(f"export: {out['export']}")
    written = {path: path.stat().st_mtime_ns for path in (fp32, int8)}

    bs = args.batch_size
    pipes = {name: MultiTaskPipeline.from_pretrained(str(folder), batch_size=bs, **keywords)
             for name, (keywords, _) in ONNX_BACKENDS.items()}
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in written.items()), "the pipeline exported again"

    ner_test, topic_test = head(raws["ner"]["test"], args.onnx_test_rows), head(raws["topic"]["test"], args.onnx_test_rows)
    # One padded batch of test sentences: the float export's logits against PyTorch's (int8's for information).
    encoded = tokenizer([" ".join(words) for words in ner_test["tokens"][:bs]], padding=True, truncation=True,
                        max_length=HPARAMS["max_seq_length"], return_tensors="pt")
    with torch.inference_mode():
        reference = model.forward_tasks(encoded["input_ids"], encoded["attention_mask"],
                                        token_type_ids=encoded["token_type_ids"])
    kept = encoded["attention_mask"].bool()
    out["logits_max_abs_diff"] = {}
    for name in ("onnx", "onnx_int8"):
        logits = pipes[name].model.forward_tasks(encoded["input_ids"], encoded["attention_mask"],
                                                 token_type_ids=encoded["token_type_ids"])
        out["logits_max_abs_diff"][name] = {
            "ner": float((logits["ner"] - reference["ner"])[kept].abs().max()),
            "topic": float((logits["topic"] - reference["topic"]).abs().max())}
    log(f"logits against PyTorch's, largest difference: {out['logits_max_abs_diff']}")
    assert max(out["logits_max_abs_diff"]["onnx"].values()) <= 1e-4, "the float export's logits differ"

    rows = sample(raws["ner"]["test"], args.onnx_texts, seed=HPARAMS["seed"])
    texts = [" ".join(words) for words in rows["tokens"]]

    def contender(name: str):
        def run() -> dict[str, float]:
            start = time.perf_counter()
            results = pipes[name](texts, tasks=["ner", "topic"], batch_size=bs)
            seconds = time.perf_counter() - start
            assert len(results) == len(texts)
            return {"seconds": seconds}
        return run

    first_per_round: list[str] = []

    def report(round_index: int, warm: bool, results: dict[str, Any]) -> None:
        if not warm:
            first_per_round.append(next(iter(results)))
        log(f"ONNX round {round_index + 1}/{args.warmup_rounds + args.rounds}{' (warm-up)' if warm else ''}: "
            + ", ".join(f"{name} {len(texts) / r['seconds']:.1f}" for name, r in results.items()) + " sentences/s")

    with torch.inference_mode():
        records = interleave({name: contender(name) for name in ONNX_BACKENDS}, args.warmup_rounds, args.rounds,
                             report)
    out["texts"] = len(texts)
    out["mean_subtokens"] = round(sum(len(tokenizer(text)["input_ids"]) for text in texts) / len(texts), 1)
    out["contenders"] = {name: {"sentences_per_s": summarize([len(texts) / r["seconds"] for r in rounds])}
                         for name, rounds in records.items()}
    out["first_per_round"] = first_per_round
    med = {name: c["sentences_per_s"]["median"] for name, c in out["contenders"].items()}
    out["ratios"] = {name: round(med[name] / med["torch"], 2) for name in ("onnx", "onnx_int8")}
    out["per_round_ratios"] = {name: [round(b["seconds"] / a["seconds"], 2)
                                      for a, b in zip(records[name], records["torch"])]
                               for name in ("onnx", "onnx_int8")}
    log(f"speed ratios against PyTorch: {out['ratios']}")

    out["test_rows"] = {"ner": len(ner_test), "topic": len(topic_test)}
    out["quality"], predictions = {}, {}
    with torch.inference_mode():
        for name, pipe in pipes.items():
            out["quality"][name], predictions[name] = onnx_quality(pipe, ner_test, topic_test, bs)
            log(f"{name}: NER F1 {out['quality'][name]['ner']['f1']}, "
                f"topic accuracy {out['quality'][name]['topic_accuracy']}")
    out["agreement"] = {name: {task: round(sum(a == b for a, b in zip(predictions[name][task],
                                                                       predictions["torch"][task]))
                                           / len(predictions["torch"][task]), 4) for task in ("ner", "topic")}
                        for name in ("onnx", "onnx_int8")}
    base, int8_scores = out["quality"]["torch"], out["quality"]["onnx_int8"]
    out["int8_loss"] = {"ner_f1": round(base["ner"]["f1"] - int8_scores["ner"]["f1"], 2),
                        "topic_accuracy": round(base["topic_accuracy"] - int8_scores["topic_accuracy"], 2)}
    out["targets"] = {"onnx_speedup": out["ratios"]["onnx"] >= ONNX_SPEEDUP,
                      "int8_speedup": out["ratios"]["onnx_int8"] >= INT8_SPEEDUP,
                      "int8_loss": max(out["int8_loss"].values()) <= INT8_MAX_LOSS}
    out["miss_notes"] = onnx_miss_notes(out)
    return out


def onnx_miss_notes(out: dict[str, Any]) -> dict[str, str]:
    """What a missed target would take, written next to the numbers."""
    notes = {}
    if not out["targets"]["onnx_speedup"]:
        notes["onnx_speedup"] = (
            f"the float export runs at {out['ratios']['onnx']}x the PyTorch pipeline, slower, although the graph alone "
            "is on par with PyTorch on this CPU: one batch of 32 CoNLL sentences of this model took 65-74 ms in ONNX "
            "Runtime and 64-78 ms in PyTorch 2.13 (oneDNN), with or without thread spinning, memory patterns or "
            "arena, and ONNX Runtime's transformer optimizer (`onnxruntime.transformers.optimizer`) fuses the layer "
            "norms and GELUs of the dynamo export but not its attention, and gains nothing (measured by hand outside "
            "this script). So the float graph gives no speed-up to win here, and the end-to-end loss is in the "
            "pipeline's ONNX path (input and output conversion, the second thread pool beside PyTorch's), not yet "
            "found. What it would take: finding that loss, then an export whose attention ONNX Runtime fuses "
            "(a fused-attention pattern, or the TorchScript exporter for fixed shapes), or a GPU.")
    if not out["targets"]["int8_speedup"]:
        notes["int8_speedup"] = (
            "int8 matrix products gain most on CPUs with VNNI (AVX512-VNNI / AVX-VNNI), and the pipeline's "
            "Python-side work is not made faster by quantization. What it would take: fused attention before "
            "quantizing, static (calibrated) quantization of the activations as well, or a CPU with VNNI.")
    if not out["targets"]["int8_loss"]:
        notes["int8_loss"] = (
            "dynamic int8 quantizes every weight matrix, the embeddings included. What it would take: leaving the "
            "most sensitive layers in float (`nodes_to_exclude`: the embeddings' Gather, the heads' MatMul), or "
            "static quantization calibrated on training sentences, or quantization-aware fine-tuning.")
    return notes


def render_speed_onnx(result: dict[str, Any]) -> list[str]:
    """The ``### ONNX backend`` subsection of the speed section, from ``speed_onnx.json``."""
    out: list[str] = []
    w = out.append
    cfg, training, export = result["config"], result["training"], result["export"]
    w(SPEED_ONNX_HEADING)
    w("")
    w("Reproduce" + (f" ({result['total_seconds'] / 60:.0f} min on the machine below)"
                     if result.get("total_seconds") else "") + ":")
    w("")
    w("```bash")
    w('pip install -e ".[onnx]"        # onnx, onnxscript, onnxruntime')
    w("python bench/speed.py --onnx   # -> bench/results/speed_onnx.json, rewrites this subsection")
    w("```")
    w("")
    out.extend(_machine_lines(result["machine"], "Machine"))
    w("")
    w(f"One model, three backends: MiniLM with the NER and topic heads, trained here with `MultiTaskTrainer` on "
      f"{training['train_rows']['ner']:,} CoNLL train sentences (a seeded sample) and all "
      f"{training['train_rows']['topic']:,} BBC train headlines, {training['epochs']} epochs, learning rate "
      f"{training['learning_rate']} ({training['train_steps']} steps, {training['train_seconds'] / 60:.0f} min), so "
      "that the quality numbers mean something; then exported with `mtl_hf.export_onnx` "
      f"({export['export_seconds']:.0f} s; one graph, outputs `logits_ner` and `logits_topic`) and quantized to int8 "
      f"weights ({export['quantize_seconds']:.0f} s). Sizes: {export['pytorch_mb']:.0f} MB of float32 parameters, "
      f"`onnx/model.onnx` {export['onnx_mb']:.0f} MB, `onnx/model_int8.onnx` {export['onnx_int8_mb']:.0f} MB. The "
      "float export's logits equal PyTorch's on a padded batch of test sentences (largest difference "
      f"{max(result['logits_max_abs_diff']['onnx'].values()):.1e}).")
    w("")
    w(f"Speed: {result['texts']} CoNLL test sentences (a seeded sample, {result['mean_subtokens']} sub-tokens on "
      f"average) from raw text, both tasks on every text (`tasks=[\"ner\", \"topic\"]`), batch size "
      f"{cfg['batch_size']}, in one process: {cfg['num_threads']} torch threads and ONNX Runtime "
      f"`intra_op_num_threads={cfg['num_threads']}` (CPU execution provider), {cfg['warmup_rounds']} warm-up "
      f"round{'s' if cfg['warmup_rounds'] != 1 else ''} then {cfg['rounds']} timed rounds in which the three take "
      "turns going first. Median over rounds, [min-max] in brackets. Quality: every backend through the same "
      f"pipeline on the CoNLL test set ({result['test_rows']['ner']} sentences; word-level strict-IOB2 seqeval entity "
      f"F1, a word tagged by the entity that covers its first character) and the BBC test set "
      f"({result['test_rows']['topic']} headlines; accuracy).")
    w("")
    w("| Backend | Sentences/s | x PyTorch | CoNLL test entity F1 | BBC test accuracy | Same predictions as PyTorch "
      "(NER sentences / topics) |")
    w("|---|---|---|---|---|---|")
    for name, (_, label) in ONNX_BACKENDS.items():
        s, quality = result["contenders"][name]["sentences_per_s"], result["quality"][name]
        ratio = "1" if name == "torch" else f"**{result['ratios'][name]:.2f}x**"
        agreement = ("" if name == "torch" else f"{result['agreement'][name]['ner']:.1%} / "
                     f"{result['agreement'][name]['topic']:.1%}")
        w(f"| {label} | **{s['median']:.1f}** [{s['min']:.1f}-{s['max']:.1f}] | {ratio} | {quality['ner']['f1']:.2f} "
          f"| {quality['topic_accuracy']:.2f} | {agreement} |")
    w("")
    loss = result["int8_loss"]
    targets = result["targets"]
    w("| Target | Measured | Result |")
    w("|---|---|---|")
    w(f"| ONNX backend >= {ONNX_SPEEDUP}x the PyTorch pipeline | {result['ratios']['onnx']:.2f}x | "
      f"{_met(targets['onnx_speedup'])} |")
    w(f"| int8 >= {INT8_SPEEDUP}x the PyTorch pipeline | {result['ratios']['onnx_int8']:.2f}x | "
      f"{_met(targets['int8_speedup'])} |")
    w(f"| int8 loses at most {INT8_MAX_LOSS:.0f} point on either task | NER F1 {-loss['ner_f1']:+.2f}, topic accuracy "
      f"{-loss['topic_accuracy']:+.2f} points | {_met(targets['int8_loss'])} |")
    w("")
    per_round = "; ".join(f"{name}: {', '.join(f'{x:.2f}' for x in ratios)}"
                          for name, ratios in result["per_round_ratios"].items())
    w(f"Per-round ratios against PyTorch: {per_round}.")
    w("")
    for key, note in result["miss_notes"].items():
        w(f"*{key} missed*: {note}")
        w("")
    return out


def main_onnx(args: argparse.Namespace) -> None:
    """``--onnx``: only the ONNX backend measurement, into ``speed_onnx.json`` and its docs subsection (spliced in;
    the rest of the page is left as it is)."""
    setup_torch(NUM_THREADS)
    results: dict[str, Any] = {
        "machine": machine_info(), "quick": args.quick,
        "config": {"batch_size": args.batch_size, "texts": args.onnx_texts, "train_rows": args.onnx_train_rows,
                   "epochs": args.onnx_epochs, "test_rows": args.onnx_test_rows, "rounds": args.rounds,
                   "warmup_rounds": args.warmup_rounds, "num_threads": NUM_THREADS,
                   "onnxruntime": importlib.metadata.version("onnxruntime")}}
    log(f"ONNX backend; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"config: {results['config']}")
    start = time.perf_counter()
    results.update(bench_onnx(args))
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    out_path = args.output_dir / SPEED_ONNX_JSON
    write_json(out_path, results)
    log(f"ratios: {results['ratios']}; int8 loss: {results['int8_loss']}; targets: {results['targets']}")
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    if not args.no_docs:
        _splice_speed_subsection(DOCS_MD, SPEED_ONNX_HEADING, render_speed_onnx(results), SPEED_QA_HEADING)
        log(f"updated {DOCS_MD.relative_to(ROOT)} (subsection {SPEED_ONNX_HEADING!r} only)")


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="Where speed.json goes; a trained multi-task model found in <output_dir>/mtl_model (from "
                             "quality.py) is used for the inference test (default bench/results).")
    parser.add_argument("--batch_size", type=int, default=None,
                        help=f"Default {HPARAMS['per_device_train_batch_size']}; with --five_training "
                             f"{FIVE_HPARAMS['per_device_train_batch_size']}, as in quality.py --suite five; with "
                             f"--qa_pipeline {QA_BATCH_SIZE} (windows per forward pass).")
    parser.add_argument("--train_rows_per_task", type=int, default=256,
                        help="Rows per task in the training sample (one round = one epoch over both).")
    parser.add_argument("--five_training", action="store_true",
                        help="Only the five-task training throughput (speed_five.json and its docs subsection).")
    parser.add_argument("--five_rows_per_task", type=int, default=FIVE_ROWS_PER_TASK,
                        help="--five_training: rows per task (one round = one epoch of each contender over them).")
    parser.add_argument("--qa_pipeline", action="store_true",
                        help="Only QA inference: MultiTaskPipeline vs run_qa.py's prediction path on the same weights "
                             "(speed_qa.json and its docs subsection).")
    parser.add_argument("--qa_questions", type=int, default=QA_QUESTIONS,
                        help="--qa_pipeline: SQuADShifts test questions answered per round (seeded sample).")
    parser.add_argument("--onnx", action="store_true",
                        help="Only the ONNX backend: PyTorch vs ONNX vs ONNX int8 pipelines on a trained model "
                             "(speed_onnx.json and its docs subsection; needs `pip install -e .[onnx]`).")
    parser.add_argument("--onnx_train_rows", type=int, default=ONNX_TRAIN_ROWS,
                        help="--onnx: train rows per task the model is trained on (a seeded sample; BBC has 1,603).")
    parser.add_argument("--onnx_epochs", type=float, default=ONNX_EPOCHS, help="--onnx: training epochs.")
    parser.add_argument("--onnx_texts", type=int, default=ONNX_TEXTS,
                        help="--onnx: CoNLL test sentences per timed round (seeded sample).")
    parser.add_argument("--onnx_test_rows", type=int, default=None,
                        help="--onnx: test rows each backend is scored on (default: the whole CoNLL and BBC tests).")
    parser.add_argument("--original_examples_per_round", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="Timed rounds per section.")
    parser.add_argument("--warmup_rounds", type=int, default=1)
    parser.add_argument("--inference_texts", type=int, default=500)
    parser.add_argument("--data_prep_rows", type=int, default=None, help="Default: the whole CoNLL train split.")
    parser.add_argument("--data_prep_repetitions", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["training", "inference", "data_prep"])
    parser.add_argument("--quick", action="store_true", help="Smoke run: tiny samples, 2 rounds.")
    parser.add_argument("--no_docs", action="store_true", help="Do not rewrite docs/benchmarks.md.")
    args = parser.parse_args()
    if args.quick:
        args.output_dir = args.output_dir or DEFAULT_OUTPUT_DIR / "quick"
        args.train_rows_per_task = 64
        args.five_rows_per_task = 32
        args.qa_questions = 32
        args.onnx_train_rows = 64
        args.onnx_epochs = 1
        args.onnx_texts = 64
        args.onnx_test_rows = 100
        args.original_examples_per_round = 8
        args.rounds = 2
        args.inference_texts = 64
        args.data_prep_rows = 500
        args.data_prep_repetitions = 1
        args.no_docs = True
    args.output_dir = args.output_dir or DEFAULT_OUTPUT_DIR
    if args.batch_size is None:
        args.batch_size = (QA_BATCH_SIZE if args.qa_pipeline else
                           (FIVE_HPARAMS if args.five_training else HPARAMS)["per_device_train_batch_size"])
    return args


def main() -> None:
    args = parse_args()
    if args.five_training:
        main_five_training(args)
        return
    if args.qa_pipeline:
        main_qa_pipeline(args)
        return
    if args.onnx:
        main_onnx(args)
        return
    setup_torch(NUM_THREADS)
    results: dict[str, Any] = {"machine": machine_info(), "quick": args.quick,
                               "config": {"batch_size": args.batch_size, "train_rows_per_task": args.train_rows_per_task,
                                          "original_examples_per_round": args.original_examples_per_round,
                                          "rounds": args.rounds, "warmup_rounds": args.warmup_rounds,
                                          "num_threads": NUM_THREADS, "max_seq_length": HPARAMS["max_seq_length"]}}
    log(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; config: {results['config']}")
    specs, raws = load_corpora()
    tokenizer = load_tokenizer(model_path())
    out_path = args.output_dir / SPEED_JSON
    start = time.perf_counter()
    if "training" not in args.skip:
        results["training"] = bench_training(specs, raws, tokenizer, args)
        log(f"training ratios: {results['training']['ratios']}")
        write_json(out_path, results)
    if "inference" not in args.skip:
        results["inference"] = bench_inference(specs, raws, tokenizer, args)
        log(f"inference ratio: {results['inference']['ratio_mtl_vs_two_pipelines']}")
        write_json(out_path, results)
    if "data_prep" not in args.skip:
        results["data_prep"] = bench_data_prep(specs, raws, tokenizer, args)
        log(f"data prep ratio (time): {results['data_prep']['ratio_mtl_vs_run_ner_time']}")
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_path, results)
    log(f"wrote {out_path} ({results['total_seconds'] / 60:.1f} min)")
    if not args.no_docs:
        if args.skip:
            log("partial run (--skip): docs not updated")
        else:
            render_docs(args.output_dir)
            log("updated docs/benchmarks.md and docs/benchmarks.png")


if __name__ == "__main__":
    main()
