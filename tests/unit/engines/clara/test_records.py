"""Dataset records to stage examples: every shape the stages read, and refusals that name
the record and the field."""

from __future__ import annotations

import pytest

from mendel.datasets.facts import facts, facts_qa, facts_retrieval
from mendel.engines.clara import (
    MEMORY_SLOT,
    PARAPHRASE_PROMPT,
    RecordError,
    instruction_examples,
    qa_examples,
    stage_one_examples,
    stage_two_examples,
)


def test_a_qa_record_gives_one_example_per_question_with_one_slot_per_document():
    record = {"data_type": "qa", "question": ["Who ran?", "Who sang?"],
              "answers": ["Ada", "Bob"], "docs": ["Ada ran.", "Bob sang."]}
    first, second = stage_one_examples([record])
    assert first.documents == second.documents == ("Ada ran.", "Bob sang.")
    assert first.prompt.count(MEMORY_SLOT) == 2 and "Who ran?" in first.prompt
    assert (first.answer, second.answer) == (" Ada", " Bob")


def test_a_paraphrase_record_asks_for_the_documents_restated():
    (example,) = stage_one_examples([{"data_type": "paraphrase", "answers": ["B.", "A."],
                                      "docs": ["A. B."]}])
    assert example.prompt == PARAPHRASE_PROMPT.replace("{documents}", MEMORY_SLOT)
    assert example.answer == " B. A."


def test_builtin_facts_train_records_all_become_stage_one_examples():
    records = facts("train")[:20]
    examples = stage_one_examples(records)
    questions = sum(len(r["question"]) for r in records if r["data_type"] == "qa")
    paraphrases = sum(r["data_type"] == "paraphrase" for r in records)
    assert len(examples) == questions + paraphrases


@pytest.mark.parametrize(("record", "message"), [
    ({"question": ["a?", "b?"], "answers": ["x"], "docs": ["d"]}, "2 questions but 1 answers"),
    ({"data_type": "summary", "answers": ["x"], "docs": ["d"]}, "data_type 'summary'"),
    ({"question": ["a?"], "answers": ["x"]}, "'docs' must be"),
    ({"question": ["a?"], "answers": ["x"], "docs": []}, "'docs' is empty"),
    ({"question": ["a?"], "answers": ["x"], "docs": [f"a {MEMORY_SLOT}"]}, "memory-slot"),
])
def test_a_bad_stage_one_record_is_refused_by_number_and_field(record, message):
    good = {"question": ["q?"], "answers": ["a"], "docs": ["d"]}
    with pytest.raises(RecordError, match=f"record 1: .*{message}"):
        stage_one_examples([good, record])


def test_evaluation_records_keep_every_accepted_answer():
    (one, several) = qa_examples([{"question": "q?", "docs": ["d"], "answer": "a"},
                                  {"question": "r?", "docs": ["d", "e"], "answers": ["a", "b"]}])
    assert one.answers == ("a",) and several.answers == ("a", "b")
    assert several.documents == ("d", "e")


def test_instruction_examples_target_the_first_answer_over_every_document():
    records = facts_qa("train")[:3]
    examples = instruction_examples(records)
    assert [e.answer for e in examples] == [" " + r["answer"] for r in records]
    assert all(e.prompt.count(MEMORY_SLOT) == len(e.documents) for e in examples)


def test_stage_two_records_carry_their_positives():
    records = facts_retrieval("train")[:4]
    examples = stage_two_examples(records, top_k=2)
    assert [e.positives for e in examples] == [tuple(r["pos_index"]) for r in records]
    assert stage_two_examples([{**records[0], "pos_index": 1}], 1)[0].positives == (1,)


def test_stage_two_refuses_too_few_candidates_and_positives_outside_them():
    record = {"question": "q?", "docs": ["a", "b"], "answer": "x"}
    with pytest.raises(RecordError, match="record 0: 2 candidate documents, fewer than topK 3"):
        stage_two_examples([record], top_k=3)
    with pytest.raises(RecordError, match="'pos_index' must list indices into 'docs' \\(0 to 1\\)"):
        stage_two_examples([{**record, "pos_index": [2]}], top_k=1)
