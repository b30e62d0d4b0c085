"""bench/common.py's pieces of the QA suite (issue 12) that need no training: the run_qa.py recipe written out there
(train features with CLS labels for windows without the answer, validation features, utils_qa.py's post-processing),
SQuAD scoring, the target on seed means, and the docs section and speed subsection (rendered from synthetic results
and spliced into a page)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # as quality.py imports it: a sibling module
import common  # noqa: E402

MACHINE = {"cpu": "test CPU", "cores": 2, "memory_gib": 8, "torch_threads": 2, "python": "3", "torch": "2",
           "transformers": "5", "datasets": "4", "accelerate": "1", "date": "today"}


# ---- run_qa.py's post-processing -----------------------------------------------------------------------------------


def _logits(length: int, **peaks: float) -> np.ndarray:
    """A row of logits, -10 everywhere but at the given positions (``p3=5.0`` puts 5 at position 3)."""
    row = np.full(length, -10.0, dtype=np.float32)
    for key, value in peaks.items():
        row[int(key[1:])] = value
    return row


def test_postprocess_picks_the_best_valid_span_over_all_windows():
    context = "alpha beta gamma delta epsilon zeta"
    # Character spans of the six words; positions 0-1 of each window are CLS and a question token, the last [SEP].
    words = [(0, 5), (6, 10), (11, 16), (17, 22), (23, 30), (31, 35)]
    examples = {"id": ["q1"], "context": [context]}
    # Window 0 holds words 0-3 at positions 2-5, window 1 words 2-5 at positions 2-5.
    offsets0 = [None, None, *words[0:4], None]
    offsets1 = [None, None, *words[2:6], None]
    features = {"example_id": ["q1", "q1"], "offset_mapping": [offsets0, offsets1]}
    start0 = _logits(7, p0=50.0, p1=40.0, p4=3.0, p5=9.0)  # the highest starts are outside the context (CLS,
    end0 = _logits(7, p0=50.0, p6=40.0, p3=9.0, p4=2.0)    # question, [SEP]); (5, 3) ends before it starts
    start1 = _logits(7, p2=4.0, p3=1.0)
    end1 = _logits(7, p5=4.5, p4=1.0)
    spans = common.run_qa_best_spans(examples, features, ([start0, start1], [end0, end1]), n_best_size=20,
                                     max_answer_length=30)
    # Valid candidates: window 0 (4, 4) 3 + 2 = 5; window 1 (2, 5) 4 + 4.5 = 8.5 -> "gamma delta epsilon zeta".
    assert spans["q1"] == {"text": "gamma delta epsilon zeta", "start": 11, "end": 35, "score": pytest.approx(8.5)}
    assert common.postprocess_qa_predictions(examples, features, ([start0, start1], [end0, end1])) == {
        "q1": "gamma delta epsilon zeta"}
    # At most 2 tokens: window 1's (2, 5) is too long; the best left is window 0's (4, 4), 5, over window 1's (3, 4),
    # 1 + 1.
    short = common.run_qa_best_spans(examples, features, ([start0, start1], [end0, end1]), max_answer_length=2)
    assert short["q1"]["text"] == "gamma" and (short["q1"]["start"], short["q1"]["end"]) == (11, 16)


def test_postprocess_keeps_only_the_n_best_starts_and_ends_and_ignores_padding():
    context = "one two three"
    examples = {"id": ["a"], "context": [context]}
    features = {"example_id": ["a"], "offset_mapping": [[None, (0, 3), (4, 7), (8, 13), None]]}
    # Padded to 7 positions (as Trainer.predict pads batches): positions 5-6 lie beyond the window.
    start = np.array([0.0, 1.0, 2.0, 0.5, 0.0, 99.0, 99.0])
    end = np.array([0.0, 0.0, 0.5, 3.0, 0.0, 99.0, 99.0])
    spans = common.run_qa_best_spans(examples, features, ([start], [end]), n_best_size=20)
    assert spans["a"]["text"] == "two three" and spans["a"]["score"] == pytest.approx(5.0)
    # n_best_size 3: starts 5, 6, 2 and ends 5, 6, 3 only -> (2, 3) is still found.
    assert common.run_qa_best_spans(examples, features, ([start], [end]), n_best_size=3)["a"]["text"] == "two three"
    # n_best_size 2: only padded positions are among the best -> run_qa.py's placeholder answer.
    assert common.run_qa_best_spans(examples, features, ([start], [end]), n_best_size=2)["a"] == {
        "text": "empty", "start": 0, "end": 0, "score": 0.0}


# ---- run_qa.py's features ------------------------------------------------------------------------------------------

CONTEXT = ("the company said the market rose today . the team won the cup in paris . "
           "john smith played for the team . the bank bought shares of acme corp in london .")
QUESTION = "who bought shares"
ANSWER = "the bank"


@pytest.fixture()
def qa_tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_prepare_train_features_labels_cls_where_the_answer_is_not_in_the_window(qa_tokenizer):
    start_char = CONTEXT.index(ANSWER)
    examples = {"id": ["x"], "question": ["   " + QUESTION], "context": [CONTEXT],
                "answers": [{"text": [ANSWER], "answer_start": [start_char]}]}
    fn = common.run_qa_prepare_train_features(qa_tokenizer, max_seq_length=20, doc_stride=4)
    features = fn(examples)
    windows = len(features["input_ids"])
    assert windows >= 3 and "offset_mapping" not in features and "overflow_to_sample_mapping" not in features
    cls = qa_tokenizer.cls_token_id
    labelled = []
    for i in range(windows):
        ids = features["input_ids"][i]
        assert len(ids) <= 20 and ids[0] == cls
        # The question comes first, with its leading spaces stripped.
        assert qa_tokenizer.decode(ids[1:ids.index(qa_tokenizer.sep_token_id)]) == QUESTION
        start, end = features["start_positions"][i], features["end_positions"][i]
        if (start, end) == (0, 0):
            continue
        labelled.append(i)
        assert qa_tokenizer.decode(ids[start:end + 1]) == ANSWER
    # The first window cannot hold the answer (at the end of the context): CLS. Some window holds all of it.
    assert features["start_positions"][0] == features["end_positions"][0] == 0
    assert labelled


def test_prepare_train_features_cls_for_an_answer_cut_by_the_window(qa_tokenizer):
    # An answer of more tokens than a window has room for is in no window whole: every window is labelled CLS.
    answer = CONTEXT[:60]
    examples = {"id": ["x"], "question": [QUESTION], "context": [CONTEXT],
                "answers": [{"text": [answer], "answer_start": [0]}]}
    features = common.run_qa_prepare_train_features(qa_tokenizer, max_seq_length=20, doc_stride=4)(examples)
    assert set(features["start_positions"]) == {0} and set(features["end_positions"]) == {0}


def test_prepare_validation_features_map_windows_to_rows_and_hide_non_context_offsets(qa_tokenizer):
    examples = {"id": ["a", "b"], "question": [QUESTION, "where"], "context": [CONTEXT, "in paris ."]}
    features = common.run_qa_prepare_validation_features(qa_tokenizer, max_seq_length=20, doc_stride=4)(examples)
    assert features["example_id"][0] == "a" and features["example_id"][-1] == "b"
    assert features["example_id"].count("b") == 1 and features["example_id"].count("a") >= 3
    for i, offsets in enumerate(features["offset_mapping"]):
        sequence_ids = features.sequence_ids(i)
        context = CONTEXT if features["example_id"][i] == "a" else "in paris ."
        for offset, sequence in zip(offsets, sequence_ids):
            if sequence == 1:
                assert offset is not None and context[offset[0]:offset[1]].strip()
            else:
                assert offset is None


def test_run_qa_answer_reads_spans_from_a_model(qa_tokenizer):
    """run_qa_answer (speed.py's baseline): features, batches, forward, post-processing, end to end on a stub model
    whose start and end logits peak at the tokens of the context "paris"."""
    import torch
    from transformers.modeling_outputs import QuestionAnsweringModelOutput

    paris = qa_tokenizer.convert_tokens_to_ids("paris")

    class Stub(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            hit = (input_ids == paris) & (token_type_ids == 1)
            logits = hit.float() * 10
            return QuestionAnsweringModelOutput(start_logits=logits, end_logits=logits)

    examples = {"id": ["a", "b"], "question": ["where", "where paris"],
                "context": [CONTEXT, "john lives in paris today ."]}
    with torch.inference_mode():
        spans = common.run_qa_answer(Stub(), qa_tokenizer, examples, max_seq_length=20, doc_stride=4, batch_size=3)
    assert spans["a"]["text"] == "paris" and spans["a"]["start"] == CONTEXT.index("paris")
    assert spans["b"] == {"text": "paris", "start": 14, "end": 19, "score": pytest.approx(20.0)}


def test_squad_scores():
    examples = {"id": ["1", "2"], "answers": [{"text": ["The Bank", "bank"], "answer_start": [0, 4]},
                                              {"text": ["Paris"], "answer_start": [3]}]}
    assert common.squad_scores(["the bank.", "in Paris France"], examples) == {
        "exact_match": 50.0, "f1": pytest.approx(100 * (1 + 0.5) / 2, abs=0.01)}


# ---- the QA suite's target and docs section ------------------------------------------------------------------------


def _run(seed: int, f1: float, with_others: bool) -> dict:
    scores = {"squad": {"exact_match": f1 - 10, "f1": f1}}
    if with_others:
        scores.update(ner={"f1": 60.0 + seed, "precision": 58.0, "recall": 62.0},
                      topic={"accuracy": 80.0 - seed, "macro_f1": 78.0})
    return {"models": 1, "parameters": 22_700_000, "scores": scores, "train_seconds": 600.0 + seed,
            "loop_seconds": 590.0, "train_examples": 6000, "train_steps": 380,
            "trainer_metrics": {"test_squad_f1": f1 / 100, "test_squad_exact_match": (f1 - 10) / 100}}


def _qa_results(mtl_f1: list[float], single_f1: list[float]) -> dict:
    runs = [{"seed": seed, "order": ["mtl", "single"] if seed % 2 == 0 else ["single", "mtl"],
             "mtl": _run(seed, a, True), "single": _run(seed, b, False)}
            for seed, (a, b) in enumerate(zip(mtl_f1, single_f1))]
    config = dict(common.HPARAMS, per_device_train_batch_size=16, learning_rate=1e-4, num_train_epochs=2,
                  max_train_samples=1000, max_test_samples=1000, qa_train_samples=1000, qa_test_samples=500,
                  qa_max_seq_length=256, **common.QA_SETTINGS, seeds=list(range(len(runs))))
    config.pop("seed")
    return {"suite": "qa", "machine": MACHINE, "config": config, "quick": False, "runs": runs,
            "train_rows": {"topic": 1000, "ner": 1000, "squad": 1000},
            "test_rows": {"topic": 444, "ner": 1000, "squad": 500},
            "qa_windows": {"train": 1012, "test": 507}, "total_seconds": 4000.0}


def test_qa_target_within_one_std():
    # (b): 50, 52, 54 -> mean 52, std 2. (a) at mean 50.5 is within one std; at 49.5 it is not.
    within = common.evaluate_qa_target(_qa_results([50.0, 50.5, 51.0], [50.0, 52.0, 54.0]))
    assert within["met"] and within["difference"] == pytest.approx(-1.5) and within["seeds"] == 3
    assert within["noise"] == "inside the noise"
    missed = common.evaluate_qa_target(_qa_results([49.4, 49.5, 49.6], [50.0, 52.0, 54.0]))
    assert not missed["met"]
    better = common.evaluate_qa_target(_qa_results([60.0, 61.0, 62.0], [50.0, 52.0, 54.0]))
    assert better["met"] and better["noise"] == "outside the noise"
    one_seed = common.evaluate_qa_target(_qa_results([50.0], [50.0]))
    assert one_seed["met"] and one_seed["noise"] == "n/a (one seed)"
    unfinished = _qa_results([50.0], [50.0])
    del unfinished["runs"][0]["single"]
    assert common.evaluate_qa_target(unfinished) is None
    assert "(no seed has finished both contenders yet)" in common.render_qa(unfinished)


def test_qa_section_renders_the_scores():
    text = "\n".join(common.render_qa(_qa_results([49.4, 49.5, 49.6], [50.0, 52.0, 54.0])))
    assert text.startswith(common.QA_HEADING + "\n")
    assert "python bench/quality.py --suite qa" in text and "(67 min on the machine below)" in text
    assert "| 49.50 ± 0.10 vs 52.00 ± 2.00 (-2.50; 3 seeds) | **missed** |" in text
    assert "| 39.50 ± 0.10 | **49.50 ± 0.10** | 1 | 22.7 M | 10.0 min |" in text  # (a): EM, F1, ..., time per seed
    assert "| CoNLL-2003 NER | **f1** | 61.00 ± 1.00 |" in text
    assert "| BBC topics | **accuracy** | 79.00 ± 1.00 |" in text
    assert "| 1 | (b) | 39.50 / 49.50 | 42.00 / 52.00 | 61.00 | 79.00 | 601 s / 601 s |" in text
    assert "Miss: (a) is 2.50 F1 points below (b), 1.2 standard deviations" in text
    assert "`test_squad_f1` for (a), mean over seeds, is 49.50" in text
    assert "1000 train and 500 test questions" in text and "(1012 / 507 windows of at most 256 tokens in (a))" in text


PAGE = ("# Benchmarks\n\n## Quality\n\nold quality\n\n" + common.FIVE_HEADING + "\n\nold five\n\n### Targets (3 seeds)"
        "\n\nfive targets\n\n## Speed\n\nintro\n\n### Training throughput\n\nold training\n\n### Inference\n\n"
        "```bash\n# not a heading\n```\n\nold inference\n\n### Data preparation\n\nold data prep\n\n"
        "## Method notes\n\n- x\n")


def test_qa_section_is_spliced_after_the_five_task_section(tmp_path):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / common.QUALITY_QA_JSON).write_text(json.dumps(_qa_results([50.0, 50.5, 51.0],
                                                                            [50.0, 52.0, 54.0])))
    page = tmp_path / "benchmarks.md"
    png = tmp_path / "benchmarks.png"
    page.write_text(PAGE)
    png.write_bytes(b"old plot")
    common.render_docs(results_dir, page, png)  # no two-task results here: only the QA section is written
    text = page.read_text()
    assert (text.index("five targets") < text.index(common.QA_HEADING) < text.index("## Speed")
            < text.index("old training"))
    for old in ("old quality", "old five", "old training", "old inference", "old data prep", "- x"):
        assert old in text
    assert png.read_bytes() == b"old plot" and "**met**" in text
    common.render_docs(results_dir, page, png)  # a rerun replaces the section, it does not add a second one
    assert page.read_text() == text
    common.splice_qa_section(page, _qa_results([40.0, 40.0, 40.0], [50.0, 52.0, 54.0]))
    again = page.read_text()
    assert again.count(common.QA_HEADING) == 1 and "**missed**" in again and "old inference" in again


def test_qa_section_goes_before_method_notes_without_a_speed_section(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Quality\n\nold quality\n\n## Method notes\n\n- x\n")
    common.splice_qa_section(page, _qa_results([50.0], [50.0]))
    text = page.read_text()
    assert text.index("old quality") < text.index(common.QA_HEADING) < text.index("## Method notes")


def _speed_qa(ratio: float = 1.25) -> dict:
    rates = {"median": 50.0, "min": 48.0, "max": 52.0, "rounds": [48.0, 50.0, 52.0]}
    base = {"median": 50.0 / ratio, "min": 38.0, "max": 42.0, "rounds": [38.0, 40.0, 42.0]}
    return {"machine": MACHINE, "quick": False, "total_seconds": 300.0, "questions": 300, "windows": 310,
            "config": {"batch_size": 32, "max_length": 256, "doc_stride": 64, "max_answer_length": 30,
                       "n_best_size": 20, "rounds": 3, "warmup_rounds": 1, "num_threads": 2},
            "logits_max_abs_diff": 2e-6, "baseline": "run_qa", "baseline_label": "run_qa.py's prediction path",
            "baseline_note": "Why this baseline.",
            "contenders": {"mtl_pipeline": {"answers_per_s": rates}, "baseline": {"answers_per_s": base}},
            "ratio": ratio, "per_round_ratios": [1.2, 1.25, 1.3], "first_per_round": ["mtl_pipeline", "baseline",
                                                                                      "mtl_pipeline"],
            "agreement": {"same_span": 0.97, "same_text": 0.98, "questions": 300}}


def test_speed_qa_subsection_is_spliced_after_inference(tmp_path):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / common.SPEED_QA_JSON).write_text(json.dumps(_speed_qa()))
    page = tmp_path / "benchmarks.md"
    png = tmp_path / "benchmarks.png"
    page.write_text(PAGE)
    png.write_bytes(b"old plot")
    common.render_docs(results_dir, page, png)
    text = page.read_text()
    assert (text.index("old inference") < text.index(common.SPEED_QA_HEADING) < text.index("### Data preparation")
            < text.index("## Method notes"))
    assert "old quality" in text and "old five" in text and "old data prep" in text and png.read_bytes() == b"old plot"
    assert "python bench/speed.py --qa_pipeline" in text
    assert "| **50.0** [48.0-52.0] | **1.25x** |" in text
    assert "| run_qa.py's prediction path | **40.0** [38.0-42.0] | 1 |" in text
    assert "1.25x, **met**" in text and "97.0% of the questions" in text and "Why this baseline." in text
    common.render_docs(results_dir, page, png)
    assert page.read_text() == text
    common.splice_speed_qa_section(page, _speed_qa(0.8))
    assert "0.80x, **missed**" in page.read_text() and page.read_text().count(common.SPEED_QA_HEADING) == 1


def test_speed_qa_subsection_brings_its_speed_section(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Quality\n\nold quality\n\n## Method notes\n\n- x\n")
    common.splice_speed_qa_section(page, _speed_qa())
    text = page.read_text()
    assert text.index("old quality") < text.index("## Speed\n\n" + common.SPEED_QA_HEADING) < text.index(
        "## Method notes")
