"""The resident transformers backend, on a tiny random Llama (2 layers, hidden size 32)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from tests.unit.llm.tiny import tiny_llama

import mendel.llm
from mendel.llm import TextGenerator, cut_at_stop
from mendel.llm.local import LocalCausalLM, load_causal_lm

PROMPTS = ["def add(a, b):", "Question: what is", "x", "The quick brown fox jumps over"]


def test_local_backend_satisfies_protocol(model, tokenizer):
    assert isinstance(LocalCausalLM(model, tokenizer), TextGenerator)


def test_local_generate_batched_equals_one_by_one(model, tokenizer):
    backend = LocalCausalLM(model, tokenizer)

    batched = backend.generate(PROMPTS, max_new_tokens=12)

    assert batched == [backend.generate([prompt], max_new_tokens=12)[0] for prompt in PROMPTS]
    assert all(text for text in batched)


def test_local_generate_is_deterministic(model, tokenizer):
    backend = LocalCausalLM(model, tokenizer)

    assert backend.generate(PROMPTS, 10) == backend.generate(PROMPTS, 10)


def test_local_generate_ignores_checkpoint_sampling_defaults(model, tokenizer):
    plain = LocalCausalLM(model, tokenizer).generate(PROMPTS, 12)
    defaults = model.generation_config
    defaults.do_sample, defaults.temperature, defaults.top_p = True, 0.7, 0.8
    defaults.repetition_penalty, defaults.no_repeat_ngram_size = 1.3, 2

    assert LocalCausalLM(model, tokenizer).generate(PROMPTS, 12) == plain


def test_local_generate_stops_at_end_of_sequence(model, tokenizer):
    # Declare the 4th token greedy decoding emits for PROMPTS[0] the end of sequence:
    # that row must stop before it, while the other rows run on unchanged.
    encoded = tokenizer(PROMPTS[0], return_tensors="pt")
    with torch.inference_mode():
        raw = model.generate(**encoded, max_new_tokens=12, do_sample=False, pad_token_id=0)
    new_tokens = raw[0, encoded["input_ids"].shape[1] :].tolist()
    eos = new_tokens[3]
    before = tokenizer.decode(new_tokens[: new_tokens.index(eos)])
    model.generation_config.eos_token_id = eos
    backend = LocalCausalLM(model, tokenizer)

    outputs = backend.generate(PROMPTS, max_new_tokens=12)

    assert outputs[0] == before
    assert outputs[1:] == [backend.generate([prompt], 12)[0] for prompt in PROMPTS[1:]]


def test_local_generate_cuts_at_stop_string(model, tokenizer):
    backend = LocalCausalLM(model, tokenizer)
    prompt = "The quick brown"
    full = backend.generate([prompt], max_new_tokens=16)[0]
    start = next(
        i
        for i in range(2, len(full) - 1)
        if full[i : i + 2].isascii() and full[i : i + 2].isalnum()
    )
    stop = full[start : start + 2]

    stopped = backend.generate([prompt, "x"], max_new_tokens=16, stop=[stop])

    assert stopped[0] == full[: full.index(stop)]
    assert stop not in stopped[1]


def test_local_generate_rejects_zero_budget(model, tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens"):
        LocalCausalLM(model, tokenizer).generate(PROMPTS, max_new_tokens=0)


def _manual_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    context_ids = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole)))


def test_local_loglikelihood_matches_manual_computation(model, tokenizer):
    pairs = [("Question: what is 2 + 3? Answer:", " 5"), ("The quick", " brown fox"), ("x", "yz")]
    backend = LocalCausalLM(model, tokenizer)

    scores = backend.loglikelihood(pairs)

    expected = [_manual_loglikelihood(model, tokenizer, c, x) for c, x in pairs]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert all(score < 0 for score in scores)


def test_local_loglikelihood_moves_trailing_space_into_continuation(model, tokenizer):
    backend = LocalCausalLM(model, tokenizer)

    assert backend.loglikelihood([("Answer: ", "5")]) == pytest.approx(
        backend.loglikelihood([("Answer:", " 5")]), abs=1e-5
    )


def test_local_loglikelihood_of_empty_context_uses_a_start_token(model, tokenizer):
    [score] = LocalCausalLM(model, tokenizer).loglikelihood([("", "abc")])

    assert score < 0


def test_local_loglikelihood_rejects_empty_continuation(model, tokenizer):
    with pytest.raises(ValueError, match="empty"):
        LocalCausalLM(model, tokenizer).loglikelihood([("abc", "")])


def test_local_backend_keeps_parameters_in_place(model, tokenizer):
    before = {
        name: (id(p), p.data_ptr(), p.detach().clone()) for name, p in model.named_parameters()
    }
    backend = LocalCausalLM(model, tokenizer)

    backend.generate(PROMPTS, 8)
    backend.loglikelihood([("a", " b"), ("The quick", " brown")])

    after = dict(model.named_parameters())
    assert backend.model is model
    assert after.keys() == before.keys()
    for name, (identity, pointer, value) in before.items():
        assert (id(after[name]), after[name].data_ptr()) == (identity, pointer)
        assert torch.equal(after[name], value)


def test_local_backend_sees_weights_swapped_in_place(model, tokenizer):
    other = tiny_llama(len(tokenizer), seed=1)
    backend = LocalCausalLM(model, tokenizer)
    first = backend.generate(PROMPTS, 8)

    with torch.no_grad():
        for mine, theirs in zip(model.parameters(), other.parameters(), strict=True):
            mine.copy_(theirs)

    swapped = backend.generate(PROMPTS, 8)
    assert swapped != first
    assert swapped == LocalCausalLM(other, tokenizer).generate(PROMPTS, 8)


def test_load_causal_lm_reads_a_local_directory(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    loaded = load_causal_lm(tmp_path, dtype="float32", device="cpu")

    assert loaded.model.dtype == torch.float32
    assert loaded.generate(PROMPTS, 8) == LocalCausalLM(model, tokenizer).generate(PROMPTS, 8)


@pytest.mark.parametrize(
    ("path", "dtype", "message"),
    [
        pytest.param("missing", "float32", "does not exist", id="missing-directory"),
        pytest.param(".", "float8", "unknown dtype", id="unknown-dtype"),
    ],
)
def test_load_causal_lm_rejects_bad_input(tmp_path, path, dtype, message):
    with pytest.raises(ValueError, match=message):
        load_causal_lm(tmp_path / path, dtype=dtype, device="cpu")


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        pytest.param("abc\ndef x", ["\ndef "], "abc", id="cut"),
        pytest.param("a#b!c", ["!", "#"], "a", id="earliest-wins"),
        pytest.param("abc", [], "abc", id="no-stop"),
        pytest.param("abc", [""], "abc", id="empty-stop-ignored"),
    ],
)
def test_cut_at_stop(text, stop, expected):
    assert cut_at_stop(text, stop) == expected


def test_llm_exports():
    assert mendel.llm.__all__ == sorted(mendel.llm.__all__)
    assert mendel.llm.LocalCausalLM is LocalCausalLM


def test_llm_and_evaluators_import_without_torch():
    code = (
        "import sys; import mendel.llm, mendel.evaluators; "
        "heavy = {'torch', 'transformers'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="operator")


def test_static_cache_serves_children_swapped_in_place_without_recompiling(model, tokenizer):
    # CycleQD writes every child into the resident model's parameters in place. With the
    # static cache, the decoding step must be compiled once and still see
    # each new child's weights: same text as the dynamic cache, one graph for three children.
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    compile_config = CompileConfig(backend="eager", mode="default")
    compile_config._compile_all_devices = True  # compile on the CPU as a GPU would
    static = LocalCausalLM(model, tokenizer, static_cache=True, compile_config=compile_config)
    dynamic = LocalCausalLM(model, tokenizer)
    torch._dynamo.reset()
    counters.clear()
    generator = torch.Generator().manual_seed(0)
    outputs = []
    for _child in range(3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        outputs.append(static.generate(PROMPTS, max_new_tokens=8))

        assert outputs[-1] == dynamic.generate(PROMPTS, max_new_tokens=8)
        assert counters["stats"]["unique_graphs"] == 1
    assert outputs[0] != outputs[2]  # the children really differ
