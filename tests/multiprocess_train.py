"""Run by tests/test_trainer.py under `accelerate launch --multi_gpu --num_processes 2` (two gloo ranks on CPU).

Each rank writes what it saw: world size, the `(task, row ids)` of every batch it trained (recorded as the batches
reached `training_step`), its final weights, its evaluation metrics and predictions, and whether `predict` over an
odd-sized eval set equals a plain one-process pass of the same model. `python multiprocess_train.py OUT` trains the
topic and NER tasks; `... OUT types` a pair classification, a regression and a multilabel task; `... OUT qa` an
extractive QA task (contexts of several windows) and the topic task; `... OUT uncertainty` the topic and NER tasks
with `loss_balancing="uncertainty"` (the report adds the learned log-variances); `... OUT early_stopping` the topic and
NER tasks with `task_early_stopping_patience` and `save_best_per_task`, NER's dev tags all `O` so that it stops early
(the report holds the stops).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mtl_hf import MultiTaskTrainingArguments
from mtl_hf.data import MultiTaskDataCollator
from tests.trainer_fixtures import (
    MULTIPROCESS_ARGS,
    EARLY_STOPPING_TRAIN_SIZE,
    MULTIPROCESS_DEV_SEED,
    MULTIPROCESS_DEV_SIZE,
    MULTIPROCESS_TRAIN_SEED,
    MULTIPROCESS_TRAIN_SIZE,
    MULTIPROCESS_TYPES_ARGS,
    MOOD,
    SAME,
    TOPIC,
    TOPIC_SET,
    WHERE,
    RecordingTrainer,
    make_model,
    make_tokenizer,
    tokenized,
    tokenized_qa,
    tokenized_types,
    tokenized_unlearnable_ner,
)
from mtl_hf.task_types import get_task_type


def main(out_dir: Path, suite: str) -> None:
    settings = {"topic_ner": MULTIPROCESS_ARGS, "uncertainty": {**MULTIPROCESS_ARGS, "loss_balancing": "uncertainty",
                                                "loss_balancing_learning_rate": MULTIPROCESS_ARGS["learning_rate"]},
                "early_stopping": {**MULTIPROCESS_ARGS, "num_train_epochs": 4, "optim": "adamw_torch",
                                   "learning_rate": 1e-2, "lr_scheduler_type": "linear", "max_grad_norm": 1.0,
                                   "eval_strategy": "steps", "eval_steps": 6, "task_early_stopping_patience": 6,
                                   "save_best_per_task": True,
                                   "seed": 7}}
    args = MultiTaskTrainingArguments(str(out_dir / "run"), **settings.get(suite, MULTIPROCESS_TYPES_ARGS))
    rank = args.process_index
    tokenizer = make_tokenizer(out_dir / f"tokenizer{rank}")
    make_data = {"types": tokenized_types, "qa": tokenized_qa}.get(suite, tokenized)
    specs = {"types": {"specs": (SAME, MOOD, TOPIC_SET)}, "qa": {"specs": (WHERE, TOPIC)},
             "early_stopping": {"dropout": 0.1}}.get(suite, {})
    train = make_data(tokenizer, MULTIPROCESS_TRAIN_SIZE, seed=MULTIPROCESS_TRAIN_SEED)
    dev = make_data(tokenizer, MULTIPROCESS_DEV_SIZE, seed=MULTIPROCESS_DEV_SEED)
    if suite == "early_stopping":  # enough rows for topic to learn; NER's entity F1 stays 0 on these dev rows
        train = tokenized(tokenizer, EARLY_STOPPING_TRAIN_SIZE, seed=MULTIPROCESS_TRAIN_SEED)
        dev = tokenized_unlearnable_ner(tokenizer, 16, seed=100)
    trainer = RecordingTrainer(model=make_model(tokenizer.vocab_size, **specs), args=args, train_dataset=train,
                               eval_dataset=dev, processing_class=tokenizer)
    trainer.train()
    metrics = trainer.evaluate()
    predicted = trainer.predict(dev).predictions

    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    match, single = True, {}
    for task, dataset in dev.items():
        batch = MultiTaskDataCollator(tokenizer)([dataset[i] for i in range(len(dataset))])
        spec = trainer.task_specs[task]
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        kept = get_task_type(spec).logits_for_metrics(spec, logits).numpy()
        single[task] = trainer._to_label_space(spec, kept, dataset)
        match &= single[task] == predicted[task]
        match &= len(predicted[task]) == len(dataset)

    report = {
        "world_size": trainer.accelerator.num_processes,
        "steps": trainer.state.global_step,
        "trained": trainer.trained,
        "predictions": predicted,
        "predictions_match_single_process": bool(match),
        "single_process_predictions": single,
        "metrics": metrics,
        "log_variances": trainer.loss_balancer.state().get("log_variances"),  # {task: value}
        "task_stops": trainer.task_stops,
        "evaluations": [{k: v for k, v in entry.items() if k in ("step", "eval_topic_accuracy", "eval_ner_f1")}
                        for entry in trainer.state.log_history if "eval_topic_accuracy" in entry],
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out_dir / f"weights{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "topic_ner")
