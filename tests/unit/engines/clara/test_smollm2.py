"""The model core on a real checkpoint: SmolLM2-135M-Instruct (llama architecture, tied
embeddings, 30 layers), prepared once by hack/smollm2.py. One stage-I step, then a save that
plain PEFT loads."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from mendel.engines.clara import (
    COMPRESSOR,
    GENERATOR,
    MEMORY_SLOT,
    QUERY_REASONER,
    ClaraSettings,
    StageOneExample,
    create_clara,
    save_clara,
)

pytestmark = pytest.mark.slow

SETTINGS = ClaraSettings(compression_rate=8, chunk_size=64, lora_r=4, lora_alpha=8,
                         lora_dropout=0.0)
DOCUMENT = " ".join(f"Item {i} of the Zorvian ledger is a {c} lantern." for i, c in
                    enumerate(["red", "blue", "green", "amber", "violet", "grey", "white"]))


def load(directory):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32,
                                                 local_files_only=True)
    return model, AutoTokenizer.from_pretrained(directory, local_files_only=True)


@pytest.fixture(scope="module")
def stepped(smollm2_hf_dir):
    """A CLaRa model on SmolLM2 after one AdamW step, with its state before the step."""
    torch.set_num_threads(1)
    base, tokenizer = load(smollm2_hf_dir)
    vocabulary = len(tokenizer)
    clara = create_clara(base, tokenizer, SETTINGS)
    matrix = clara.backbone.get_input_embeddings().weight.detach().clone()
    sums = {n: p.double().sum().item() for n, p in clara.peft.named_parameters()
            if "lora_" not in n}
    rows = clara.memory_embeddings.detach().clone()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Background:\n{MEMORY_SLOT}\n\nWhat is item 3?"}],
        tokenize=False, add_generation_prompt=True)
    batch = clara.collator.stage_one_batch([StageOneExample(prompt, (DOCUMENT,),
                                                            "An amber lantern.")])
    optimizer = torch.optim.AdamW(clara.parameter_groups(weight_decay=0.1), lr=1e-3)
    loss = clara(batch, mse_weight=0.1)
    loss.total.backward()
    optimizer.step()
    return {"clara": clara, "batch": batch, "loss": loss, "matrix": matrix, "sums": sums,
            "rows": rows, "document_tokens": len(clara.collator.tokenize(DOCUMENT)),
            "vocabulary": vocabulary}


def test_smollm2_stage_one_step_trains_adapters_and_memory_rows_only(stepped):
    clara, batch, loss = stepped["clara"], stepped["batch"], stepped["loss"]
    tokens = stepped["document_tokens"]
    assert tokens > SETTINGS.chunk_size  # the document needs more than one chunk
    assert batch.chunks_per_document == (-(-tokens // SETTINGS.chunk_size),)
    assert int(batch.encoder.document_mask.sum()) == tokens  # nothing truncated
    assert batch.encoder.input_ids.shape[1] == SETTINGS.chunk_size + SETTINGS.memory_tokens
    assert torch.isfinite(loss.total) and loss.mse.item() > 0
    assert torch.equal(clara.backbone.get_input_embeddings().weight, stepped["matrix"])
    after = {n: p.double().sum().item() for n, p in clara.peft.named_parameters()
             if "lora_" not in n}
    assert after == stepped["sums"]
    assert (clara.memory_embeddings != stepped["rows"]).any(dim=1).all()
    for adapter in (COMPRESSOR, GENERATOR):
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
                   for p in clara.adapter_parameters(adapter)), adapter
    assert all(p.grad is None for p in clara.adapter_parameters(QUERY_REASONER))


def test_smollm2_adapters_load_with_plain_peft(stepped, smollm2_hf_dir, tmp_path):
    clara = stepped["clara"]
    save_clara(clara, tmp_path)
    text = clara.tokenizer("The Zorvian ledger.", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([text])
    with torch.no_grad():
        clara.use_adapter(COMPRESSOR)
        expected = clara.peft(input_ids=ids).logits[..., :stepped["vocabulary"]]
        fresh, _ = load(smollm2_hf_dir)
        loaded = PeftModel.from_pretrained(fresh, str(tmp_path / COMPRESSOR))
        got = loaded(input_ids=ids).logits
        with loaded.disable_adapter():
            untouched = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(untouched, got, atol=1e-4)  # the adapter did change something
