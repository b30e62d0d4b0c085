"""`transformers.pipeline("multitask", model=...)` after `import mtl_hf` gives what `MultiTaskPipeline` gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

import mtl_hf
from mtl_hf import MultiTaskConfig, MultiTaskModel, MultiTaskPipeline, TaskSpec
from mtl_hf.hf_pipeline import MultiTaskTextPipeline
from tests.conftest import tiny_encoder_config

TOPIC = TaskSpec(name="topic", type="classification", labels=["business", "sport", "tech"])
NER = TaskSpec(name="ner", type="ner", labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], tag_scheme="IOB2")
TOPICS = TaskSpec(name="topics", type="multilabel", labels=["business", "sport", "tech"])
TEXTS = ["Peter went to London to buy shares.", "the match was won", "", "new phones and chips " * 20]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("hf_pipeline") / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", tokenizer.vocab_size), tasks=[TOPIC, NER, TOPICS])
    MultiTaskModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def close(a, b) -> bool:
    """Equal structure and strings; floats equal up to float32 noise (padding of a differently sized batch)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, float) and a == pytest.approx(b, abs=1e-5)
    return a == b


def test_registered_task_loads_a_multitask_model(model_dir: Path) -> None:
    assert "multitask" in transformers.pipelines.PIPELINE_REGISTRY.get_supported_tasks()
    pipe = transformers.pipeline("multitask", model=str(model_dir))
    assert isinstance(pipe, MultiTaskTextPipeline)
    assert isinstance(pipe.model, MultiTaskModel)
    assert pipe.tokenizer is not None


def test_string_and_list_match_multitask_pipeline(model_dir: Path) -> None:
    reference = MultiTaskPipeline.from_pretrained(str(model_dir))
    pipe = transformers.pipeline("multitask", model=str(model_dir))
    for text in TEXTS:
        assert pipe(text) == reference(text)
    expected = reference(TEXTS)
    assert close(pipe(TEXTS), expected)
    assert close(list(pipe((t for t in TEXTS), batch_size=2)), expected)  # a generator streams results
    batched = transformers.pipeline("multitask", model=str(model_dir), batch_size=2)
    assert close(batched(TEXTS), expected)
    assert close(pipe(TEXTS, batch_size=2), expected)
    assert close(pipe(TEXTS, batch_size=3), expected)  # a last group smaller than batch_size
    assert expected[3]["topic"]["windows"] > 1  # the long text was cut into windows by the inner pipeline


def test_device_cpu_tasks_and_options(model_dir: Path) -> None:
    reference = MultiTaskPipeline.from_pretrained(str(model_dir))
    pipe = transformers.pipeline("multitask", model=str(model_dir), device="cpu")
    assert pipe.device == torch.device("cpu")
    assert next(pipe.model.parameters()).device == torch.device("cpu")
    assert pipe(TEXTS[0], tasks="ner") == reference(TEXTS[0], tasks="ner")
    assert set(pipe(TEXTS[0], tasks=["topic"])) == {"topic"}
    assert close(pipe(TEXTS, tasks=["topics"], all_scores=True, batch_size=2),
                 reference(TEXTS, tasks=["topics"], all_scores=True))
    # call defaults given to pipeline(...)
    preset = transformers.pipeline("multitask", model=str(model_dir), tasks=["topic"])
    assert preset(TEXTS) == reference(TEXTS, tasks=["topic"])
    with pytest.raises(ValueError, match="Unknown task"):
        pipe(TEXTS[0], tasks="nope")
    with pytest.raises(TypeError, match="unknown option"):
        pipe(TEXTS[0], tasks="topic", all_scores=True)


def test_max_length_and_stride_reach_the_inner_pipeline(model_dir: Path) -> None:
    reference = MultiTaskPipeline.from_pretrained(str(model_dir), max_length=16, stride=4)
    pipe = transformers.pipeline("multitask", model=str(model_dir), max_length=16, stride=4)
    assert close(pipe(TEXTS), reference(TEXTS))  # windows grouped differently into passes: float noise only


def test_pipeline_from_loaded_objects(model_dir: Path) -> None:
    model = MultiTaskModel.from_pretrained(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    pipe = transformers.pipeline("multitask", model=model, tokenizer=tokenizer)
    assert pipe(TEXTS[:2]) == MultiTaskPipeline(model, tokenizer)(TEXTS[:2])
    assert mtl_hf.MultiTaskTextPipeline is MultiTaskTextPipeline


def test_mixed_texts_and_pairs_in_groups(tmp_path: Path, tokenizer_dir: Path) -> None:
    same = TaskSpec(name="same", type="classification", labels=["different", "same"], text_pair_column_name="text_b")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(1)
    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", tokenizer.vocab_size), tasks=[TOPIC, same])
    MultiTaskModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reference = MultiTaskPipeline.from_pretrained(str(tmp_path))
    pipe = transformers.pipeline("multitask", model=str(tmp_path))
    inputs = ["the match was won", {"text": "a b", "text_pair": "a c"}, "phones", {"text": "x", "text_pair": "y"}]
    expected = reference(inputs, tasks=["topic", "same"])
    for batch_size in (1, 2, 3):  # groups holding only texts, only pairs, or both
        assert close(pipe(inputs, tasks=["topic", "same"], batch_size=batch_size), expected)
    with pytest.raises(ValueError, match="no input of the request"):
        pipe(["only texts"], tasks=["topic", "same"])


def test_questions_beside_texts_in_groups(tmp_path: Path, tokenizer_dir: Path) -> None:
    """Extractive QA through transformers' pipeline: `{"question", "context"}` inputs (a context longer than one
    window) get the QA task's answer with its character offsets, texts the text tasks', whatever the grouping."""
    where = TaskSpec(name="where", type="extractive_qa", doc_stride=8)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(2)
    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", tokenizer.vocab_size), tasks=[TOPIC, where],
                             max_seq_length=24)
    MultiTaskModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reference = MultiTaskPipeline.from_pretrained(str(tmp_path))
    pipe = transformers.pipeline("multitask", model=str(tmp_path))
    context = "the old team said that john lives in rome and mary lives in paris , far from the sea " * 3
    inputs = [{"question": "where does john live ?", "context": context}, "the match was won",
              {"question": "where does mary live ?", "context": "mary lives in paris ."}]
    expected = reference(inputs)
    assert set(expected[0]) == {"where"} and set(expected[1]) == {"topic"}
    for item, result in zip(inputs[::2], expected[::2]):
        answer = result["where"]
        assert item["context"][answer["start"]:answer["end"]] == answer["answer"]
    for batch_size in (1, 2, 3):
        assert close(pipe(inputs, batch_size=batch_size), expected)
    assert close(pipe(inputs[0]), expected[0])
