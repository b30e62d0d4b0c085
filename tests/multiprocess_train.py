"""Run by tests/test_trainer.py under `accelerate launch --multi_gpu --num_processes 2` (two gloo ranks on CPU).

Each rank writes what it saw: world size, the `(task, row ids)` of every batch it trained (recorded as the batches
reached `training_step`), its final weights, its evaluation metrics and predictions, and whether `predict` over an
odd-sized eval set equals a plain one-process pass of the same model.
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
    MULTIPROCESS_DEV_SEED,
    MULTIPROCESS_DEV_SIZE,
    MULTIPROCESS_TRAIN_SEED,
    MULTIPROCESS_TRAIN_SIZE,
    RecordingTrainer,
    make_model,
    make_tokenizer,
    tokenized,
)


def main(out_dir: Path) -> None:
    args = MultiTaskTrainingArguments(str(out_dir / "run"), **MULTIPROCESS_ARGS)
    rank = args.process_index
    tokenizer = make_tokenizer(out_dir / f"tokenizer{rank}")
    train = tokenized(tokenizer, MULTIPROCESS_TRAIN_SIZE, seed=MULTIPROCESS_TRAIN_SEED)
    dev = tokenized(tokenizer, MULTIPROCESS_DEV_SIZE, seed=MULTIPROCESS_DEV_SEED)
    trainer = RecordingTrainer(model=make_model(tokenizer.vocab_size), args=args, train_dataset=train,
                               eval_dataset=dev, processing_class=tokenizer)
    trainer.train()
    metrics = trainer.evaluate()
    predicted = trainer.predict(dev).predictions

    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    match = True
    for task, dataset in dev.items():
        batch = MultiTaskDataCollator(tokenizer)([dataset[i] for i in range(len(dataset))])
        with torch.no_grad():
            ids = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1).numpy()
        match &= trainer._to_label_space(trainer.task_specs[task], ids, dataset) == predicted[task]
        match &= len(predicted[task]) == len(dataset)

    report = {
        "world_size": trainer.accelerator.num_processes,
        "steps": trainer.state.global_step,
        "trained": trainer.trained,
        "predictions": predicted,
        "predictions_match_single_process": bool(match),
        "metrics": metrics,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out_dir / f"weights{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
