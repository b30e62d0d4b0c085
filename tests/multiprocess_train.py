"""Run by tests/test_trainer.py under `accelerate launch --multi_gpu --num_processes 2` (two gloo ranks on CPU).

Each rank writes what it saw: world size, the task of every step, its sampler's batches, its final weights, and
whether `predict` over an odd-sized eval set equals a plain one-process pass of the same model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mtl_hf import MultiTaskTrainingArguments
from tests.trainer_fixtures import RecordingTrainer, make_model, make_tokenizer, tokenized


def main(out_dir: Path) -> None:
    args = MultiTaskTrainingArguments(
        str(out_dir / "run"), per_device_train_batch_size=2, per_device_eval_batch_size=4, num_train_epochs=2,
        learning_rate=5e-3, logging_steps=2, save_strategy="no", report_to=[], seed=3, disable_tqdm=True,
    )
    rank = args.process_index
    tokenizer = make_tokenizer(out_dir / f"tokenizer{rank}")
    train, dev = tokenized(tokenizer, 13, seed=0), tokenized(tokenizer, 11, seed=50)
    trainer = RecordingTrainer(model=make_model(tokenizer.vocab_size), args=args, train_dataset=train,
                               eval_dataset=dev, processing_class=tokenizer)
    trainer.train()
    metrics = trainer.evaluate()
    predicted = trainer.predict(dev).predictions

    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    match = True
    for task, dataset in dev.items():
        batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
        with torch.no_grad():
            ids = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1).numpy()
        match &= trainer._to_label_space(trainer.task_specs[task], ids, dataset) == predicted[task]
        match &= len(predicted[task]) == len(dataset)

    # This rank's batches, as accelerate's BatchSamplerShard hands them out of the trainer's sampler.
    rank_batches = trainer.get_train_dataloader().batch_sampler
    indices = []
    for epoch in range(int(args.num_train_epochs)):
        trainer._train_batch_sampler.set_epoch(epoch)
        indices.extend(list(rank_batches))
    report = {
        "world_size": trainer.accelerator.num_processes,
        "steps": trainer.state.global_step,
        "tasks": trainer.seen_tasks,
        "indices": indices,
        "eval_sizes": {task: len(tags) for task, tags in predicted.items()},
        "predictions_match_single_process": bool(match),
        "metrics": metrics,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out_dir / f"weights{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
