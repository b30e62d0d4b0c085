"""A new task type is one module: a `TaskType` subclass registered with its `TaskTypeInfo` trains, evaluates, predicts
and serves through the unchanged model, trainer, data pipeline and pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest
import torch

from mtl_hf import MultiTaskConfig, MultiTaskModel, MultiTaskPipeline, MultiTaskTrainer, MultiTaskTrainingArguments
from mtl_hf import TaskSpec, register_task_type
from mtl_hf.configuration_multitask import TASK_TYPES, TaskTypeInfo
from mtl_hf.data import preprocess_task, resolve_labels
from mtl_hf.task_types import _REGISTRY
from mtl_hf.task_types.regression import RegressionTaskType
from tests.conftest import tiny_encoder_config
from tests.trainer_fixtures import make_tokenizer


class StarRatingTaskType(RegressionTaskType):
    """A rating from 1 to 5 stars: regression whose answers are whole stars within the scale."""

    name = "stars"

    def predictions(self, spec: TaskSpec, outputs: Any, dataset: datasets.Dataset) -> list[int]:
        return [self.stars(value) for value in super().predictions(spec, outputs, dataset)]

    def pipeline_result(self, spec: TaskSpec, scores: torch.Tensor, windows: int, **options: Any) -> dict[str, Any]:
        return {"stars": self.stars(float(scores[0]))}

    @staticmethod
    def stars(value: float) -> int:
        return min(5, max(1, round(value)))


@pytest.fixture
def stars_type():
    register_task_type(StarRatingTaskType, TaskTypeInfo("sequence", "mse", has_labels=False, fields=("pooling",)))
    yield StarRatingTaskType
    del TASK_TYPES["stars"], _REGISTRY["stars"]


def test_a_new_type_is_one_registered_class(stars_type, tmp_path: Path) -> None:
    tokenizer = make_tokenizer(tmp_path / "tok")
    words = ["bad", "good"]
    rows = {"text": [f"the {words[i % 2]} {words[i % 2]} app" for i in range(16)],
            "label": [1 + 4 * (i % 2) for i in range(16)]}
    raw = datasets.DatasetDict(train=datasets.Dataset.from_dict(rows))
    spec = resolve_labels(TaskSpec(name="rating", type="stars"), raw)
    data = preprocess_task(spec, raw, tokenizer, max_seq_length=16)
    assert data["train"]["labels"][:2] == [1.0, 5.0]

    torch.manual_seed(0)
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config("bert", tokenizer.vocab_size), tasks=[spec]))
    args = MultiTaskTrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to=[], learning_rate=1e-2,
                                      per_device_train_batch_size=8, num_train_epochs=30, save_strategy="no",
                                      seed=0, disable_tqdm=True)
    trainer = MultiTaskTrainer(model=model, args=args, processing_class=tokenizer,
                               train_dataset={"rating": data["train"]}, eval_dataset={"rating": data["train"]})
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_rating_pearson"] > 0.9 and metrics["eval_combined_score"] == metrics["eval_rating_pearson"]
    predicted = trainer.predict({"rating": data["train"]}).predictions["rating"]
    assert predicted == rows["label"]  # whole stars, from the type's own `predictions`

    trainer.save_model(str(tmp_path / "model"))
    tokenizer.save_pretrained(tmp_path / "model")
    pipe = MultiTaskPipeline.from_pretrained(str(tmp_path / "model"))
    assert pipe(["the good good app", "the bad bad app"]) == [{"rating": {"stars": 5}}, {"rating": {"stars": 1}}]
