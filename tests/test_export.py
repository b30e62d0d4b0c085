"""`export_task` and `python -m mtl_hf.export`: one task as a plain transformers model (token classification,
question answering, or sequence classification for the native head), loaded where mtl_hf cannot be imported and without `trust_remote_code`, with the multi-task
model's logits for that task."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers

import mtl_hf
from mtl_hf import MultiTaskConfig, MultiTaskModel, TaskSpec, export_task
from mtl_hf.export import ExportError, main
from mtl_hf.modeling_multitask import NATIVE_CLASSIFIERS, TokenClassificationHead
from tests.conftest import ENCODER_FAMILIES, tiny_encoder_config
from tests.trainer_fixtures import MOOD, NER, SAME, TOPIC, TOPIC_SET, WHERE

NER_TEXTS = ["john lives in paris", "mary visited the old market in london today"]  # different lengths: padded
QUESTIONS = ["where does john live ?", "where does mary live ?"]
CONTEXTS = ["the team said john lives in rome today .", "mary lives in london ."]
PAIRS = ["john lives in rome", "the market is old"]
ENTITY = "B-LOC"  # the exported NER head is biased towards it, so that the pipeline's output is known
ATOL = 1e-5
# The sequence tasks with the architecture's own classifier: single texts, pairs, regression, multilabel.
NATIVE = tuple(dataclasses.replace(spec, classifier="native") for spec in (TOPIC, SAME, MOOD, TOPIC_SET))
AUTO_CLASSES = {"token": "AutoModelForTokenClassification", "span": "AutoModelForQuestionAnswering",
                "sequence": "AutoModelForSequenceClassification"}
PROBLEM_TYPES = {"classification": "single_label_classification", "regression": "regression",
                 "multilabel": "multi_label_classification"}


def tokenizer_for(family: str, bert_dir: Path, roberta_dir: Path) -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(roberta_dir if family == "roberta" else bert_dir)


def make_model(family: str, tokenizer: transformers.PreTrainedTokenizerBase,
               specs: tuple[TaskSpec, ...] = (NER, WHERE, TOPIC)) -> MultiTaskModel:
    """A tiny multi-task model of `family`, left in training mode (dropout on), as a model is after `train()`."""
    torch.manual_seed(0)
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config(family, len(tokenizer)), tasks=list(specs)))
    if NER in specs:
        with torch.no_grad():
            # Random weights give logits of about +-0.1 per token: this bias decides every token, the rest varies.
            model.heads[NER.name].classifier.bias[NER.labels.index(ENTITY)] += 4.0
    return model.train()


def task_inputs(spec: TaskSpec) -> tuple[list[str], list[str] | None]:
    """The texts (and second texts) each task is run on."""
    if spec.type == "extractive_qa":
        return QUESTIONS, CONTEXTS
    return NER_TEXTS, (PAIRS if spec.takes_pairs else None)


# Runs where `import mtl_hf` fails, loading each export with transformers' own auto classes only (no
# `trust_remote_code`), tokenizing with the exported tokenizer, and running transformers' token- or
# text-classification pipeline on each export that has one. Transformers 5 has no "question-answering" pipeline any
# more (it is not in `transformers.pipelines.SUPPORTED_TASKS`), so a QA export runs through its pipeline only where
# one exists.
PLAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["mtl_hf"] = None  # an editable install would still be found: make `import mtl_hf` impossible
    try:
        import mtl_hf  # noqa: F401
        raise SystemExit("mtl_hf is importable")
    except ImportError:
        pass
    import torch, transformers
    from transformers.pipelines import SUPPORTED_TASKS
    jobs = json.loads(open(sys.argv[1]).read())
    results = {}
    for job in jobs:
        directory, texts, pairs = job["directory"], job["texts"], job["pairs"]
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        model = getattr(transformers, job["auto"]).from_pretrained(directory).eval()
        inputs = tokenizer(texts, pairs, padding=True, return_tensors="pt")
        with torch.no_grad():
            output = model(**inputs)
        served = None
        if job["auto"] == "AutoModelForQuestionAnswering":
            logits = torch.stack([output.start_logits, output.end_logits], dim=-1)
            if "question-answering" in SUPPORTED_TASKS:
                pipe = transformers.pipeline("question-answering", model=directory)
                served = [pipe(question=q, context=c) for q, c in zip(texts, pairs)]
        elif job["auto"] == "AutoModelForTokenClassification":
            logits = output.logits
            pipe = transformers.pipeline("token-classification", model=directory)
            served = [[{k: entity[k] for k in ("entity", "word")} for entity in pipe(text)] for text in texts]
        else:
            logits = output.logits
            pipe = transformers.pipeline("text-classification", model=directory, top_k=None)
            served = pipe([text if pairs is None else {"text": text, "text_pair": pairs[i]}
                           for i, text in enumerate(texts)])  # a list: one list of {label, score} per input
        results[job["key"]] = {
            "logits": logits, "input_ids": inputs["input_ids"], "served": served,
            "class": f"{type(model).__module__}.{type(model).__name__}", "id2label": model.config.id2label,
            "problem_type": model.config.problem_type,
        }
    torch.save(results, sys.argv[2])
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, roberta_tokenizer_dir: Path) -> dict:
    """Every task of a model of every family exported, the exports run in a clean interpreter: `{"expected":
    {(family, task): (logits, inputs)}, "plain": {"family/task": results}, "root": folder, "training": {family:
    mode}}`."""
    root = tmp_path_factory.mktemp("export")
    expected, jobs, training = {}, [], {}
    specs = (NER, WHERE, *NATIVE)
    for family in ENCODER_FAMILIES:
        tokenizer = tokenizer_for(family, tokenizer_dir, roberta_tokenizer_dir)
        model = make_model(family, tokenizer, specs)
        for spec in specs:
            directory = export_task(model, spec.name, root / family / spec.name, tokenizer=tokenizer)
            assert directory == root / family / spec.name
            texts, pairs = task_inputs(spec)
            jobs.append({"key": f"{family}/{spec.name}", "auto": AUTO_CLASSES[spec.info.head],
                         "directory": str(directory), "texts": texts, "pairs": pairs})
        training[family] = model.training
        model.eval()
        with torch.no_grad():
            for spec in specs:
                inputs = dict(tokenizer(*task_inputs(spec), padding=True, return_tensors="pt"))
                expected[(family, spec.name)] = (model(**inputs, task=spec.name).logits, inputs)
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "plain.py").write_text(PLAIN_SCRIPT)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf_home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-I", str(root / "plain.py"), str(root / "jobs.json"), str(root / "plain.pt")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"expected": expected, "plain": torch.load(root / "plain.pt"), "root": root, "training": training}


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_ner_export_is_the_architectures_token_classifier_with_the_same_logits(exported: dict, family: str) -> None:
    plain = exported["plain"][f"{family}/ner"]
    logits, inputs = exported["expected"][(family, "ner")]
    assert plain["class"].startswith("transformers.models.") and plain["class"].endswith("ForTokenClassification")
    assert torch.equal(plain["input_ids"], inputs["input_ids"])  # the exported tokenizer is the model's
    assert inputs["attention_mask"].min() == 0  # a padded batch: token logits do not depend on padding
    torch.testing.assert_close(plain["logits"], logits, rtol=0, atol=ATOL)
    assert plain["id2label"] == NER.id2label
    config = json.loads((exported["root"] / family / "ner" / "config.json").read_text())
    assert config["label2id"] == NER.label2id and "auto_map" not in config
    assert config["architectures"] == [plain["class"].rsplit(".", 1)[1]]
    assert exported["training"][family]  # the export ran the model in eval mode and put training mode back


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_qa_export_is_the_architectures_qa_model_with_the_same_logits(exported: dict, family: str) -> None:
    plain = exported["plain"][f"{family}/where"]
    logits, inputs = exported["expected"][(family, "where")]
    assert plain["class"].startswith("transformers.models.") and plain["class"].endswith("ForQuestionAnswering")
    assert torch.equal(plain["input_ids"], inputs["input_ids"])
    kept = inputs["attention_mask"].bool()
    assert not kept.all()
    # mtl_hf's span head puts padding at the lowest value, transformers' QA models do not: compare the input's tokens.
    torch.testing.assert_close(plain["logits"][kept], logits[kept], rtol=0, atol=ATOL)
    assert (logits[~kept] == torch.finfo(logits.dtype).min).all()


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_transformers_pipeline_serves_the_ner_export(exported: dict, family: str) -> None:
    served = exported["plain"][f"{family}/ner"]["served"]
    assert len(served) == len(NER_TEXTS)
    for text, entities in zip(NER_TEXTS, served):
        assert entities and {entity["entity"] for entity in entities} == {ENTITY}, entities  # labels by name
        words = "".join(entity["word"].replace("##", "").replace("Ġ", "").strip() for entity in entities)
        assert words == text.replace(" ", ""), entities


def test_exports_are_safetensors_with_the_tokenizer_and_leave_nothing_else(exported: dict) -> None:
    for family in ENCODER_FAMILIES:
        names = {path.name for path in (exported["root"] / family).iterdir()}
        assert names == {spec.name for spec in (NER, WHERE, *NATIVE)}, names  # no staging folders left behind
        for task in names:
            files = {path.name for path in (exported["root"] / family / task).iterdir()}
            assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= files, files
            assert not [name for name in files if name.endswith((".bin", ".py"))], files


@pytest.mark.parametrize("spec", NATIVE, ids=lambda spec: spec.name)
@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_native_sequence_export_is_the_architectures_sequence_classifier(exported: dict, family: str,
                                                                         spec: TaskSpec) -> None:
    plain = exported["plain"][f"{family}/{spec.name}"]
    logits, inputs = exported["expected"][(family, spec.name)]
    assert plain["class"].startswith("transformers.models.")
    assert plain["class"].endswith("ForSequenceClassification")
    assert torch.equal(plain["input_ids"], inputs["input_ids"]) and inputs["attention_mask"].min() == 0
    torch.testing.assert_close(plain["logits"], logits, rtol=0, atol=ATOL)
    assert plain["problem_type"] == PROBLEM_TYPES[spec.type]
    config = json.loads((exported["root"] / family / spec.name / "config.json").read_text())
    assert config["problem_type"] == PROBLEM_TYPES[spec.type] and "auto_map" not in config
    if spec.info.has_labels:
        assert plain["id2label"] == spec.id2label and config["label2id"] == spec.label2id
    else:
        assert len(config["id2label"]) == 1  # regression: one output, as transformers' `num_labels=1`


@pytest.mark.parametrize("spec", NATIVE, ids=lambda spec: spec.name)
def test_transformers_text_classification_pipeline_serves_the_native_export(exported: dict, spec: TaskSpec) -> None:
    """transformers' pipeline reads the exported `problem_type`: softmax for classification (pairs too), one
    sigmoid per label for multilabel, the raw value for regression."""
    for family in ENCODER_FAMILIES:
        served = exported["plain"][f"{family}/{spec.name}"]["served"]
        logits, _ = exported["expected"][(family, spec.name)]
        for row, results in enumerate(served):
            scores = {result["label"]: result["score"] for result in results}
            if spec.type == "classification":
                expected = dict(zip(spec.labels, logits[row].softmax(-1).tolist()))
            elif spec.type == "multilabel":
                expected = dict(zip(spec.labels, logits[row].sigmoid().tolist()))
            else:
                expected = {"LABEL_0": logits[row, 0].item()}
            assert scores == pytest.approx(expected, abs=1e-5), (family, row)


@pytest.mark.parametrize("spec", [TOPIC, SAME, MOOD, TOPIC_SET], ids=lambda spec: spec.name)
def test_linear_sequence_heads_are_refused_and_nothing_is_written(spec: TaskSpec, bert_tokenizer,
                                                                  tmp_path: Path) -> None:
    model = make_model("bert", bert_tokenizer, specs=(NER, spec))
    with pytest.raises(ValueError, match=rf"Task '{spec.name}' \({spec.type}\) cannot be exported exactly: it has "
                                         r"mtl_hf's linear head .* Train it with `classifier: native`"):
        export_task(model, spec.name, tmp_path / "out", tokenizer=bert_tokenizer)
    assert list(tmp_path.iterdir()) == []


def test_native_classifier_is_known_for_the_tested_families_only() -> None:
    """An architecture without a recipe is refused when the model is built, naming the task and the known ones."""
    assert set(NATIVE_CLASSIFIERS) == set(ENCODER_FAMILIES)
    config = transformers.AutoConfig.for_model("albert", vocab_size=50, hidden_size=32, embedding_size=16,
                                               num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    with pytest.raises(ValueError, match="Task 'topic': field 'classifier' is 'native', but mtl_hf knows no native "
                                         "classifier for the encoder's architecture \\(albert\\); known: bert, "
                                         "roberta, distilbert, electra, deberta-v2. Use classifier: linear"):
        MultiTaskModel(MultiTaskConfig(encoder=config, tasks=[NATIVE[0]]))


def test_unknown_task_lists_the_known_ones(bert_tokenizer, tmp_path: Path) -> None:
    model = make_model("bert", bert_tokenizer)
    with pytest.raises(ValueError, match="Unknown task 'nope'; this model knows: ner, where, topic"):
        export_task(model, "nope", tmp_path / "out", tokenizer=bert_tokenizer)
    assert list(tmp_path.iterdir()) == []


class DoubledHead(TokenClassificationHead):
    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return 2 * super().forward(hidden, attention_mask)


def test_a_head_without_an_exact_counterpart_is_refused(bert_tokenizer, tmp_path: Path) -> None:
    """Matching weight names are not enough: the export runs both models and refuses different logits; a head with
    more than the one linear layer is refused from its weights."""
    model = make_model("bert", bert_tokenizer)
    doubled = DoubledHead(32, len(NER.labels), 0.0)
    doubled.load_state_dict(model.heads["ner"].state_dict())
    model.heads["ner"] = doubled
    with pytest.raises(ExportError, match=r"'ner' \(ner\) cannot be exported exactly as BertForTokenClassification: "
                                          r"its logits differ"):
        export_task(model, "ner", tmp_path / "out", tokenizer=bert_tokenizer)
    model.heads["ner"] = torch.nn.ModuleDict({"dense": torch.nn.Linear(32, 32), "classifier": doubled.classifier})
    with pytest.raises(ExportError, match="its head has the parameters classifier.bias, classifier.weight, dense.bias"):
        export_task(model, "ner", tmp_path / "out", tokenizer=bert_tokenizer)
    assert list(tmp_path.iterdir()) == []


def test_occupied_folder_is_refused_unless_overwrite(bert_tokenizer, tmp_path: Path) -> None:
    model = make_model("bert", bert_tokenizer)
    out = tmp_path / "out"
    out.mkdir()
    export_task(model, "ner", out, tokenizer=bert_tokenizer)  # an empty folder is fine
    (out / "stale.txt").write_text("from before")
    with pytest.raises(ExportError, match="exists and is not an empty folder"):
        export_task(model, "where", out, tokenizer=bert_tokenizer)
    assert "id2label" in (out / "config.json").read_text() and (out / "stale.txt").exists()
    export_task(model, "where", out, tokenizer=bert_tokenizer, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_tokenizer_defaults_to_the_models_folder_and_must_fit(bert_tokenizer, roberta_tokenizer_dir: Path,
                                                              tmp_path: Path) -> None:
    model = make_model("bert", bert_tokenizer)
    with pytest.raises(ExportError, match="Pass `tokenizer=`"):
        export_task(model, "ner", tmp_path / "out", tokenizer=None)
    with pytest.raises(ExportError, match="more than the encoder's .* embeddings: it is not this model's tokenizer"):
        export_task(model, "ner", tmp_path / "out", tokenizer=roberta_tokenizer_dir)
    model.save_pretrained(tmp_path / "model")
    bert_tokenizer.save_pretrained(tmp_path / "model")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "model")
    export_task(loaded, "ner", tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer_config.json").exists()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    folder = tmp_path_factory.mktemp("cli") / "model"
    make_model("bert", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_command_exports_a_task(saved_model: Path, tmp_path: Path, capsys) -> None:
    assert main([str(saved_model), "ner", str(tmp_path / "out")]) == 0
    assert "Exported task 'ner' (ner) as bert AutoModelForTokenClassification to " in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]["3"] == "B-LOC"


@pytest.mark.parametrize("args, message", [
    (["{model}", "topic", "{out}"], r"Task 'topic' \(classification\) cannot be exported exactly: it has mtl_hf's "
                                    "linear head"),
    (["{model}", "nope", "{out}"], "Unknown task 'nope'; this model knows: ner, where, topic"),
    (["{tokenizer}", "ner", "{out}"], "cannot read a model config from"),
    (["{out}", "ner", "{out}"], "no model at '.*/out': there is no such folder"),
    (["{model}", "ner", "{out}", "--tokenizer", "{out}"], "No tokenizer at '.*/out': there is no such folder"),
    (["{model}", "ner", "{out}", "--tokenizer", "{tmp}"], "No tokenizer could be loaded from '.*'"),
    (["{model}", "ner"], "the following arguments are required: OUTPUT_DIR"),
])
def test_command_refuses_bad_input_on_one_line_with_status_2(saved_model: Path, tokenizer_dir: Path,
                                                             tmp_path: Path, capsys, args: list[str],
                                                             message: str) -> None:
    values = {"model": saved_model, "out": tmp_path / "out", "tokenizer": tokenizer_dir, "tmp": tmp_path}
    try:
        status = main([arg.format(**values) for arg in args])
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m mtl_hf.export: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_python_dash_m_runs_the_command(saved_model: Path, tmp_path: Path) -> None:
    """The module runs as a command (`python -m`), its refusal an exit status (exporting itself is tested above)."""
    result = subprocess.run([sys.executable, "-m", "mtl_hf.export", str(saved_model), "topic", str(tmp_path / "y")],
                            capture_output=True, text=True, timeout=120, check=False,
                            cwd=Path(mtl_hf.__file__).parents[1])
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "Train it with `classifier: native` in the task file" in result.stderr
    assert not (tmp_path / "y").exists()


def test_export_task_is_public() -> None:
    assert "export_task" in mtl_hf.__all__ and mtl_hf.export_task is export_task


def test_the_model_exports_its_own_task(bert_tokenizer, tmp_path: Path) -> None:
    """`model.export_task(name, directory)` is the function's export."""
    model = make_model("bert", bert_tokenizer)
    out = model.export_task("ner", tmp_path / "ner", tokenizer=bert_tokenizer)
    assert out == tmp_path / "ner"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForTokenClassification"]


def test_a_model_trained_in_mixed_precision_exports_and_the_random_stream_is_untouched(bert_tokenizer,
                                                                                      tmp_path: Path) -> None:
    """accelerate leaves an autocast wrapper on the instance `forward` of a model trained with --bf16: the export
    compares against the model's own float32 computation. Building the task model draws no random numbers that a
    training run would miss."""
    model = make_model("bert", bert_tokenizer, specs=(NER, *NATIVE))
    model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)  # as accelerate's mixed precision
    state = torch.get_rng_state()
    for task in ("ner", "topic"):
        export_task(model, task, tmp_path / task, tokenizer=bert_tokenizer)
    assert torch.equal(torch.get_rng_state(), state)
